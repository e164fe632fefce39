"""FreeMatch (Wang et al. 2023): FixMatch with self-adaptive thresholds. A global threshold
follows the EMA of the model's mean confidence on unlabeled data (starting at 1/C, so early
training already learns from pseudo-labels), scaled per class by the EMA of the mean predicted
class distribution. The paper's self-adaptive fairness term (`fairness_weight`, USB's 0.01 by
default) keeps the kept strong-view predictions diverse across classes."""

from __future__ import annotations

import torch

from workbench.evaluation.classification_metrics import class_shares
from workbench.semi.fixmatch import FixMatch, pseudo_label_loss


def update_thresholds(
    probs: torch.Tensor, global_conf: torch.Tensor, class_probs: torch.Tensor, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The EMAs after one batch of weak-view probabilities: (global confidence, class distribution)."""
    global_conf = momentum * global_conf + (1 - momentum) * probs.max(dim=1).values.mean()
    class_probs = momentum * class_probs + (1 - momentum) * probs.mean(dim=0)
    return global_conf, class_probs


def freematch_mask(probs: torch.Tensor, global_conf: torch.Tensor, class_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, pseudo-labels): an item passes when its confidence reaches its class's threshold
    global_conf * class_probs[c] / max(class_probs)."""
    confidence, pseudo = probs.max(dim=1)
    thresholds = global_conf * class_probs / class_probs.max()
    return (confidence >= thresholds[pseudo]).float(), pseudo


def sum_normalised_ratio(probs: torch.Tensor, histogram: torch.Tensor) -> torch.Tensor:
    """probs / histogram, renormalised to sum 1; classes absent from the histogram get 0."""
    scaled = probs * torch.nan_to_num(1.0 / histogram, posinf=0.0)
    return scaled / scaled.sum()


def fairness_loss(logits_strong: torch.Tensor, mask: torch.Tensor, class_probs: torch.Tensor, label_hist: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness term (eq. 11), to be minimised: minus the cross-entropy
    between the running class distribution and the mean strong-view prediction of the kept items,
    each divided by its histogram of hard labels and renormalised. The sign is the paper's and
    USB's: the term maximises an entropy of the mean prediction, with the running distribution in
    place of the batch's own for stability (microsoft/Semi-supervised-learning#182). 0 when no item
    is kept."""
    kept = logits_strong[mask.bool()].float()
    if len(kept) == 0:
        return logits_strong.sum() * 0.0
    probs = kept.softmax(dim=1)
    batch_hist = class_shares(probs.argmax(dim=1), probs.shape[1])
    target = sum_normalised_ratio(class_probs, label_hist)
    return (target * torch.log(sum_normalised_ratio(probs.mean(dim=0), batch_hist) + 1e-12)).sum()


class FreeMatch(FixMatch):
    def __init__(
        self, ema_momentum: float = 0.999, fairness_weight: float = 0.01, unlabeled_weight: float = 1.0, rampup_epochs: float = 0.0,
        **task
    ) -> None:
        super().__init__(unlabeled_weight=unlabeled_weight, rampup_epochs=rampup_epochs, **task)
        self.save_hyperparameters()
        c = self.hparams.num_classes
        self.register_buffer("global_conf", torch.tensor(1.0 / c))
        self.register_buffer("class_probs", torch.full((c,), 1.0 / c))
        self.register_buffer("label_hist", torch.full((c,), 1.0 / c))  # EMA of the weak views' hard-label histogram

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints from before the fairness term have no label histogram: start it afresh.
        checkpoint["state_dict"].setdefault("label_hist", self.label_hist.clone())

    def unlabeled_loss(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.weak_probabilities(logits_weak)
        everyone, m = self.across_ranks(probs), self.hparams.ema_momentum
        global_conf, class_probs = update_thresholds(everyone, self.global_conf, self.class_probs, m)
        self.global_conf.copy_(global_conf)
        self.class_probs.copy_(class_probs)
        self.label_hist.mul_(m).add_((1 - m) * class_shares(everyone.argmax(dim=1), everyone.shape[1]))
        mask, pseudo = freematch_mask(probs, global_conf, class_probs)
        fairness = fairness_loss(logits_strong, mask, class_probs, self.label_hist)
        self.log("train/global_threshold", global_conf, on_step=False, on_epoch=True, batch_size=len(probs))
        self.log("train/fairness_loss", fairness.detach(), on_step=False, on_epoch=True, batch_size=len(probs))
        # Scaled with the unlabeled loss: the paper's total whenever unlabeled_weight is 1 and there is no ramp-up.
        return pseudo_label_loss(logits_strong, pseudo, mask) + self.hparams.fairness_weight * fairness, mask
