"""What the semi-supervised methods share: the labeled + unlabeled training step and a ramped
weight for the unlabeled loss (the EMA teacher lives in `workbench.models.ema`, shared with the
generators).

A method is a downstream task (classification or segmentation, so validation, test, metrics and
checkpoints are the task's own) mixed with `SemiSupervised`, and implements `semi_losses`.
"""

from __future__ import annotations

import math

import torch

from workbench.errors import WorkbenchError


def sigmoid_rampup(progress: float) -> float:
    """exp(-5 (1 - t)^2) for t in [0, 1] (Laine & Aila; Mean Teacher's consistency ramp-up)."""
    t = min(max(progress, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class SemiSupervised:
    """Mixin before a task class: `class FixMatch(SemiSupervised, ClassificationTask)`. Needs
    `unlabeled_weight` and `rampup_epochs` in the hyperparameters."""

    def semi_losses(self, labeled: dict, unlabeled: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(supervised loss, unlabeled loss, extra values to log)."""
        raise NotImplementedError

    def rampup(self) -> float:
        """0 -> 1 over `rampup_epochs` (sigmoid-shaped), 1 when there is no ramp-up."""
        epochs = self.hparams.rampup_epochs
        if not epochs:
            return 1.0
        steps_per_epoch = self.trainer.num_training_batches  # after limit_train_batches; right under max_steps too
        if not math.isfinite(steps_per_epoch):
            raise WorkbenchError("rampup_epochs needs a training loader of known length; set it to 0")
        return sigmoid_rampup(self.global_step / max(1.0, epochs * steps_per_epoch))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if not isinstance(batch, dict) or "unlabeled" not in batch:
            raise WorkbenchError(
                f"task {type(self).__name__} needs labeled and unlabeled batches: set data.unlabeled_ratio"
            )
        supervised, unsupervised, extra = self.semi_losses(batch["labeled"], batch["unlabeled"])
        weight = self.hparams.unlabeled_weight * self.rampup()
        loss = supervised + weight * unsupervised
        size = len(batch["labeled"]["image"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        values = {"sup_loss": supervised, "unsup_loss": unsupervised, "unsup_weight": weight, **extra}
        for name, value in values.items():
            self.log(f"train/{name}", float(value) if not torch.is_tensor(value) else value.detach(), on_step=False, on_epoch=True, batch_size=size)
        return loss
