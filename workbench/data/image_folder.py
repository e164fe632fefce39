"""An image folder (PNG/JPEG/TIFF, 8 or 16 bit) with a CSV of labels.

The CSV has an image column (path relative to `root`) and a label column; optional columns give
a patient id (splits then keep patients together) and an official split (train/val/test).
Without a split column, val and test are drawn per patient and stratified by class.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from workbench.data.files import existing_dir, existing_file, inside_root, probe_channels
from workbench.data.source import SourceData, class_count
from workbench.data.splits import partition
from workbench.data.transforms import PICTURE_SUFFIXES
from workbench.errors import WorkbenchError


class ImageFolderSource:
    def __init__(
        self,
        root: str,
        csv_file: str = "labels.csv",
        image_column: str = "image",
        label_column: str = "label",
        patient_column: str | None = "patient_id",
        split_column: str | None = "split",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        val_split: float = 0.15,
        test_split: float = 0.15,
        split_seed: int = 0,
        allow_unlisted: bool = False,
    ) -> None:
        self.root = root
        self.csv_file = csv_file
        self.image_column = image_column
        self.label_column = label_column
        self.patient_column = patient_column
        self.split_column = split_column
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.val_split = val_split
        self.test_split = test_split
        self.split_seed = split_seed
        self.allow_unlisted = allow_unlisted

    def _rows(self, csv_path: Path) -> list[dict[str, str]]:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for needed in (self.image_column, self.label_column):
                if needed not in columns:
                    raise WorkbenchError(f"{csv_path}: no column '{needed}' (found {columns})")
            return list(reader)

    def _class_of(self, label: str, where: str) -> int:
        """A class id, or with `class_names` a name's position in that list."""
        if self.class_names:
            if label not in self.class_names:
                raise WorkbenchError(f"{where}: column '{self.label_column}': '{label}' is not one of the declared class_names {self.class_names}")
            return self.class_names.index(label)
        try:
            return int(label)
        except ValueError:
            raise WorkbenchError(f"{where}: column '{self.label_column}': '{label}' is not an integer class; declare the names "
                                 "in order as data.source.class_names=[...] to map them") from None

    @staticmethod
    def _check_every_image_listed(root: Path, csv_path: Path, listed: set[str]) -> None:
        """An image in the folder without a CSV row is a missing row, not an unlabeled image."""
        images = {str(p.resolve()) for p in root.rglob("*") if p.suffix.lower() in PICTURE_SUFFIXES}
        unlisted = sorted(images - listed)
        if unlisted:
            raise WorkbenchError(
                f"{csv_path}: {len(unlisted)} image(s) under {root} have no row (e.g. {unlisted[0]}); expected one row "
                "per image (set data.source.allow_unlisted=true to ignore them)"
            )

    def load(self) -> SourceData:
        root = existing_dir(self.root, "image folder")
        csv_path = existing_file(root / self.csv_file, "label CSV")
        rows = self._rows(csv_path)
        if not rows:
            raise WorkbenchError(f"{csv_path}: no rows (expected one row per image)")
        records, official = [], []
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            where = f"{csv_path}:{line}"
            image, label = (row.get(self.image_column) or "").strip(), (row.get(self.label_column) or "").strip()
            if not image or not label:
                raise WorkbenchError(f"{where}: empty '{self.image_column}' or '{self.label_column}' (expected both)")
            y = self._class_of(label, where)
            path = inside_root(image, root, where)
            record = {"image": str(path), "label": y, "id": str(path)}
            if self.patient_column and row.get(self.patient_column):
                record["patient"] = row[self.patient_column]
            records.append(record)
            official.append((row.get(self.split_column) or "").strip().lower() if self.split_column else "")
        if not self.allow_unlisted:
            self._check_every_image_listed(root, csv_path, {r["image"] for r in records})
        declared = self.num_classes or (len(self.class_names) if self.class_names else None)
        num_classes = class_count(np.array([r["label"] for r in records]), declared, str(csv_path))
        if any(official):
            unknown = sorted(set(official) - {"train", "val", "test"})
            if unknown:
                raise WorkbenchError(f"{csv_path}: split values {unknown}; expected train, val or test")
            splits = {s: [r for r, o in zip(records, official) if o == s] for s in ("train", "val", "test")}
        else:
            parts = partition(records, self.val_split, self.test_split, self.split_seed)
            splits = {s: [records[i] for i in idx] for s, idx in parts.items()}
        return SourceData(
            splits=splits,
            task="classification",
            spatial_dims=2,
            in_channels=probe_channels(records[0]["image"]),
            num_classes=num_classes,
            description=str(csv_path),
        )
