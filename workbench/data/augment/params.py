"""The augmentation views' ranges and probabilities, written once: the per-image MONAI chains
(`monai_views.py`) and their batched on-device forms (`batched_views.py`) both read them here."""

from __future__ import annotations

from dataclasses import dataclass

# Self-supervised views: an affine with probability 1/2, intensity changes with the view's own
# probability (ViewSpec.intensity), blur sigma per axis and noise std ranges.
SSL_AFFINE = dict(p=0.5, rotate=0.26, shear=0.1)  # radians; shear coefficients
SSL_INTENSITY = dict(gamma=(0.7, 1.5), scale=0.25, shift=0.1)
BLUR_SIGMA = (0.1, 1.0)
NOISE_STD = 0.05
# Semi-supervised strong views (a RandAugment-like mix for grayscale images).
STRONG_AFFINE = dict(p=0.8, rotate=0.5, shear=0.3)
STRONG_INTENSITY = dict(p=0.8, gamma=(0.5, 2.0), scale=0.3, shift=0.15)
STRONG_BLUR, STRONG_NOISE = 0.5, 0.5  # probabilities


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
