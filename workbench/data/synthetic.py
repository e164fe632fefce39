"""Synthetic datasets exported by `workbench generate`, as a source and as a training mix.

- `SyntheticSource(path)`: the export's images with their labels or masks as the train split.
  With `real` (another source), val and test come from the real data, so a classifier trained
  on synthetic images alone is tested on real ones (train on synthetic, test on real: TSTR).
- `RealSyntheticSampler`: every epoch, all real labeled images plus a fresh draw of synthetic
  ones (the datamodule's `synthetic_ratio` per real image), shuffled together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import torch
from PIL import Image
from torch.utils.data import Sampler

from workbench.data.archive import ArchiveSource
from workbench.data.datalist import DatalistSource
from workbench.data.files import existing_dir
from workbench.data.image_folder import ImageFolderSource
from workbench.data.source import SourceData
from workbench.errors import WorkbenchError
from workbench.io import sha256_of

MANIFEST_KEYS = ("format", "task", "spatial_dims", "in_channels", "num_classes", "count")


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise WorkbenchError(f"{root}: not a synthetic dataset (no manifest.json; expected a `workbench generate` export)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WorkbenchError(f"{path}: not valid JSON ({e.msg})") from None
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise WorkbenchError(f"{path}: missing keys {missing} (expected a `workbench generate` manifest)")
    return manifest


@dataclass(frozen=True)
class SyntheticSet:
    """A finished export of `workbench synthesize`/`generate`, as the next stage takes it."""

    path: Path

    @classmethod
    def from_run(cls, metrics: dict[str, Any]) -> SyntheticSet:
        """The export a synthesize run wrote, from that run's metrics."""
        if not metrics.get("synthetic"):
            raise WorkbenchError(f"{metrics.get('run_dir')}: the synthesize run exported nothing; add generate.n_per_class=<images per class> to its overrides")
        path = Path(metrics["synthetic"])
        read_manifest(path)  # refuses a folder that is not a finished export
        return cls(path)

    def to_overrides(self, ratio: float | None) -> list[str]:
        """`workbench train` overrides that mix the set into the labeled batches, `ratio`
        synthetic images per real one each epoch (None: all of them)."""
        return [f"data.synthetic_source={{_target_:workbench.data.SyntheticSource,path:'{self.path}'}}",
                f"data.synthetic_ratio={'null' if ratio is None else ratio}"]


def file_list_sha256(root: Path) -> str:
    """sha256 of an export's data files: each one's path under `root` and its size, sorted, so a
    file added, removed, renamed or rewritten to another size changes it."""
    files = [p for sub in ("images", "masks") if (root / sub).is_dir() for p in (root / sub).rglob("*") if p.is_file()]
    lines = sorted(f"{p.relative_to(root).as_posix()} {p.stat().st_size}" for p in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def verify_export(root: Path, manifest: dict[str, Any]) -> None:
    """The export is what its manifest says: as many images, the same files, each readable, and
    made by the checkpoint it names where that checkpoint is still there."""
    where = root / "manifest.json"
    images = sorted(p for p in (root / "images").glob("*") if p.is_file()) if (root / "images").is_dir() else []
    if len(images) != manifest["count"]:
        raise WorkbenchError(f"{where}: count {manifest['count']}, but {root / 'images'} holds {len(images)} files")
    expected = manifest.get("files_sha256")  # exports made before it was recorded carry none
    if expected is not None and file_list_sha256(root) != expected:
        raise WorkbenchError(f"{where}: files_sha256 does not match the files in {root} (a file was added, removed or changed)")
    checkpoint = Path(str(manifest.get("checkpoint", "")))
    if manifest.get("checkpoint") and checkpoint.is_file() and sha256_of(checkpoint) != manifest.get("checkpoint_sha256"):
        raise WorkbenchError(f"{where}: checkpoint_sha256 is not the sha256 of {checkpoint}, the checkpoint it names")
    for image in images:
        read_header(image)


def read_header(path: Path) -> None:
    """Opens an image's header (PNG or NIfTI), which a truncated or foreign file fails."""
    try:
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        else:
            nib.load(str(path)).header.get_data_shape()
    except Exception as e:
        raise WorkbenchError(f"{path}: not a readable image ({type(e).__name__}); expected a file of the synthetic export") from None


def check_compatible(synthetic: SourceData, real: SourceData, what: str) -> None:
    """Synthetic images must be interchangeable with the real ones they join."""
    mine = (synthetic.task, synthetic.spatial_dims, synthetic.in_channels, synthetic.num_classes)
    theirs = (real.task, real.spatial_dims, real.in_channels, real.num_classes)
    if mine != theirs:
        names = "task, spatial_dims, in_channels, num_classes"
        raise WorkbenchError(f"{synthetic.description}: {what} has ({names}) = {mine}; the real data {real.description} has {theirs}")


class SyntheticSource:
    def __init__(self, path: str, real: Any = None) -> None:
        self.path = path
        self.real = real

    def load(self) -> SourceData:
        root = existing_dir(self.path, "synthetic dataset")
        manifest = read_manifest(root)
        verify_export(root, manifest)
        task = manifest["task"]
        if task == "classification":
            inner = ImageFolderSource(str(root), num_classes=manifest["num_classes"], patient_column=None)
        elif task == "segmentation":
            inner = DatalistSource(
                str(root / "datalist.json"), task="segmentation", spatial_dims=manifest["spatial_dims"],
                num_classes=manifest["num_classes"], val_split=0.0, test_split=0.0,
            )
        else:
            inner = ArchiveSource(str(root / "images"), spatial_dims=manifest["spatial_dims"])
        data = inner.load()
        # The manifest knows what the image folder cannot tell (3D volumes, class count).
        data.spatial_dims, data.in_channels = manifest["spatial_dims"], manifest["in_channels"]
        data.num_classes = manifest["num_classes"] if task != "unlabeled" else data.num_classes
        data.description = f"synthetic {root}"
        data.extra.update(manifest=manifest, intensity_range=manifest.get("intensity_range"))
        data.splits = {"train": data.splits["train"] + data.splits.get("val", []) + data.splits.get("test", [])}
        if self.real is None:
            return data
        real = self.real.load()
        check_compatible(data, real, "the synthetic set")
        # Train on synthetic images, select and test on real ones, in the real data's units.
        data.splits.update(val=real.splits.get("val") or [], test=real.splits.get("test") or [])
        data.extra["intensity_range"] = real.extra.get("intensity_range")
        data.description = f"synthetic {root} (val/test: {real.description})"
        return data


class RealSyntheticSampler(Sampler[int]):
    """Indices into ConcatDataset([real, synthetic]): each epoch every real index once and
    `per_epoch` synthetic ones drawn without replacement, shuffled together, seeded per epoch."""

    def __init__(self, n_real: int, n_synthetic: int, per_epoch: int, seed: int = 0) -> None:
        self.n_real = n_real
        self.n_synthetic = n_synthetic
        self.per_epoch = min(per_epoch, n_synthetic)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.n_real + self.per_epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        synthetic = self.n_real + torch.randperm(self.n_synthetic, generator=g)[: self.per_epoch]
        indices = torch.cat([torch.arange(self.n_real), synthetic])
        yield from indices[torch.randperm(len(indices), generator=g)].tolist()
