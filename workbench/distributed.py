"""What DDP leaves to us when a module is called outside its wrapper."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def take_rank_zero_buffers(module: nn.Module) -> None:
    """Under DDP without SyncBatchNorm (on CPU, where torch has none), each rank's last training
    step updated its batch-norm statistics with its own batch. DDP hands out rank 0's at the next
    forward through its wrapper (a training or validation step); a module called directly before
    that, as for the prototypes computed when validation starts, would embed with each rank's
    own statistics. Called first, every rank takes rank 0's buffers: those of the model that is
    checkpointed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)
