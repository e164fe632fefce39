"""The subset planner: a loaded source and a label budget in, the record subsets every stage
draws from out. Pure: no loaders, no files; the datamodule builds loaders over the plan and
records it in split.json.

- `labeled`: the training records inside the label budget (`label_fraction` or `k_shot`),
  stratified and seeded, per patient where patient ids exist.
- `unlabeled`: the rest of the training records with their labels removed, plus an optional
  separate archive; `unlabeled_train` is that rest alone, drawn from the same distribution as
  the labeled subset (a classifier's prior-matched threshold is fitted on it).
- `val`: the official val split, subsampled at `val_fraction`, so model selection spends no
  labels beyond the budget.
- `test`: the official test split, whole, from real data only.
- `pretrain`: every training image with its label removed, plus the archive.
- `synthetic`: the records of an exported synthetic set, when one is given.

Cross-validation inside the budget (`folds` = K, `fold` = k): the labeled and val subsets
together are the budget's pool of labeled images; the pool is split into K folds, stratified and
per patient, and fold k is the val subset (held out) while the other K - 1 folds are the labeled
subset. The test split is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.data.source import SourceData
from workbench.data.splits import class_counts, cv_folds, fraction_subset, k_shot_subset
from workbench.data.transforms import strip_label
from workbench.errors import WorkbenchError

Records = list[dict[str, Any]]


@dataclass(frozen=True)
class LabelBudget:
    """How many labels a run may see: a fraction of the training split, or `k_shot` per class
    (drawn balanced); validation at `val_fraction` of the val split; with `folds`, fold `fold`
    of the pool held out for validation."""

    label_fraction: float = 1.0
    k_shot: int | None = None
    val_fraction: float = 1.0
    split_seed: int = 0
    folds: int | None = None
    fold: int | None = None


def plan_subsets(data: SourceData, budget: LabelBudget, archive: SourceData | None = None, synthetic: SourceData | None = None) -> dict[str, Records]:
    """The subsets of `data` under `budget`; an unlabeled `archive` joins the unlabeled and
    pretrain subsets, a `synthetic` set becomes the synthetic subset."""
    train = data.splits["train"]
    if data.task == "unlabeled":
        labeled_idx: list[int] = []
    elif budget.k_shot:
        labeled_idx = k_shot_subset(train, budget.k_shot, budget.split_seed)
    else:
        labeled_idx = fraction_subset(train, budget.label_fraction, budget.split_seed)
    chosen = set(labeled_idx)
    val = data.splits.get("val") or []
    if val and budget.val_fraction < 1.0:
        val = [val[i] for i in fraction_subset(val, budget.val_fraction, budget.split_seed)]
    unlabeled_train = [strip_label(r) for i, r in enumerate(train) if i not in chosen]
    extra = [strip_label(r) for r in archive.splits["train"]] if archive is not None else []
    labeled, pool = [train[i] for i in labeled_idx], [train[i] for i in labeled_idx] + val
    if budget.folds is not None:
        fold_of = cv_folds(pool, budget.folds, budget.split_seed)
        if budget.fold is None or not 0 <= budget.fold <= max(fold_of):
            raise WorkbenchError(f"data.fold={budget.fold}: expected a fold in 0..{max(fold_of)} of the {max(fold_of) + 1} folds")
        labeled = [r for r, f in zip(pool, fold_of) if f != budget.fold]
        val = [r for r, f in zip(pool, fold_of) if f == budget.fold]
    return {
        "labeled": labeled,
        "unlabeled": unlabeled_train + extra,
        "unlabeled_train": unlabeled_train,
        "val": val,
        "test": data.splits.get("test") or [],
        "pretrain": [strip_label(r) for r in train] + extra,
        "synthetic": synthetic.splits["train"] if synthetic is not None else [],
        "pool": pool,
    }


def fold_ids(pool: Records, budget: LabelBudget) -> list[list[str]]:
    """The ids of each cross-validation fold of the pool."""
    fold_of = cv_folds(pool, budget.folds, budget.split_seed)
    return [[r["id"] for r, f in zip(pool, fold_of) if f == k] for k in range(max(fold_of) + 1)]


def class_prior(labeled: Records, num_classes: int) -> list[float]:
    """Each class's share of the labeled records."""
    counts = class_counts(labeled)
    total = max(1, sum(counts.values()))
    return [counts.get(str(c), 0) / total for c in range(num_classes)]
