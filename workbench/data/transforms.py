"""MONAI dictionary transforms keyed by "image"/"label", for 2D and 3D, any channel count and
bit depth: loading with checks, intensity normalisation, resizing and training augmentation.
No transform here assumes RGB or uint8.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import PILReader, get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImage,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
)

from workbench.errors import WorkbenchError, first_line

INTENSITY_MODES = ("auto", "minmax", "range", "zscore", "none")
_volume_loader = LoadImage(image_only=True, ensure_channel_first=True)
# MONAI's PILReader does not claim .tif/.tiff by suffix; 2D picture formats go to it directly.
# Rows stay rows (reverse_indexing=False): a picture loads as the (H, W) array any viewer shows,
# the layout of in-memory sources like MedMNIST, so exported synthetic PNGs load back unchanged.
_picture_loader = LoadImage(reader=PILReader(reverse_indexing=False), image_only=True, ensure_channel_first=True)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_dicom_series(paths: Sequence[str]) -> torch.Tensor:
    """A series' DICOM files, already in slice order, as one (1, columns, rows, slices) volume in
    stored units times RescaleSlope plus RescaleIntercept (the layout MONAI gives a series folder)."""
    import pydicom

    slices = []
    for path in paths:
        ds = pydicom.dcmread(path)
        slices.append(ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0))
    return torch.from_numpy(np.stack(slices, axis=-1).transpose(1, 0, 2).copy())[None]


def load_image(path: str | Sequence[str]) -> torch.Tensor:
    """One image or volume, channel first (a list of paths: a DICOM series in slice order); an
    unreadable file is a WorkbenchError naming it."""
    if not isinstance(path, str):
        try:
            return load_dicom_series(path)
        except Exception as e:
            raise WorkbenchError(f"{path[0]} (a DICOM series of {len(path)} files): cannot read as a volume ({first_line(e)})") from None
    loader = _picture_loader if path.lower().endswith(PICTURE_SUFFIXES) else _volume_loader
    try:
        return loader(path)
    except Exception as e:
        raise WorkbenchError(f"{path}: cannot read as an image or volume ({first_line(e)})") from None


class WithoutMetadata(Compose):
    """A Compose that runs with MONAI's metadata tracking off. Every chain here ends by dropping
    the metadata, and at small sizes the MetaTensor bookkeeping costs more than the transforms:
    BYOL views of 28 px images load about 2.4x faster on one core. A Compose, so MONAI's
    DataLoader seeds its random transforms as before."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            set_track_meta(tracking)


class LoadChecked(MapTransform):
    """LoadImaged with errors that name the file; a record with `slice` ([array axis, index]:
    an archive's slices mode) gets that 2D slice of the volume."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], str) or (isinstance(d[key], list) and d[key] and isinstance(d[key][0], str)):
                d[key] = load_image(d[key])
                if "slice" in d:
                    axis, index = d["slice"]
                    d[key] = d[key].select(axis + 1, index)  # + 1: the channel comes first
        d.pop("slice", None)
        return d


class CheckRecord(MapTransform):
    """Refuses NaN/Inf intensities, image/mask shape mismatches and mask values out of range."""

    def __init__(self, keys: Sequence[str], num_classes: int, mask_key: str | None) -> None:
        super().__init__(keys)
        self.num_classes = num_classes
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        where = d.get("id", "record")
        image = torch.as_tensor(d["image"])
        if not torch.isfinite(image).all():
            raise WorkbenchError(f"{where}: image has NaN or Inf values (expected finite intensities)")
        if self.mask_key and self.mask_key in d:
            mask = torch.as_tensor(d[self.mask_key])
            if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
                raise WorkbenchError(
                    f"{where}: mask shape {tuple(mask.shape[1:])} does not match image shape {tuple(image.shape[1:])}"
                )
            if mask.numel() and (mask.min() < 0 or mask.max() >= self.num_classes):
                raise WorkbenchError(
                    f"{where}: mask values span [{mask.min().item():g}, {mask.max().item():g}]; "
                    f"expected class ids in [0, {self.num_classes - 1}] (set data.binarize_mask=true for 0/255 masks)"
                )
        return d


class BinarizeMask(MapTransform):
    """Masks stored as 0/255 (or any non-zero foreground) become 0/1."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (torch.as_tensor(d[key]) > 0).to(torch.uint8)
        return d


def intensity_transform(image_key: str, mode: str, value_range: Sequence[float] | None) -> list:
    """`minmax`: per-image to [0, 1]; `range`: a fixed window (CT HU, bit depth) to [0, 1], clipped;
    `zscore`: per-image zero mean, unit variance; `none`; `auto`: `range` when known, else `minmax`."""
    if mode not in INTENSITY_MODES:
        raise WorkbenchError(f"data.intensity.mode='{mode}': expected one of {INTENSITY_MODES}")
    if mode == "auto":
        mode = "range" if value_range is not None else "minmax"
    if mode == "range":
        if value_range is None or len(value_range) != 2 or value_range[0] >= value_range[1]:
            raise WorkbenchError(f"data.intensity.range={value_range}: expected [low, high] with low < high")
        low, high = value_range
        return [ScaleIntensityRanged(image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)]
    if mode == "minmax":
        return [ScaleIntensityd(image_key, minv=0.0, maxv=1.0)]
    if mode == "zscore":
        return [NormalizeIntensityd(image_key, channel_wise=True)]
    return []


def augmentations(
    keys: list[str], spatial_dims: int, flip: bool = False, affine: bool = False, noise: bool = False, contrast: bool = False
) -> list:
    """Grayscale-safe training augmentation (no hue/saturation); masks follow geometry only."""
    seg = len(keys) > 1
    out: list = []
    if flip:
        out += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if affine:
        out.append(
            RandAffined(
                keys,
                prob=0.5,
                rotate_range=[0.2] * (1 if spatial_dims == 2 else 3),
                scale_range=[0.1] * spatial_dims,
                translate_range=[2] * spatial_dims,
                mode=("bilinear", "nearest") if seg else "bilinear",
                padding_mode="zeros",
            )
        )
    if contrast:
        out.append(RandAdjustContrastd(keys[0], prob=0.3, gamma=(0.8, 1.25)))
    if noise:
        out.append(RandGaussianNoised(keys[0], prob=0.3, std=0.03))
    return out


def build_transforms(
    *,
    task: str,
    spatial_dims: int,
    num_classes: int,
    train: bool,
    image_size: int | None = None,
    intensity_mode: str = "auto",
    intensity_range: Sequence[float] | None = None,
    binarize_mask: bool = False,
    augment: Mapping[str, bool] | None = None,
) -> Compose:
    """The whole chain for one view; `train=True` adds augmentation."""
    seg = task == "segmentation"
    keys = ["image", "label"] if seg else ["image"]
    # Paths are loaded, arrays pass through: one chain serves in-memory sources and archives.
    chain: list = [LoadChecked(keys, allow_missing_keys=True)]
    chain.append(EnsureTyped(keys, data_type="tensor", dtype=None, track_meta=False, allow_missing_keys=True))
    if seg and binarize_mask:
        chain.append(BinarizeMask("label", allow_missing_keys=True))
    chain.append(CheckRecord(keys, num_classes=num_classes, mask_key="label" if seg else None))
    chain.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32))
    chain += intensity_transform("image", intensity_mode, intensity_range)
    if image_size:
        size = [int(image_size)] * spatial_dims
        chain.append(Resized(keys, spatial_size=size, mode=("area", "nearest") if seg else "area", allow_missing_keys=True))
    if train and augment:
        chain += augmentations(keys, spatial_dims, **{k: bool(v) for k, v in augment.items()})
    # Plain tensors out: MONAI's transforms re-wrap arrays as MetaTensors, and batched
    # MetaTensors carry per-item metadata that the models and metrics do not need.
    chain.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    if seg:
        chain.append(EnsureTyped("label", data_type="tensor", dtype=torch.long, track_meta=False, allow_missing_keys=True))
    return Compose(chain)


def strip_label(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with its label removed (for the unlabeled and pretrain subsets), so no stage can peek at it."""
    return {k: v for k, v in record.items() if k != "label"}

