"""Episodes for few-shot learning: each batch holds N classes x K support items, then the same N
classes x Q query items, drawn without overlap (a sampler of index lists over one view's records,
and the dataset that turns such a list into one batch)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from workbench.errors import WorkbenchError


class EpisodeSampler(DistributedSampler):
    """Yields index lists: [class_1 support x K, ..., class_N support x K, class_1 query x Q,
    ..., class_N query x Q]. Classes are drawn per episode when there are more than `n_way`.
    Seeded by (seed, epoch, rank): `set_epoch` gives another draw, and each of `num_replicas`
    DDP ranks draws its own share of the `episodes` (rounded up, so every rank takes as many
    steps). A DistributedSampler in kind, so that Lightning leaves it in place under DDP (it
    would otherwise try to shard it as a plain sampler) and sets its epoch."""

    def __init__(
        self, labels: Sequence[int], n_way: int, k_shot: int, n_query: int, episodes: int, seed: int = 0,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group, and
        # only its epoch and rank attributes are used here.
        members: dict[int, list[int]] = {}
        for i, y in enumerate(labels):
            members.setdefault(int(y), []).append(i)
        self.by_class = {c: np.asarray(idx) for c, idx in sorted(members.items())}
        if n_way < 2 or k_shot < 1 or n_query < 1 or episodes < 1:
            raise WorkbenchError(f"episodes: n_way={n_way} k_shot={k_shot} n_query={n_query} episodes={episodes}: expected n_way >= 2, the rest >= 1")
        eligible = [c for c, idx in self.by_class.items() if len(idx) >= k_shot + n_query]
        if len(eligible) < n_way:
            counts = {c: len(idx) for c, idx in self.by_class.items()}
            raise WorkbenchError(
                f"episodes: {n_way}-way {k_shot}-shot with {n_query} queries needs {n_way} classes with at least "
                f"{k_shot + n_query} items each; the view has {counts}"
            )
        self.classes = eligible
        self.n_way, self.k_shot, self.n_query, self.episodes, self.seed = n_way, k_shot, n_query, episodes, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0

    def __len__(self) -> int:
        return math.ceil(self.episodes / self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        for _ in range(len(self)):
            classes = sorted(rng.choice(self.classes, self.n_way, replace=False))
            draws = [rng.choice(self.by_class[c], self.k_shot + self.n_query, replace=False) for c in classes]
            support = [int(i) for d in draws for i in d[: self.k_shot]]
            query = [int(i) for d in draws for i in d[self.k_shot :]]
            yield support + query


class Episodes(Dataset):
    """Items of `dataset` by index list: `Episodes(dataset)[[3, 1, 4]]` is the list of items 3, 1
    and 4. With an EpisodeSampler as `sampler` and `batch_size=None`, MONAI's DataLoader (whose
    collate merges such a list) yields one episode per step, each loaded whole by one worker."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> list[Any]:
        return [self.dataset[i] for i in indices]
