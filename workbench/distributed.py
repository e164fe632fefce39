"""What DDP leaves to us at evaluation time."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def take_rank_zero_buffers(module: nn.Module) -> None:
    """Under DDP without SyncBatchNorm (on CPU, where torch has none), each rank's last training
    step updated its batch-norm statistics with its own batch; DDP hands out rank 0's only before
    the next training step. Evaluated as they are, the ranks would score their shares of a split
    with slightly different models. Called before evaluating, every rank takes rank 0's buffers,
    so the metrics are those of rank 0's model, the one that is checkpointed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)
