"""FixMatch (Sohn et al. 2020): pseudo-labels from a weakly augmented unlabeled image train the
prediction on a strongly augmented one, where the pseudo-label is confident enough. With
`ema_decay` set, validation, test, the prior threshold and the exported backbone use an EMA of
the weights instead of the weights themselves (as USB evaluates its EMA model). With
`distribution_alignment`, the weak view's probabilities are first aligned to the labeled images'
class prior (ReMixMatch's distribution alignment, against confirmation bias: a model drifting
towards one class would otherwise teach itself that class ever more confidently)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError
from workbench.models.ema import EMATeacher, ema_decay
from workbench.semi.base import SemiSupervised
from workbench.tasks.classification import ClassificationTask


def pseudo_label_loss(logits_strong: torch.Tensor, pseudo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the strong view against the pseudo-labels, averaged over the whole
    unlabeled batch (masked items count as zero, as in FixMatch)."""
    return (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()


def confident_pseudo_label_loss(
    probs_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mask): mask is 1 where the weak view's top class probability reaches `threshold`."""
    confidence, pseudo = probs_weak.max(dim=1)
    mask = (confidence >= threshold).float()
    return pseudo_label_loss(logits_strong, pseudo, mask), mask


def align_distribution(probs: torch.Tensor, target_prior: torch.Tensor, predicted_prior: torch.Tensor) -> torch.Tensor:
    """ReMixMatch's distribution alignment: each row of `probs` scaled by target / predicted
    class share and renormalised, so that predictions averaging `predicted_prior` average
    (about) `target_prior` instead."""
    aligned = probs * (target_prior / predicted_prior.clamp_min(1e-6))
    return aligned / aligned.sum(dim=1, keepdim=True)


class FixMatch(SemiSupervised, ClassificationTask):
    """Unlabeled batches carry views [weak, strong] (data.unlabeled_views: weak_strong)."""

    def __init__(
        self, confidence_threshold: float = 0.95, unlabeled_weight: float = 1.0, rampup_epochs: float = 0.0,
        ema_decay: float | None = None, distribution_alignment: bool = False, alignment_momentum: float = 0.99, **task
    ) -> None:
        super().__init__(**task)
        self.save_hyperparameters()
        if ema_decay is not None:
            if not 0.0 < ema_decay < 1.0:
                raise WorkbenchError(f"task.ema_decay={ema_decay}: expected a decay in (0, 1), or null to evaluate the trained weights")
            self.teacher = EMATeacher(self.network())
        if distribution_alignment:
            if not 0.0 <= alignment_momentum < 1.0:
                raise WorkbenchError(f"task.alignment_momentum={alignment_momentum}: expected a momentum in [0, 1)")
            c = self.hparams.num_classes
            self.register_buffer("labeled_prior", torch.full((c,), 1.0 / c))
            # The EMA of the mean weak-view prediction; zeros until the first batch sets it to the
            # labeled prior (a uniform start would push an imbalanced task's pseudo-labels towards
            # its majority class from the first step).
            self.register_buffer("predicted_prior", torch.zeros(c))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.distribution_alignment:
            prior = self.labeled_class_prior()
            missing = (prior == 0).nonzero().flatten().tolist()
            if missing:
                raise WorkbenchError(
                    f"task.distribution_alignment=true needs every class among the labeled images; classes {missing} have none"
                )
            self.labeled_prior.copy_(prior)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.ema_decay is not None:
            self.teacher.update(self.network(), ema_decay(self.global_step, self.hparams.ema_decay), copy_buffers=True)

    def split_logits(self, labeled: dict, unlabeled: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass over labeled, weak and strong images (shared batch-norm statistics)."""
        weak, strong = unlabeled["views"][:2]
        n, m = len(labeled["image"]), len(weak)
        logits = self(torch.cat([labeled["image"], weak, strong]))
        return logits[:n], logits[n : n + m], logits[n + m :]

    def semi_losses(self, labeled: dict, unlabeled: dict):
        logits_l, logits_w, logits_s = self.split_logits(labeled, unlabeled)
        supervised = F.cross_entropy(logits_l, labeled["label"].long(), label_smoothing=self.hparams.label_smoothing)
        unsupervised, mask = self.unlabeled_loss(logits_w, logits_s)
        return supervised, unsupervised, {"mask_rate": mask.mean()}

    def across_ranks(self, rows: torch.Tensor) -> torch.Tensor:
        """`rows` of every rank's batch, so that running statistics stay equal on every rank."""
        return self.all_gather(rows).reshape(-1, rows.shape[1]) if self.trainer.world_size > 1 else rows

    def weak_probabilities(self, logits_weak: torch.Tensor) -> torch.Tensor:
        """The weak view's class probabilities, aligned to the labeled prior if asked."""
        probs = torch.softmax(logits_weak.detach().float(), dim=1)
        if not self.hparams.distribution_alignment:
            return probs
        if self.predicted_prior.sum() == 0:
            self.predicted_prior.copy_(self.labeled_prior)
        m = self.hparams.alignment_momentum
        self.predicted_prior.mul_(m).add_((1 - m) * self.across_ranks(probs).mean(dim=0))
        self.log("train/predicted_share_class1", self.predicted_prior[1], on_step=False, on_epoch=True, batch_size=len(probs))
        return align_distribution(probs, self.labeled_prior, self.predicted_prior)

    def unlabeled_loss(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return confident_pseudo_label_loss(self.weak_probabilities(logits_weak), logits_strong, self.hparams.confidence_threshold)
