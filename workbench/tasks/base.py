"""What the downstream tasks share: val/test hooks routed to one eval step, and the optimizer."""

from __future__ import annotations

import pytorch_lightning as pl

from workbench.models.optim import configure_warmup_cosine


class EvaluatedTask(pl.LightningModule):
    """Subclasses implement `_eval_step(batch, stage)` and `_eval_epoch_end(stage)` and keep
    `lr`, `weight_decay` and `warmup_epochs` in their hyperparameters."""

    # True where validation and test score `evaluated_network()`'s class probabilities, so that
    # `workbench evaluate` can put an ensemble of checkpoints (`self.ensemble`) in its place.
    scores_ensembles = False

    def _eval_step(self, batch: dict, stage: str) -> None:
        raise NotImplementedError

    def _eval_epoch_end(self, stage: str) -> None:
        raise NotImplementedError

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> dict:
        return configure_warmup_cosine(self, "adamw")
