"""The weak and strong views of `views.py`, drawn for a whole batch at once on the batch's
device (as `workbench.ssl.batched_views` does for the pretraining views): FixMatch at mu = 7
makes two views of seven unlabeled images per labeled one, which per-image MONAI transforms in
the DataLoader's workers cannot keep up with on a GPU.

Weak: each axis flipped with probability 1/2 and a shift drawn per axis within +-`translate`
pixels (MONAI's RandAffine's translate_range), border padding. Strong: the same, then a rotation
and shear, gamma, scale and shift of intensity, blur and noise with the ranges and probabilities
of `views.py`, and one `cutout`-pixel hole filled with 0, placed wholly inside the image (MONAI's
RandCoarseDropout). The shift and the rotation make one resampling, as in the pretraining views.
In 3D all six shear coefficients are drawn, where MONAI's three-value shear_range draws three.
"""

from __future__ import annotations

import torch

from workbench.semi.views import STRONG_AFFINE, STRONG_BLUR, STRONG_INTENSITY, STRONG_NOISE
from workbench.ssl.batched_views import (
    BatchedMultiView,
    Draws,
    check_batch,
    check_spatial_dims,
    random_affine,
    random_blur,
    random_intensity,
    random_noise,
    random_signs,
    resample,
)


class BatchedWeakStrongView:
    """One weak (`strong=False`) or strong view for a batch (B, C, *spatial) of one size."""

    def __init__(self, spatial_dims: int, strong: bool, flip: bool, translate: int, cutout: int) -> None:
        check_spatial_dims(spatial_dims)
        self.spatial_dims, self.strong, self.flip, self.translate, self.cutout = spatial_dims, strong, flip, translate, cutout

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        d = self.spatial_dims
        draw = Draws(check_batch(images, d), images.device, generator)
        x = images.float()
        size = list(x.shape[2:])
        matrix = torch.diag_embed(random_signs(draw, d).float() if self.flip else torch.ones(draw.batch, d, device=x.device))
        # Normalised coordinates span 2 across an axis; affine_grid's rows run x (the last axis) first.
        shift = draw.uniform(-self.translate, self.translate, d) * 2 / torch.tensor(size[::-1], device=x.device)
        if self.strong:
            matrix = matrix @ random_affine(draw, d, STRONG_AFFINE["rotate"], STRONG_AFFINE["shear"], STRONG_AFFINE["p"])
        if self.flip or self.translate or self.strong:
            x = resample(x, matrix, shift, size)
        if not self.strong:
            return x
        x = random_intensity(x, draw, **STRONG_INTENSITY)
        x = random_noise(random_blur(x, draw, STRONG_BLUR, d), draw, STRONG_NOISE)
        return cut_out(x, draw, self.cutout) if self.cutout else x


def cut_out(x: torch.Tensor, draw: Draws, side: int) -> torch.Tensor:
    """One hole of `side` pixels per axis (the image's extent where smaller) per image, at a
    uniform place wholly inside the image, set to 0."""
    hole = x.new_ones(x.shape[0], *x.shape[2:], dtype=torch.bool)
    for axis, n in enumerate(x.shape[2:]):
        extent = min(side, n)
        start = (draw.uniform(0, 1) * (n - extent + 1)).floor().clamp(max=n - extent)  # (B,)
        coords = torch.arange(n, device=x.device)
        inside = (coords >= start[:, None]) & (coords < start[:, None] + extent)  # (B, n)
        shape = [x.shape[0]] + [1] * (x.ndim - 2)
        shape[1 + axis] = n
        hole = hole & inside.view(shape)
    return x.masked_fill(hole[:, None], 0.0)


def batched_weak_strong(spatial_dims: int, n_weak: int, n_strong: int, flip: bool, translate: int, cutout: int) -> BatchedMultiView:
    return BatchedMultiView(
        [BatchedWeakStrongView(spatial_dims, strong, flip, translate, cutout) for strong in [False] * n_weak + [True] * n_strong]
    )
