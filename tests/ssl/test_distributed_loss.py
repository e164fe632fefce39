"""Under DDP the SimCLR loss gathers negatives from every rank: the mean loss of 2 processes on
B images each equals the single-process loss on the same 2B images."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workbench.ssl import SimCLR

B = 4


def _model() -> SimCLR:
    torch.manual_seed(0)
    model = SimCLR(in_channels=1, backbone="resnet18", temperature=0.2)
    # Batch-norm in eval mode: each image's embedding no longer depends on which rank holds it,
    # so the only cross-image coupling left is the loss's own (the negatives).
    return model.eval()


def _views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(2 * B, 1, 16, 16, generator=g) for _ in range(2)]


def _rank(rank: int, rendezvous: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    torch.set_num_threads(1)
    views = [v[rank * B : (rank + 1) * B] for v in _views()]
    with torch.no_grad():
        out[rank] = float(_model().ssl_loss(views))
    dist.destroy_process_group()


def test_two_rank_loss_equals_single_process_loss_on_the_union(tmp_path):
    with torch.no_grad():
        single = float(_model().ssl_loss(_views()))
    manager = mp.Manager()
    out = manager.dict()
    # a file rendezvous: no port to race another process for
    mp.spawn(_rank, args=(f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    assert abs((out[0] + out[1]) / 2 - single) < 1e-5
    # and the gathering matters: one rank alone sees fewer negatives and a different loss
    with torch.no_grad():
        alone = float(_model().ssl_loss([v[:B] for v in _views()]))
    assert abs(alone - out[0]) > 1e-3
