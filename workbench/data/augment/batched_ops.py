"""The random steps of the on-device views, each for a whole batch at once on the batch's device:
every random draw is a tensor of one value per image (`Draws`), geometric changes become one
sampling grid, and intensity, blur and noise are elementwise or grouped convolutions. Nothing in
MONAI, lightly or torchvision draws independent parameters per image of a batch (torchvision's
v2 transforms draw one set for the whole batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from workbench.data.augment.params import BLUR_SIGMA, NOISE_STD
from workbench.errors import WorkbenchError

BLUR_RADIUS = int(4.0 * BLUR_SIGMA[1] + 0.5)  # MONAI's GaussianFilter truncates at 4 sigma


def check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise WorkbenchError(f"on-device views: spatial_dims={spatial_dims}; expected 2 or 3")


def check_batch(images: torch.Tensor, spatial_dims: int) -> int:
    """The batch size of `images`, which must be (batch, channels, *spatial_dims axes)."""
    if images.ndim != spatial_dims + 2:
        raise WorkbenchError(f"on-device views: a batch of shape {tuple(images.shape)}; expected (batch, channels, {spatial_dims} spatial axes)")
    return images.shape[0]


def random_signs(draw: Draws, d: int) -> torch.Tensor:
    """(B, d) of +-1: each axis flipped with probability 1/2."""
    return draw.chance(0.5, d) * -2 + 1


def random_affine(draw: Draws, d: int, rotate: float, shear_range: float, p: float) -> torch.Tensor:
    """(B, d, d): a rotation within +-`rotate` rad about each axis after a shear within
    +-`shear_range`, with probability `p` (MONAI's RandAffine), else the identity."""
    affine = rotation(draw.uniform(-rotate, rotate, 1 if d == 2 else 3)) @ shear(draw.uniform(-shear_range, shear_range, d * (d - 1)), d)
    identity = torch.eye(d, device=affine.device).expand_as(affine)
    return torch.where(draw.chance(p)[:, None, None], affine, identity)


def resample(x: torch.Tensor, matrix: torch.Tensor, centre: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """One bilinear resampling at `size` of the map output -> input coordinates `matrix` @ y +
    `centre` (normalised coordinates), the border repeated outside the image."""
    theta = torch.cat([matrix, centre[..., None]], dim=-1)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_intensity(x: torch.Tensor, draw: Draws, p: float, gamma: tuple[float, float], scale: float, shift: float) -> torch.Tensor:
    """MONAI's RandAdjustContrast (gamma on the image's own min-max range), then
    RandScaleIntensity (by 1 +- `scale`) and RandShiftIntensity (by +- `shift`), each with
    probability `p`."""
    flat = x.flatten(1)
    low, span = per_image(flat.amin(1), x), per_image(flat.amax(1) - flat.amin(1), x)
    adjusted = ((x - low) / (span + 1e-7)).clamp(min=0) ** per_image(draw.uniform(*gamma), x) * span + low
    x = torch.where(per_image(draw.chance(p), x), adjusted, x)
    x = x * per_image(torch.where(draw.chance(p), 1 + draw.uniform(-scale, scale), 1.0), x)
    return x + per_image(torch.where(draw.chance(p), draw.uniform(-shift, shift), 0.0), x)


def random_blur(x: torch.Tensor, draw: Draws, p: float, d: int) -> torch.Tensor:
    """With probability `p`, a separable Gaussian per image and axis, sigma in BLUR_SIGMA; an image
    left unblurred gets a unit kernel."""
    batch, channels = x.shape[0], x.shape[1]
    sigma = draw.uniform(*BLUR_SIGMA, d)
    kernels = erf_gaussian_kernels(sigma, BLUR_RADIUS)  # (B, d, taps)
    unit = torch.zeros_like(kernels)
    unit[..., BLUR_RADIUS] = 1
    kernels = torch.where(draw.chance(p)[:, None, None], kernels, unit)
    conv = (F.conv2d, F.conv3d)[d - 2]
    out = x.reshape(1, batch * channels, *x.shape[2:])
    for axis in range(d):
        weight = kernels[:, axis].repeat_interleave(channels, 0)  # (B*C, taps)
        shape = [batch * channels, 1] + [1] * d
        shape[2 + axis] = -1
        padding = [0] * d
        padding[axis] = BLUR_RADIUS
        out = conv(out, weight.reshape(shape), padding=padding, groups=batch * channels)
    return out.reshape(x.shape)


def random_noise(x: torch.Tensor, draw: Draws, p: float) -> torch.Tensor:
    """MONAI's RandGaussianNoise with probability `p`: a standard deviation drawn in (0, NOISE_STD)
    per image."""
    std = torch.where(draw.chance(p), draw.uniform(0, NOISE_STD), 0.0)
    return x + per_image(std, x) * draw.normal(x.shape)


class Draws:
    """Random values, one (or one per axis) per image of a batch, from one generator."""

    def __init__(self, batch: int, device: torch.device, generator: torch.Generator) -> None:
        self.batch, self.device, self.generator = batch, device, generator

    def uniform(self, low: float, high: float, *per_image: int) -> torch.Tensor:
        u = torch.rand(self.batch, *per_image, generator=self.generator, device=self.device)
        return low + (high - low) * u

    def chance(self, p: float, *per_image: int) -> torch.Tensor:
        return torch.rand(self.batch, *per_image, generator=self.generator, device=self.device) < p

    def normal(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator, device=self.device)


def per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) values shaped to broadcast over a batch x of (B, C, *spatial)."""
    return values.view((-1,) + (1,) * (x.ndim - 1))


def rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 1) angles: 2D rotations; (B, 3): 3D rotations about the three axes in turn."""
    cos, sin = angles.cos(), angles.sin()

    def plane(i: int, a: int, b: int, d: int) -> torch.Tensor:
        m = torch.eye(d, device=angles.device, dtype=angles.dtype).repeat(len(angles), 1, 1)
        m[:, a, a], m[:, a, b], m[:, b, a], m[:, b, b] = cos[:, i], -sin[:, i], sin[:, i], cos[:, i]
        return m

    if angles.shape[1] == 1:
        return plane(0, 0, 1, 2)
    return plane(0, 1, 2, 3) @ plane(1, 0, 2, 3) @ plane(2, 0, 1, 3)


def shear(coefficients: torch.Tensor, d: int) -> torch.Tensor:
    """(B, d*(d-1)) off-diagonal coefficients of a d x d shear with a unit diagonal."""
    m = torch.eye(d, device=coefficients.device).repeat(coefficients.shape[0], 1, 1)
    off = ~torch.eye(d, dtype=torch.bool, device=coefficients.device)
    m[:, off] = coefficients
    return m


def erf_gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """MONAI's "erf" discrete Gaussian (the integral of the density over each tap), normalised,
    for every entry of `sigma`: (..., ) -> (..., 2 * radius + 1)."""
    taps = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    scaled = sigma[..., None] * math.sqrt(2)
    kernel = 0.5 * (torch.erf((taps + 0.5) / scaled) - torch.erf((taps - 0.5) / scaled))
    return kernel / kernel.sum(-1, keepdim=True)


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
