"""The views of `monai_views.py`, drawn for a whole batch at once on the batch's device.

MONAI's transforms augment one image at a time in the DataLoader's workers, at about 3 ms a view
on one core: a GPU that trains a ResNet-18 on 28-pixel images at thousands of images a second
then waits on the CPU. The datamodule applies these views to the training batches after they
reach the device (it tells them by `on_device`).

Self-supervised views follow `view_transform`: crop side fractions drawn per axis in the crop
scale range and placed uniformly inside the image, each axis flipped with probability 1/2, the
SSL affine, intensity, blur and noise of `params.py`, border padding. The crop, flips and affine
make one sampling grid (one bilinear resampling where MONAI's "area" resize repeats pixels when
it enlarges a crop). Elastic deformation has no batched form here and is refused.

Weak views: each axis flipped with probability 1/2 and a shift per axis within +-`translate`
pixels. Strong views: the same, then the strong affine, intensity, blur and noise of
`params.py`, and one `cutout`-pixel hole filled with 0, placed wholly inside the image (MONAI's
RandCoarseDropout). In 3D all six shear coefficients are drawn, where MONAI's three-value
shear_range draws three.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.data.augment.batched_ops import (
    Draws,
    check_batch,
    check_spatial_dims,
    cut_out,
    random_affine,
    random_blur,
    random_intensity,
    random_noise,
    random_signs,
    resample,
)
from workbench.data.augment.params import (
    SSL_AFFINE,
    SSL_INTENSITY,
    STRONG_AFFINE,
    STRONG_BLUR,
    STRONG_INTENSITY,
    STRONG_NOISE,
    ViewSpec,
)
from workbench.errors import WorkbenchError


class BatchedView:
    """One kind of self-supervised view (a ViewSpec) for a batch (B, C, *spatial) of one size."""

    def __init__(self, spec: ViewSpec, spatial_dims: int) -> None:
        check_spatial_dims(spatial_dims)
        if spec.elastic:
            raise WorkbenchError("data.pretrain_views.elastic=true has no on-device form; set data.pretrain_views.on_device=false")
        self.spec = spec
        self.spatial_dims = spatial_dims

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draw = Draws(check_batch(images, self.spatial_dims), images.device, generator)
        x = self.geometric(images.float(), draw)
        if self.spec.intensity:
            x = random_intensity(x, draw, self.spec.intensity, **SSL_INTENSITY)
        if self.spec.blur:
            x = random_blur(x, draw, self.spec.blur, self.spatial_dims)
        if self.spec.noise:
            x = random_noise(x, draw, self.spec.noise)
        return x

    def geometric(self, x: torch.Tensor, draw: Draws) -> torch.Tensor:
        """Crop, resize, flips and affine as one map from output to input coordinates (in
        affine_grid's normalised [-1, 1] coordinates, whose edges are the image's edges)."""
        d, lo, hi = self.spatial_dims, *self.spec.crop_scale
        side = draw.uniform(lo, hi, d)
        centre = (1 - side) * draw.uniform(-1, 1, d)  # the crop stays inside the image
        scale = side * random_signs(draw, d) if self.spec.flip else side
        matrix = torch.diag_embed(scale)
        if self.spec.affine:
            matrix = matrix @ random_affine(draw, d, SSL_AFFINE["rotate"], SSL_AFFINE["shear"], SSL_AFFINE["p"])
        return resample(x, matrix, centre, [self.spec.size] * d)


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


class BatchedMultiView:
    """Several views, each an independent draw for every image of a batch."""

    on_device = True

    def __init__(self, views: Sequence[BatchedView | BatchedWeakStrongView]) -> None:
        self.views = list(views)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        return [view(images, generator) for view in self.views]

    @staticmethod
    def generator(device: torch.device, seed: int, epoch: int, rank: int) -> torch.Generator:
        """A generator on the batch's device, seeded per run, epoch and rank: a resumed run draws
        from an epoch's start as the first run did, and each rank draws its own views."""
        generator = torch.Generator(device=device)
        generator.manual_seed(((seed % 2**31) * 100_003 + epoch) * 1_009 + rank)
        return generator
