"""Weak and strong views of an unlabeled image, from MONAI transforms (2D and 3D, any channel
count, grayscale-safe: intensity changes are gamma, scale, shift, blur and noise, never hue).

weak = flip + a small random shift (FixMatch's weak augmentation); strong = weak + rotation and
shear, intensity changes, blur, noise and one cutout hole (a RandAugment-like mix for grayscale
images). Shifts and the cutout are in pixels (voxels), because the views are built before the
image size is known. `on_device=True` gives the same views drawn for whole batches on the
training device (`batched_views.py`) instead of per image in the DataLoader's workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from workbench.ssl.batched_views import BatchedMultiView

KEY = "image"
# The strong view's ranges and probabilities, shared with its on-device form.
STRONG_AFFINE = dict(p=0.8, rotate=0.5, shear=0.3)  # radians; shear coefficients
STRONG_INTENSITY = dict(p=0.8, gamma=(0.5, 2.0), scale=0.3, shift=0.15)
STRONG_BLUR, STRONG_NOISE = 0.5, 0.5  # probabilities


def weak_transforms(spatial_dims: int, flip: bool, translate: int) -> list:
    chain: list = []
    if flip:
        chain += [RandFlipd(KEY, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if translate:
        chain.append(RandAffined(KEY, prob=1.0, translate_range=[translate] * spatial_dims, padding_mode="border"))
    return chain


def strong_transforms(spatial_dims: int, cutout: int) -> list:
    affine, intensity = STRONG_AFFINE, STRONG_INTENSITY  # short names for the lines below
    chain: list = [
        RandAffined(
            KEY, prob=affine["p"], rotate_range=[affine["rotate"]] * (1 if spatial_dims == 2 else 3),
            shear_range=[affine["shear"]] * spatial_dims, padding_mode="border",
        ),
        RandAdjustContrastd(KEY, prob=intensity["p"], gamma=intensity["gamma"]),
        RandScaleIntensityd(KEY, factors=intensity["scale"], prob=intensity["p"]),
        RandShiftIntensityd(KEY, offsets=intensity["shift"], prob=intensity["p"]),
        RandGaussianSmoothd(KEY, sigma_x=(0.1, 1.0), sigma_y=(0.1, 1.0), sigma_z=(0.1, 1.0), prob=STRONG_BLUR),
        RandGaussianNoised(KEY, prob=STRONG_NOISE, std=0.05),
    ]
    if cutout:
        chain.append(RandCoarseDropoutd(KEY, holes=1, spatial_size=[cutout] * spatial_dims, fill_value=0.0, prob=1.0))
    return chain


def weak_strong(
    spatial_dims: int, n_weak: int = 1, n_strong: int = 1, flip: bool = True, translate: int = 3, cutout: int = 8,
    on_device: bool = False,
) -> MultiViewd | BatchedMultiView:
    """{"image": x} -> {"views": [weak..., strong...]}: `n_weak` weak then `n_strong` strong draws."""
    if on_device:
        from workbench.semi.batched_views import batched_weak_strong  # it imports the constants above

        return batched_weak_strong(spatial_dims, n_weak, n_strong, flip, translate, cutout)

    def view(strong: bool) -> Compose:  # fresh transform objects per view: independent random states
        chain = weak_transforms(spatial_dims, flip, translate) + (strong_transforms(spatial_dims, cutout) if strong else [])
        return Compose([*chain, EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False)])

    return MultiViewd([view(False) for _ in range(n_weak)] + [view(True) for _ in range(n_strong)])
