"""What the downstream tasks share: val/test hooks routed to one eval step, and the optimizer."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from workbench.tasks.optim import configure_warmup_cosine


class EvaluatedTask(pl.LightningModule):
    """Subclasses implement `_eval_step(batch, stage)` and `_eval_epoch_end(stage)` and keep
    `lr`, `weight_decay` and `warmup_epochs` in their hyperparameters."""

    def _eval_step(self, batch: dict, stage: str) -> None:
        raise NotImplementedError

    def _eval_epoch_end(self, stage: str) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def take_rank_zero_buffers(self) -> None:
        """Under DDP without SyncBatchNorm (on CPU, where torch has none), each rank's last
        training step updated its batch-norm statistics with its own batch; DDP hands out rank 0's
        only before the next training step. Evaluated as they are, the ranks would score their
        shares of a split with slightly different models. Every rank takes rank 0's buffers, so
        the metrics are those of rank 0's model, the one that is checkpointed."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            for buffer in self.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_start(self) -> None:
        self.take_rank_zero_buffers()

    def on_test_epoch_start(self) -> None:
        self.take_rank_zero_buffers()

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
