"""FreeMatch (Wang et al. 2023): FixMatch with self-adaptive thresholds. A global threshold
follows the EMA of the model's mean confidence on unlabeled data (starting at 1/C, so early
training already learns from pseudo-labels), scaled per class by the EMA of the mean predicted
class distribution. Without the paper's self-adaptive fairness term."""

from __future__ import annotations

import torch

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


class FreeMatch(FixMatch):
    def __init__(self, ema_momentum: float = 0.999, unlabeled_weight: float = 1.0, rampup_epochs: float = 0.0, **task) -> None:
        super().__init__(unlabeled_weight=unlabeled_weight, rampup_epochs=rampup_epochs, **task)
        self.save_hyperparameters()
        c = self.hparams.num_classes
        self.register_buffer("global_conf", torch.tensor(1.0 / c))
        self.register_buffer("class_probs", torch.full((c,), 1.0 / c))

    def unlabeled_loss(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.weak_probabilities(logits_weak)
        global_conf, class_probs = update_thresholds(self.across_ranks(probs), self.global_conf, self.class_probs, self.hparams.ema_momentum)
        self.global_conf.copy_(global_conf)
        self.class_probs.copy_(class_probs)
        mask, pseudo = freematch_mask(probs, global_conf, class_probs)
        self.log("train/global_threshold", global_conf, on_step=False, on_epoch=True, batch_size=len(probs))
        return pseudo_label_loss(logits_strong, pseudo, mask), mask
