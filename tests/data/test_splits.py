"""Splits are seeded, stratified, per patient, and deterministic."""

from __future__ import annotations

from collections import Counter

import pytest

from workbench.data.splits import fraction_subset, k_shot_subset, partition
from workbench.errors import WorkbenchError


def records(n0: int, n1: int, patients: bool = False) -> list[dict]:
    out = [{"label": 0, "id": f"a{i}"} for i in range(n0)] + [{"label": 1, "id": f"b{i}"} for i in range(n1)]
    if patients:
        for i, r in enumerate(out):
            r["patient"] = f"{r['label']}-{i // 3}"  # three images per patient, one class each
    return out


def test_one_percent_of_pneumoniamnist_sized_train_is_47_stratified():
    recs = records(1214, 3494)
    idx = fraction_subset(recs, 0.01, seed=0)
    assert Counter(recs[i]["label"] for i in idx) == {0: 12, 1: 35}
    assert idx == fraction_subset(recs, 0.01, seed=0)  # deterministic
    assert idx != fraction_subset(recs, 0.01, seed=1)  # seed matters


def test_every_class_keeps_at_least_one_example():
    recs = records(3, 200)
    idx = fraction_subset(recs, 0.01, seed=0)
    assert Counter(recs[i]["label"] for i in idx) == {0: 1, 1: 2}


def test_patients_are_never_split():
    recs = records(30, 60, patients=True)
    idx = set(fraction_subset(recs, 0.2, seed=0))
    for patient in {r["patient"] for r in recs}:
        members = {i for i, r in enumerate(recs) if r["patient"] == patient}
        assert members <= idx or not (members & idx)
    parts = partition(recs, 0.2, 0.2, seed=0)
    owner = {}
    for name, part in parts.items():
        for i in part:
            assert owner.setdefault(recs[i]["patient"], name) == name


def test_partition_is_stratified_and_complete():
    recs = records(50, 150)
    parts = partition(recs, 0.1, 0.2, seed=0)
    assert sorted(sum(parts.values(), [])) == list(range(200))
    assert Counter(recs[i]["label"] for i in parts["test"]) == {0: 10, 1: 30}
    assert Counter(recs[i]["label"] for i in parts["val"]) == {0: 5, 1: 15}


def test_k_shot_takes_k_per_class():
    recs = records(10, 10)
    idx = k_shot_subset(recs, 3, seed=5)
    assert Counter(recs[i]["label"] for i in idx) == {0: 3, 1: 3}
    with pytest.raises(WorkbenchError, match="class 0 has only 10"):
        k_shot_subset(recs, 11, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(WorkbenchError, match="label fraction"):
        fraction_subset(records(5, 5), fraction, seed=0)
