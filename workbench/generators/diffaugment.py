"""Differentiable augmentation (DiffAugment, Zhao et al. 2020): the same random brightness,
contrast, translation and cutout applied to real and generated images before the discriminator,
so a GAN trains on a few hundred images without the discriminator memorising them. Gradients
flow through every operation to the generator. No saturation or hue: medical images are often
one channel. 2D (B, C, H, W) images in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shifts by up to `ratio` of the size, zero-padded (nearest-neighbour resampling)."""
    shift = (torch.rand(len(x), 2, device=x.device, dtype=x.dtype) * 2 - 1) * ratio * 2  # grid units span 2
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zeroes one square of `ratio` of the size at a random place in each image."""
    b, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio)), max(1, int(w * ratio))
    top = torch.randint(0, h - ch + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"brightness": brightness, "contrast": contrast, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """`policy`: comma-separated names from POLICIES, e.g. "brightness,contrast,translation,cutout";
    empty: no augmentation."""
    for name in filter(None, (p.strip() for p in policy.split(","))):
        if name not in POLICIES:
            raise WorkbenchError(f"generator.diffaugment: unknown policy '{name}'; expected names from {sorted(POLICIES)}")
        x = POLICIES[name](x)
    return x
