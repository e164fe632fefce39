"""Seeded, stratified, per-patient subsets: label fraction, k-shot, and train/val/test partitions.

Selection works on units: a patient where records carry a "patient" id (so no patient is split
between labeled and unlabeled, or between train and test), else a single record. A unit's
stratum is its majority class; segmentation records (no class label) form a single stratum.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError


def _units(records: Sequence[dict[str, Any]]) -> tuple[list[list[int]], list[Any]]:
    """Indices grouped into units (patients or single records) and each unit's stratum."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.get("patient", f"__record_{i}")].append(i)
    units = list(groups.values())
    strata = []
    for idx in units:
        labels = [records[i].get("label") for i in idx]
        if all(isinstance(y, (int, np.integer)) for y in labels):
            strata.append(Counter(int(y) for y in labels).most_common(1)[0][0])
        else:
            strata.append(None)
    return units, strata


def _by_stratum(strata: Sequence[Any]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = defaultdict(list)
    for u, s in enumerate(strata):
        out[s].append(u)
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


def fraction_subset(records: Sequence[dict[str, Any]], fraction: float, seed: int) -> list[int]:
    """Indices of a stratified subset holding `fraction` of each class (at least one unit each)."""
    if not 0.0 < fraction <= 1.0:
        raise WorkbenchError(f"label fraction {fraction}: expected a number in (0, 1]")
    units, strata = _units(records)
    if fraction == 1.0:
        return list(range(len(records)))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for members in _by_stratum(strata).values():
        n = min(len(members), max(1, int(round(fraction * len(members)))))
        for u in rng.permutation(members)[:n]:
            chosen.extend(units[u])
    return sorted(chosen)


def k_shot_subset(records: Sequence[dict[str, Any]], k: int, seed: int) -> list[int]:
    """Indices of k units per class (k patients per class where patients are known)."""
    if k < 1:
        raise WorkbenchError(f"k_shot={k}: expected a positive number of examples per class")
    units, strata = _units(records)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for stratum, members in _by_stratum(strata).items():
        if len(members) < k:
            raise WorkbenchError(f"k_shot={k}: class {stratum} has only {len(members)} examples")
        for u in rng.permutation(members)[:k]:
            chosen.extend(units[u])
    return sorted(chosen)


def cv_folds(records: Sequence[dict[str, Any]], folds: int, seed: int) -> list[int]:
    """Each record's cross-validation fold (0..K-1), stratified and per patient, seeded. K is
    `folds`, or fewer where a class has fewer units (each class appears in every fold)."""
    if folds < 2:
        raise WorkbenchError(f"data.folds={folds}: expected 2 or more cross-validation folds")
    units, strata = _units(records)
    by_stratum = _by_stratum(strata)
    k = min(folds, *(len(members) for members in by_stratum.values()))
    if k < 2:
        smallest = min(by_stratum, key=lambda s: len(by_stratum[s]))
        raise WorkbenchError(f"data.folds={folds}: class {smallest} has {len(by_stratum[smallest])} labeled unit(s) in the label budget; "
                             "cross-validation needs 2 or more per class (raise data.label_fraction or use selection=val)")
    rng = np.random.default_rng(seed)
    fold_of = [0] * len(records)
    offset = 0  # each stratum continues where the last one stopped, so the folds stay level in size
    for members in by_stratum.values():
        for position, u in enumerate(rng.permutation(members)):
            for i in units[u]:
                fold_of[i] = (offset + position) % k
        offset += len(members)
    return fold_of


def partition(
    records: Sequence[dict[str, Any]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Stratified, per-patient train/val/test indices for sources without official splits."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise WorkbenchError(
            f"val_split={val_fraction}, test_split={test_fraction}: expected non-negative fractions summing below 1"
        )
    units, strata = _units(records)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for members in _by_stratum(strata).values():
        order = rng.permutation(members)
        n_test = int(round(test_fraction * len(order)))
        n_val = int(round(val_fraction * len(order)))
        if len(order) - n_test - n_val < 1:
            raise WorkbenchError(f"only {len(order)} examples in a class: too few to split off val and test")
        for name, part in (("test", order[:n_test]), ("val", order[n_test : n_test + n_val]), ("train", order[n_test + n_val :])):
            for u in part:
                out[name].extend(units[u])
    return {k: sorted(v) for k, v in out.items()}


def class_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    labels = [r.get("label") for r in records]
    if not all(isinstance(y, (int, np.integer)) for y in labels):
        return {}
    return {str(k): v for k, v in sorted(Counter(int(y) for y in labels).items())}
