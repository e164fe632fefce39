"""Writing a synthetic dataset directory, whole or not at all.

Layout (read back by `workbench.data.SyntheticSource`):
    images/000000.png | .nii.gz     in the intensity units of the real data they imitate
    masks/000000.png  | .nii.gz     segmentation pairs (class ids)
    labels.csv                      classification: image,label,split
    datalist.json                   segmentation: a Decathlon-style "training" list
    manifest.json                   provenance, counts and quality metrics (written last)
Everything is written under a hidden temporary name beside the target and renamed when complete,
so an interrupted export leaves no dataset under the final name.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from workbench.data.synthetic import file_list_sha256
from workbench.errors import WorkbenchError
from workbench.io import write_json_atomic

MANIFEST = "manifest.json"
FORMAT = "workbench-synthetic/1"


def file_format(spatial_dims: int, value_range: list[float] | None) -> str:
    """png8 / png16 for 2D images whose real units fit, else NIfTI (float32)."""
    if spatial_dims == 2:
        if value_range is None:
            return "png16"
        low, high = value_range
        if low >= 0 and float(low).is_integer() and float(high).is_integer():
            if high <= 255:
                return "png8"
            if high <= 65535:
                return "png16"
    return "nifti"


def storage_range(fmt: str, value_range: list[float] | None) -> list[float]:
    """The intensities [0, 1] map to: the real data's range, or the full 16-bit range when the
    real data are normalised per image (minmax: any range reads back the same)."""
    if value_range is not None:
        return [float(v) for v in value_range]
    return [0.0, 65535.0] if fmt == "png16" else [0.0, 1.0]


def write_array(path: Path, array: np.ndarray, fmt: str) -> str:
    """`array` is channel first, (1, *spatial). Returns the file name written."""
    if fmt.startswith("png"):
        name = path.with_suffix(".png")
        dtype = np.uint8 if fmt == "png8" else np.uint16
        Image.fromarray(np.rint(array[0]).astype(dtype)).save(name)
    else:
        name = path.with_suffix(".nii.gz")
        nib.save(nib.Nifti1Image(array[0].astype(np.float32), np.eye(4)), str(name))
    return name.name


def write_mask(path: Path, mask: np.ndarray, spatial_dims: int) -> str:
    if spatial_dims == 2:
        name = path.with_suffix(".png")
        Image.fromarray(mask[0].astype(np.uint8)).save(name)
    else:
        name = path.with_suffix(".nii.gz")
        nib.save(nib.Nifti1Image(mask[0].astype(np.uint8), np.eye(4)), str(name))
    return name.name


def export_synthetic(
    out_dir: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    task: str,
    num_classes: int,
    value_range: list[float] | None,
    manifest: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Writes `images` ((N, C, *spatial) in [0, 1]) with their class ids (N,) or masks
    (N, 1, *spatial) as a dataset at `out_dir`; `manifest` adds provenance and metrics,
    `extra_files` more text files (name: content)."""
    out = Path(out_dir).expanduser()
    if out.exists():
        raise WorkbenchError(f"{out}: already exists; a synthetic dataset is never overwritten (choose another output)")
    if task != "unlabeled" and (labels is None or len(labels) != len(images)):
        raise WorkbenchError(f"a {task} export needs one label or mask per image")
    spatial_dims, channels = images.ndim - 2, images.shape[1]
    if channels != 1:
        # One-channel files read back unambiguously (PNG, NIfTI); multi-channel layouts do not yet.
        raise WorkbenchError(f"export of {channels}-channel images is not supported yet (expected one-channel images)")
    fmt = file_format(spatial_dims, value_range)
    low, high = storage_range(fmt, value_range)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by an earlier interrupted export
    (partial / "images").mkdir(parents=True)
    try:
        rows = []
        arrays = (images.double().clamp(0, 1) * (high - low) + low).numpy()
        for i, array in enumerate(arrays):
            row = {"image": f"images/{write_array(partial / 'images' / f'{i:06d}', array, fmt)}"}
            if task == "classification":
                row["label"] = int(labels[i])
            elif task == "segmentation":
                (partial / "masks").mkdir(exist_ok=True)
                row["label"] = f"masks/{write_mask(partial / 'masks' / f'{i:06d}', labels[i].numpy(), spatial_dims)}"
            rows.append(row)
        if task == "classification":
            with open(partial / "labels.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["image", "label", "split"])
                writer.writeheader()
                writer.writerows({**r, "split": "train"} for r in rows)
        elif task == "segmentation":
            (partial / "datalist.json").write_text(json.dumps({"training": rows}, indent=1) + "\n")
        for name, text in (extra_files or {}).items():
            (partial / name).write_text(text)
        counts = {}
        if task == "classification":
            counts = {str(c): int((labels == c).sum()) for c in range(num_classes)}
        write_json_atomic(partial / MANIFEST, {
            "files_sha256": file_list_sha256(partial),
            "format": FORMAT,
            "task": task,
            "spatial_dims": spatial_dims,
            "in_channels": channels,
            "num_classes": num_classes,
            "image_shape": list(images.shape[2:]),
            "count": len(images),
            "count_per_class": counts,
            "file_format": fmt,
            "stored_range": [low, high],
            "intensity_range": value_range,
            **manifest,
        })
        os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
