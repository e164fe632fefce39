"""What every data source returns: records per split plus what the models need to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

TASKS = ("classification", "segmentation", "unlabeled")


@dataclass
class SourceData:
    """Records are MONAI-style dicts: "image" (array, channel first, or a path), "label"
    (int for classification, array or path for a mask), "id" and, where known, "patient".

    `splits` holds "train" and, where the source has them, "val" and "test"."""

    splits: dict[str, list[dict[str, Any]]]
    task: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise WorkbenchError(f"source task '{self.task}': expected one of {TASKS}")
        if self.spatial_dims not in (2, 3):
            raise WorkbenchError(f"spatial_dims={self.spatial_dims}: expected 2 or 3")
        if not self.splits.get("train"):
            raise WorkbenchError(f"{self.description or 'data source'}: no training images found")


def class_count(labels: np.ndarray, declared: int | None, where: str) -> int:
    """The number of classes: `declared` where the source declares it (every label must lie
    below it), else inferred from the labels, whose ids must then be contiguous from 0 (a gap,
    as in {0, 1, 7}, is far likelier a stray label than five empty classes)."""
    labels = np.asarray(labels)
    if declared is not None:
        check_class_labels(labels, declared, where)
        return declared
    check_class_labels(labels, int(labels.max()) + 1 if labels.size else 1, where)  # integers, not negative
    present = sorted({int(y) for y in labels.reshape(-1)})
    missing = sorted(set(range(present[-1] + 1)) - set(present)) if present else []
    if missing:
        raise WorkbenchError(f"{where}: class ids {present} skip {missing}; expected contiguous ids from 0 "
                             "(or declare the classes: data.source.num_classes)")
    return len(present) or 1


def check_class_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Integer class labels must lie in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise WorkbenchError(f"{where}: labels must be integers in [0, {num_classes - 1}]")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise WorkbenchError(
            f"{where}: label {lo if lo < 0 else hi} out of range; expected integers in [0, {num_classes - 1}]"
        )
