"""Weak and strong views of an unlabeled image, from MONAI transforms (2D and 3D, any channel
count, grayscale-safe: intensity changes are gamma, scale, shift, blur and noise, never hue).

weak = flip + a small random shift (FixMatch's weak augmentation); strong = weak + rotation and
shear, intensity changes, blur, noise and one cutout hole (a RandAugment-like mix for grayscale
images). Shifts and the cutout are in pixels (voxels), because the views are built before the
image size is known.
"""

from __future__ import annotations

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandCoarseDropoutd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from workbench.ssl.views import MultiViewd

KEY = "image"


def weak_transforms(spatial_dims: int, flip: bool, translate: int) -> list:
    chain: list = []
    if flip:
        chain += [RandFlipd(KEY, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if translate:
        chain.append(RandAffined(KEY, prob=1.0, translate_range=[translate] * spatial_dims, padding_mode="border"))
    return chain


def strong_transforms(spatial_dims: int, cutout: int) -> list:
    chain: list = [
        RandAffined(KEY, prob=0.8, rotate_range=[0.5] * (1 if spatial_dims == 2 else 3), shear_range=[0.3] * spatial_dims, padding_mode="border"),
        RandAdjustContrastd(KEY, prob=0.8, gamma=(0.5, 2.0)),
        RandScaleIntensityd(KEY, factors=0.3, prob=0.8),
        RandShiftIntensityd(KEY, offsets=0.15, prob=0.8),
        RandGaussianSmoothd(KEY, sigma_x=(0.1, 1.0), sigma_y=(0.1, 1.0), sigma_z=(0.1, 1.0), prob=0.5),
        RandGaussianNoised(KEY, prob=0.5, std=0.05),
    ]
    if cutout:
        chain.append(RandCoarseDropoutd(KEY, holes=1, spatial_size=[cutout] * spatial_dims, fill_value=0.0, prob=1.0))
    return chain


def weak_strong(
    spatial_dims: int, n_weak: int = 1, n_strong: int = 1, flip: bool = True, translate: int = 3, cutout: int = 8
) -> MultiViewd:
    """{"image": x} -> {"views": [weak..., strong...]}: `n_weak` weak then `n_strong` strong draws."""

    def view(strong: bool) -> Compose:  # fresh transform objects per view: independent random states
        chain = weak_transforms(spatial_dims, flip, translate) + (strong_transforms(spatial_dims, cutout) if strong else [])
        return Compose([*chain, EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False)])

    return MultiViewd([view(False) for _ in range(n_weak)] + [view(True) for _ in range(n_strong)])
