"""MONAI dictionary transforms keyed by "image"/"label", for 2D and 3D, any channel count and
bit depth: loading with checks, intensity normalisation, resizing and training augmentation.
No transform here assumes RGB or uint8.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import monai.transforms
import numpy as np
import torch
from monai.data import MetaTensor, PILReader, get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImage,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Resized,
)

from workbench.data.volume import VolumeSpec
from workbench.errors import WorkbenchError, first_line

INTENSITY_MODES = ("auto", "minmax", "range", "percentile", "zscore", "none")
_volume_loader = LoadImage(image_only=True, ensure_channel_first=True)
# MONAI's PILReader does not claim .tif/.tiff by suffix; 2D picture formats go to it directly.
# Rows stay rows (reverse_indexing=False): a picture loads as the (H, W) array any viewer shows,
# the layout of in-memory sources like MedMNIST, so exported synthetic PNGs load back unchanged.
_picture_loader = LoadImage(reader=PILReader(reverse_indexing=False), image_only=True, ensure_channel_first=True)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_dicom_series(paths: Sequence[str]) -> torch.Tensor:
    """A series' DICOM files, already in slice order, as one (1, columns, rows, slices) volume in
    stored units times RescaleSlope plus RescaleIntercept (the layout MONAI gives a series folder).
    While MONAI tracks metadata, a MetaTensor whose RAS affine comes from the first slice's
    position and orientation, the pixel spacing and the distance between slices."""
    import pydicom

    slices, headers = [], []
    for path in paths:
        ds = pydicom.dcmread(path)
        headers.append(ds)
        slices.append(ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0))
    volume = torch.from_numpy(np.stack(slices, axis=-1).transpose(1, 0, 2).copy())[None]
    return MetaTensor(volume, affine=series_affine(headers)) if get_track_meta() else volume


def series_affine(headers: Sequence[Any]) -> np.ndarray:
    """The RAS voxel-to-world affine of a (columns, rows, slices) array of a series' slices."""
    first = headers[0]
    orientation = np.asarray(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=float)
    along_row, along_column = orientation[:3], orientation[3:]
    row_spacing, column_spacing = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    origin = np.asarray(first.get("ImagePositionPatient", [0.0, 0.0, 0.0]), dtype=float)
    normal = np.cross(along_row, along_column)
    if len(headers) > 1 and "ImagePositionPatient" in headers[-1]:
        step = (np.asarray(headers[-1].ImagePositionPatient, dtype=float) - origin) / (len(headers) - 1)
    else:
        step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = along_row * column_spacing, along_column * row_spacing, step, origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's patient LPS to RAS, as MONAI's readers give


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


def intensity_steps(mode: str, value_range: Sequence[float] | None, percentiles: Sequence[float] | None = None) -> list[tuple[str, dict]]:
    """The intensity scaling as (MONAI dictionary transform name, arguments but keys), shared by
    the data chain and the exported bundle. `minmax`: per-image to [0, 1]; `range`: a fixed window
    (CT HU, bit depth) to [0, 1], clipped; `percentile`: each image's [low, high] percentiles
    (`percentiles`, MR's usual choice) to [0, 1], clipped; `zscore`: per-image zero mean, unit
    variance; `none`; `auto`: `range` when known, else `minmax`."""
    if mode not in INTENSITY_MODES:
        raise WorkbenchError(f"data.intensity_mode='{mode}': expected one of {INTENSITY_MODES}")
    if mode == "auto":
        mode = "range" if value_range is not None else "minmax"
    if mode == "range":
        if value_range is None or len(value_range) != 2 or value_range[0] >= value_range[1]:
            raise WorkbenchError(f"data.intensity_range={value_range}: expected [low, high] with low < high")
        low, high = value_range
        return [("ScaleIntensityRanged", {"a_min": float(low), "a_max": float(high), "b_min": 0.0, "b_max": 1.0, "clip": True})]
    if mode == "percentile":
        if percentiles is None or len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise WorkbenchError(f"data.intensity_percentiles={percentiles}: expected [low, high] with 0 <= low < high <= 100")
        low, high = percentiles
        return [("ScaleIntensityRangePercentilesd", {"lower": float(low), "upper": float(high), "b_min": 0.0, "b_max": 1.0, "clip": True})]
    if mode == "minmax":
        return [("ScaleIntensityd", {"minv": 0.0, "maxv": 1.0})]
    if mode == "zscore":
        return [("NormalizeIntensityd", {"channel_wise": True})]
    return []


def intensity_transform(image_key: str, mode: str, value_range: Sequence[float] | None, percentiles: Sequence[float] | None = None) -> list:
    """`intensity_steps` as transforms of `image_key`."""
    return [getattr(monai.transforms, name)(image_key, **kwargs) for name, kwargs in intensity_steps(mode, value_range, percentiles)]


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
    intensity_percentiles: Sequence[float] | None = None,
    binarize_mask: bool = False,
    augment: Mapping[str, bool] | None = None,
    volume: VolumeSpec | None = None,
    random_patches: bool = False,
) -> Compose:
    """The whole chain for one view; `train=True` adds augmentation. With `volume`, 3D volumes
    are reoriented, resampled and cut into patches (random ones where `random_patches`) instead
    of resized to `image_size`; the chain then tracks MONAI metadata, which resampling reads."""
    seg = task == "segmentation"
    keys = ["image", "label"] if seg else ["image"]
    metadata = volume is not None and volume.needs_metadata
    # Paths are loaded, arrays pass through: one chain serves in-memory sources and archives.
    chain: list = [LoadChecked(keys, allow_missing_keys=True)]
    chain.append(EnsureTyped(keys, data_type="tensor", dtype=None, track_meta=metadata, allow_missing_keys=True))
    if seg and binarize_mask:
        chain.append(BinarizeMask("label", allow_missing_keys=True))
    chain.append(CheckRecord(keys, num_classes=num_classes, mask_key="label" if seg else None))
    chain.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=metadata))
    chain += intensity_transform("image", intensity_mode, intensity_range, intensity_percentiles)
    if volume is not None:  # segmentation is scored on whole volumes, by sliding windows of the patch size
        chain += volume.transforms(keys, "random" if random_patches else "whole" if seg else "centre")
    elif image_size:
        size = [int(image_size)] * spatial_dims
        chain.append(Resized(keys, spatial_size=size, mode=("area", "nearest") if seg else "area", allow_missing_keys=True))
    if train and augment:
        chain += augmentations(keys, spatial_dims, **{k: bool(v) for k, v in augment.items()})
    # Plain tensors out: MONAI's transforms re-wrap arrays as MetaTensors, and batched
    # MetaTensors carry per-item metadata that the models and metrics do not need.
    chain.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    if seg:
        chain.append(EnsureTyped("label", data_type="tensor", dtype=torch.long, track_meta=False, allow_missing_keys=True))
    return (Compose if metadata else WithoutMetadata)(chain)


def strip_label(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with its label removed (for the unlabeled and pretrain subsets), so no stage can peek at it."""
    return {k: v for k, v in record.items() if k != "label"}

