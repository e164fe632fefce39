"""Augmented views for self-supervised learning, built from MONAI transforms so that one
definition serves 2D and 3D, any channel count, any intensity range.

Grayscale-aware: intensity changes are gamma, scale/shift and noise per channel, never
hue or saturation. A view is: random resized crop -> flip -> small affine (optional elastic
in 2D) -> intensity (gamma, scale, shift) -> blur -> noise. DINO's multi-crop adds smaller
local crops at a lower resolution.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Randomizable,
    Resized,
)

if TYPE_CHECKING:
    from workbench.ssl.batched_views import BatchedMultiView


@dataclass
class ViewSpec:
    """One kind of view: its size, crop scale range (of the side length) and strengths."""

    size: int
    crop_scale: tuple[float, float] = (0.4, 1.0)
    flip: bool = True
    affine: bool = True
    elastic: bool = False
    intensity: float = 0.8   # probability of gamma/scale/shift changes
    blur: float = 0.5        # probability of Gaussian blur
    noise: float = 0.2       # probability of Gaussian noise


def view_transform(spec: ViewSpec, spatial_dims: int) -> Compose:
    key = "image"
    lo, hi = spec.crop_scale
    chain: list = [
        RandScaleCropd(key, roi_scale=lo, max_roi_scale=hi, random_size=True),
        Resized(key, spatial_size=[spec.size] * spatial_dims, mode="area" if spatial_dims == 2 else "trilinear"),
    ]
    if spec.flip:
        chain += [RandFlipd(key, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if spec.affine:
        chain.append(
            RandAffined(key, prob=0.5, rotate_range=[0.26] * (1 if spatial_dims == 2 else 3), shear_range=[0.1] * spatial_dims, padding_mode="border")
        )
    if spec.elastic and spatial_dims == 2:
        chain.append(Rand2DElasticd(key, spacing=(spec.size // 4,) * 2, magnitude_range=(1, 2), prob=0.3, padding_mode="border"))
    if spec.intensity:
        chain += [
            RandAdjustContrastd(key, prob=spec.intensity, gamma=(0.7, 1.5)),
            RandScaleIntensityd(key, factors=0.25, prob=spec.intensity),
            RandShiftIntensityd(key, offsets=0.1, prob=spec.intensity),
        ]
    if spec.blur:
        chain.append(RandGaussianSmoothd(key, sigma_x=(0.1, 1.0), sigma_y=(0.1, 1.0), sigma_z=(0.1, 1.0), prob=spec.blur))
    if spec.noise:
        chain.append(RandGaussianNoised(key, prob=spec.noise, std=0.05))
    chain.append(EnsureTyped(key, data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(chain)


class MultiViewd(MapTransform, Randomizable):
    """{"image": x} -> {"views": [t1(x), t2(x), ...]}: each view an independent random draw.
    Semi-supervised learning reuses it for its weak and strong views."""

    def __init__(self, transforms: Sequence[Compose]) -> None:
        super().__init__(keys=["image"])
        self.transforms = list(transforms)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> MultiViewd:
        super().set_random_state(seed, state)
        for i, t in enumerate(self.transforms):
            t.set_random_state(seed=None if seed is None else seed + i)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        image = data["image"]
        return {"views": [t({"image": image})["image"] for t in self.transforms]}


def multi_view(
    spatial_dims: int,
    size: int,
    n_global: int = 2,
    n_local: int = 0,
    local_size: int | None = None,
    crop_scale: Sequence[float] = (0.4, 1.0),
    local_crop_scale: Sequence[float] = (0.2, 0.5),
    flip: bool = True,
    affine: bool = True,
    elastic: bool = False,
    intensity: float = 0.8,
    blur: float = 0.5,
    noise: float = 0.2,
    on_device: bool = False,
) -> MultiViewd | BatchedMultiView:
    """`n_global` views at `size` (the first ones), then `n_local` DINO-style local crops.
    `on_device`: the same views drawn for whole batches on the training device
    (`batched_views.py`) instead of per image in the DataLoader's workers."""
    common = dict(flip=flip, affine=affine, elastic=elastic, intensity=intensity, blur=blur, noise=noise)
    specs = [ViewSpec(size, tuple(crop_scale), **common) for _ in range(n_global)]
    specs += [ViewSpec(local_size or max(8, size // 2), tuple(local_crop_scale), **common) for _ in range(n_local)]
    if on_device:
        from workbench.ssl.batched_views import batched_multi_view  # it imports ViewSpec from here

        return batched_multi_view(specs, spatial_dims)
    return MultiViewd([view_transform(spec, spatial_dims) for spec in specs])
