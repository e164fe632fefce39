"""The augmentation views as per-image MONAI dictionary transforms, run in the DataLoader's
workers: one definition serves 2D and 3D, any channel count, any intensity range.

Grayscale-aware: intensity changes are gamma, scale/shift and noise per channel, never hue or
saturation.
- A self-supervised view: random resized crop -> flip -> small affine (optional elastic in 2D)
  -> intensity (gamma, scale, shift) -> blur -> noise. DINO's multi-crop adds smaller local
  crops at a lower resolution.
- Semi-supervised views: weak = flip + a small random shift (FixMatch's weak augmentation);
  strong = weak + rotation and shear, intensity changes, blur, noise and one cutout hole. Shifts
  and the cutout are in pixels (voxels), because the views are built before the image size is
  known.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Randomizable,
    Resized,
)

from workbench.data.augment.params import (
    BLUR_SIGMA,
    NOISE_STD,
    SSL_AFFINE,
    SSL_INTENSITY,
    STRONG_AFFINE,
    STRONG_BLUR,
    STRONG_INTENSITY,
    STRONG_NOISE,
    ViewSpec,
)

KEY = "image"


def affine(spatial_dims: int, p: float, rotate: float, shear: float) -> RandAffined:
    """A rotation within +-`rotate` rad (about each axis in 3D) and shears within +-`shear`."""
    return RandAffined(
        KEY, prob=p, rotate_range=[rotate] * (1 if spatial_dims == 2 else 3), shear_range=[shear] * spatial_dims, padding_mode="border"
    )


def intensity(p: float, gamma: tuple[float, float], scale: float, shift: float) -> list:
    return [
        RandAdjustContrastd(KEY, prob=p, gamma=gamma),
        RandScaleIntensityd(KEY, factors=scale, prob=p),
        RandShiftIntensityd(KEY, offsets=shift, prob=p),
    ]


def blur(p: float) -> RandGaussianSmoothd:
    return RandGaussianSmoothd(KEY, sigma_x=BLUR_SIGMA, sigma_y=BLUR_SIGMA, sigma_z=BLUR_SIGMA, prob=p)


def flips(spatial_dims: int) -> list:
    return [RandFlipd(KEY, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]


def as_float_tensor() -> EnsureTyped:
    return EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False)


def view_transform(spec: ViewSpec, spatial_dims: int) -> Compose:
    """One self-supervised view."""
    lo, hi = spec.crop_scale
    chain: list = [
        RandScaleCropd(KEY, roi_scale=lo, max_roi_scale=hi, random_size=True),
        Resized(KEY, spatial_size=[spec.size] * spatial_dims, mode="area" if spatial_dims == 2 else "trilinear"),
    ]
    if spec.flip:
        chain += flips(spatial_dims)
    if spec.affine:
        chain.append(affine(spatial_dims, **SSL_AFFINE))
    if spec.elastic and spatial_dims == 2:
        chain.append(Rand2DElasticd(KEY, spacing=(spec.size // 4,) * 2, magnitude_range=(1, 2), prob=0.3, padding_mode="border"))
    if spec.intensity:
        chain += intensity(spec.intensity, **SSL_INTENSITY)
    if spec.blur:
        chain.append(blur(spec.blur))
    if spec.noise:
        chain.append(RandGaussianNoised(KEY, prob=spec.noise, std=NOISE_STD))
    chain.append(as_float_tensor())
    return Compose(chain)


def weak_strong_transform(spatial_dims: int, strong: bool, flip: bool, translate: int, cutout: int) -> Compose:
    """One weak (`strong=False`) or strong view; fresh transform objects per call, so every view
    has its own random state."""
    chain: list = flips(spatial_dims) if flip else []
    if translate:
        chain.append(RandAffined(KEY, prob=1.0, translate_range=[translate] * spatial_dims, padding_mode="border"))
    if strong:
        chain += [affine(spatial_dims, **STRONG_AFFINE), *intensity(**STRONG_INTENSITY), blur(STRONG_BLUR)]
        chain.append(RandGaussianNoised(KEY, prob=STRONG_NOISE, std=NOISE_STD))
        if cutout:
            chain.append(RandCoarseDropoutd(KEY, holes=1, spatial_size=[cutout] * spatial_dims, fill_value=0.0, prob=1.0))
    return Compose([*chain, as_float_tensor()])


class MultiViewd(MapTransform, Randomizable):
    """{"image": x} -> {"views": [t1(x), t2(x), ...]}: each view an independent random draw."""

    def __init__(self, transforms: Sequence[Compose]) -> None:
        super().__init__(keys=[KEY])
        self.transforms = list(transforms)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> MultiViewd:
        super().set_random_state(seed, state)
        for i, t in enumerate(self.transforms):
            t.set_random_state(seed=None if seed is None else seed + i)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        image = data[KEY]
        return {"views": [t({KEY: image})[KEY] for t in self.transforms]}
