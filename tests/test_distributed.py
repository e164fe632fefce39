"""workbench.distributed on 2 real processes (gloo, file rendezvous)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from workbench.distributed import take_rank_zero_buffers


def _rank(rank: int, rendezvous: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[1].running_mean.fill_(float(rank + 1))  # as after each rank's own last training step
        model[1].num_batches_tracked.fill_(10 * (rank + 1))
        model[0].weight.fill_(float(rank))  # parameters are DDP's to keep equal, not this function's
    take_rank_zero_buffers(model)
    out[rank] = (model[1].running_mean.tolist(), int(model[1].num_batches_tracked), float(model[0].weight[0, 0]))
    dist.destroy_process_group()


def test_every_rank_takes_rank_zero_s_batch_norm_statistics(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    assert out[0] == ([1.0, 1.0, 1.0], 10, 0.0)
    assert out[1] == ([1.0, 1.0, 1.0], 10, 1.0)
    take_rank_zero_buffers(nn.BatchNorm1d(3))  # one process, no process group: nothing to do
