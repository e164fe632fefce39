"""Episodes for few-shot learning: each batch holds N classes x K support items, then the same N
classes x Q query items, drawn without overlap (a batch sampler over one view's records)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from workbench.errors import WorkbenchError


class EpisodeSampler(Sampler[list[int]]):
    """Yields `episodes` index lists: [class_1 support x K, ..., class_N support x K,
    class_1 query x Q, ..., class_N query x Q]. Classes are drawn per episode when there are
    more than `n_way`; seeded, and a different draw every epoch."""

    def __init__(self, labels: Sequence[int], n_way: int, k_shot: int, n_query: int, episodes: int, seed: int = 0) -> None:
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
        self.epoch = 0

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.episodes):
            classes = sorted(rng.choice(self.classes, self.n_way, replace=False))
            draws = [rng.choice(self.by_class[c], self.k_shot + self.n_query, replace=False) for c in classes]
            support = [int(i) for d in draws for i in d[: self.k_shot]]
            query = [int(i) for d in draws for i in d[self.k_shot :]]
            yield support + query
