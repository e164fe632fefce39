"""A Decathlon-style JSON datalist of image/label pairs (NIfTI, DICOM series folders, PNG).

The format of MONAI's `load_decathlon_datalist`, parsed here so that every path is checked:
paths are relative to `base_dir` (default: the JSON's folder), must exist and may not escape it. Keys "training", "validation" and "test" become train/val/test;
where "validation" or "test" are absent they are split off "training" per patient.
For `task="classification"` the "label" of each item is an integer class, else a mask path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workbench.data.files import existing_file, inside_root, probe_channels
from workbench.data.source import SourceData, class_count
from workbench.data.splits import partition
from workbench.errors import WorkbenchError

KEYS = {"train": "training", "val": "validation", "test": "test"}


class DatalistSource:
    def __init__(
        self,
        path: str,
        base_dir: str | None = None,
        task: str = "segmentation",
        spatial_dims: int = 3,
        num_classes: int | None = None,
        val_split: float = 0.2,
        test_split: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        self.path = path
        self.base_dir = base_dir
        self.task = task
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.val_split = val_split
        self.test_split = test_split
        self.split_seed = split_seed

    def _declared_classes(self, content: dict, path: Path) -> int | None:
        """`num_classes` as given, else the count of the datalist's own `labels` (Decathlon's
        {"0": "background", ...}); both given must agree."""
        names = content.get("labels")
        listed = len(names) if isinstance(names, (dict, list)) and names else None
        if self.num_classes is not None and listed is not None and listed != self.num_classes:
            raise WorkbenchError(f"{path}: its 'labels' declare {listed} classes, but data.source.num_classes={self.num_classes}")
        return self.num_classes if self.num_classes is not None else listed

    def _items(self, path: Path) -> tuple[dict[str, list], int | None]:
        """Each split's items, and the class count the datalist declares (or None)."""
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WorkbenchError(f"{path}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
        if not isinstance(content, dict) or not isinstance(content.get("training"), list):
            raise WorkbenchError(f"{path}: expected a JSON object with a 'training' list of image/label items")
        return {split: content.get(key) or [] for split, key in KEYS.items()}, self._declared_classes(content, path)

    def _record(self, item: object, root: Path, where: str) -> dict:
        if not isinstance(item, dict) or "image" not in item:
            raise WorkbenchError(f"{where}: expected an object with an 'image' path")
        record = {"image": str(inside_root(item["image"], root, where))}
        record["id"] = record["image"]
        if "label" in item:
            if self.task == "classification":
                if not isinstance(item["label"], int):
                    raise WorkbenchError(f"{where}: label {item['label']!r} is not an integer class")
                record["label"] = item["label"]
            else:
                record["label"] = str(inside_root(item["label"], root, where))
        elif self.task != "unlabeled":
            raise WorkbenchError(f"{where}: no 'label' (a {self.task} datalist needs one per item)")
        if "patient" in item:
            record["patient"] = str(item["patient"])
        return record

    def load(self) -> SourceData:
        path = existing_file(self.path, "datalist")
        root = Path(self.base_dir).expanduser() if self.base_dir else path.parent
        items, declared = self._items(path)
        splits = {
            split: [self._record(it, root, f"{path} [{KEYS[split]}][{i}]") for i, it in enumerate(entries)]
            for split, entries in items.items()
        }
        if self.task == "classification":
            num_classes = class_count(np.array([r["label"] for rs in splits.values() for r in rs]), declared, str(path))
        else:  # mask values are checked against it as each mask is read
            num_classes = declared or 2
        if not splits["val"] or not splits["test"]:
            val_fraction = 0.0 if splits["val"] else self.val_split
            test_fraction = 0.0 if splits["test"] else self.test_split
            parts = partition(splits["train"], val_fraction, test_fraction, self.split_seed)
            for name in ("val", "test"):
                splits[name] = splits[name] or [splits["train"][i] for i in parts[name]]
            splits["train"] = [splits["train"][i] for i in parts["train"]]
        return SourceData(
            splits=splits,
            task=self.task,
            spatial_dims=self.spatial_dims,
            in_channels=probe_channels(splits["train"][0]["image"]),
            num_classes=num_classes,
            description=str(path),
        )
