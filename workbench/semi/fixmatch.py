"""FixMatch (Sohn et al. 2020): pseudo-labels from a weakly augmented unlabeled image train the
prediction on a strongly augmented one, where the pseudo-label is confident enough. With
`ema_decay` set, validation, test, the prior threshold and the exported backbone use an EMA of
the weights instead of the weights themselves (as USB evaluates its EMA model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError
from workbench.semi.base import EMATeacher, SemiSupervised, ema_decay
from workbench.tasks.classification import ClassificationTask


def pseudo_label_loss(logits_strong: torch.Tensor, pseudo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the strong view against the pseudo-labels, averaged over the whole
    unlabeled batch (masked items count as zero, as in FixMatch)."""
    return (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()


def fixmatch_unlabeled_loss(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mask): mask is 1 where the weak view's top class probability reaches `threshold`."""
    probs = torch.softmax(logits_weak.detach().float() / temperature, dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = (confidence >= threshold).float()
    return pseudo_label_loss(logits_strong, pseudo, mask), mask


class FixMatch(SemiSupervised, ClassificationTask):
    """Unlabeled batches carry views [weak, strong] (data.unlabeled_views: weak_strong)."""

    def __init__(
        self, confidence_threshold: float = 0.95, unlabeled_weight: float = 1.0, rampup_epochs: float = 0.0,
        ema_decay: float | None = None, **task
    ) -> None:
        super().__init__(**task)
        self.save_hyperparameters()
        if ema_decay is not None:
            if not 0.0 < ema_decay < 1.0:
                raise WorkbenchError(f"task.ema_decay={ema_decay}: expected a decay in (0, 1), or null to evaluate the trained weights")
            self.teacher = EMATeacher(self.network())

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

    def unlabeled_loss(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fixmatch_unlabeled_loss(logits_weak, logits_strong, self.hparams.confidence_threshold)
