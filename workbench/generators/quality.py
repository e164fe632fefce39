"""How good, how diverse, how novel and how useful a synthetic set is.

Feature-space metrics (FID, KID, precision/recall) need a feature network. Inception-v3, the
usual one, needs downloaded ImageNet weights, expects 299 px RGB natural images, and its
ImageNet-class features are known to skew FID (Kynkaenniemi et al. 2023). Here the features come
from a workbench backbone that takes the data's own channels, and no download:
- `FeatureNetwork.from_backbone(path)`: any exported `backbone.pt` (a self-supervised
  `workbench pretrain`, or a classifier trained on the real images of the same modality, as
  medical GAN studies do). Its features describe the structures that matter in this modality,
  so distances between feature distributions track realism there.
- `FeatureNetwork.random(...)`: a seeded, randomly initialised ResNet-18, the fallback; random
  convolutional features still rank generators sensibly (Naeem et al. 2020), but are weaker.
Values are comparable only under the same feature network; the manifest records which (with the
sha256 of its weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.metrics import FIDMetric
from monai.metrics.regression import compute_ms_ssim

from workbench.data.files import existing_file
from workbench.io import sha256_of
from workbench.models.backbones import build_backbone
from workbench.models.pretrained import load_backbone

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class FeatureNetwork:
    """(N, C, *spatial) images in [0, 1] -> (N, D) features, in eval mode, batched."""

    def __init__(self, backbone: nn.Module, description: dict[str, Any]) -> None:
        self.backbone = backbone.eval()
        self.description = description

    @classmethod
    def from_backbone(cls, path: str | Path) -> FeatureNetwork:
        path = Path(path).expanduser()
        weights = path / "backbone.pt" if path.is_dir() else path
        meta = json.loads(existing_file(weights.with_suffix(".json"), "provenance file", "backbone.json").read_text())
        backbone, _ = build_backbone(
            meta["backbone"], meta["spatial_dims"], meta["in_channels"], meta.get("small_input", True),
            meta.get("image_size", 32), meta.get("width", 1.0),
        )
        load_backbone(backbone, weights, meta)
        described = {k: meta.get(k) for k in ("method", "backbone", "width", "data", "epochs")}
        return cls(backbone, {"kind": "backbone", "path": str(weights), "sha256": sha256_of(weights), **described})

    @classmethod
    def random(cls, spatial_dims: int, in_channels: int, seed: int = 0, width: float = 1.0) -> FeatureNetwork:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            backbone, _ = build_backbone("resnet18", spatial_dims, in_channels, True, 32, width)
        return cls(backbone, {"kind": "random", "backbone": "resnet18", "seed": seed, "width": width})

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return torch.cat([self.backbone(images[i : i + batch_size].float()) for i in range(0, len(images), batch_size)])


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to the two feature sets (MONAI's FIDMetric)."""
    return float(FIDMetric()(fake, real))


def real_fid_floor(
    reference: torch.Tensor, pool: torch.Tensor, n: int, features: FeatureNetwork, draws: int = 10, seed: int = 0
) -> tuple[float, float] | None:
    """FID against the reference features of `n` real images drawn from `pool` (mean, std over
    `draws` draws): what a perfect generator scores with a set of this size, since FID is biased
    upward for small sets, and how far two equally good sets differ by chance. None when the
    pool has fewer than `n` images."""
    if n < 2 or len(pool) < n:
        return None
    g = torch.Generator().manual_seed(seed)
    picks = [torch.randperm(len(pool), generator=g)[:n] for _ in range(draws)]
    used = torch.unique(torch.cat(picks))
    pooled = torch.zeros(len(pool), reference.shape[1], dtype=reference.dtype)
    pooled[used] = features(pool[used]).to(reference.dtype)
    values = torch.tensor([fid(reference, pooled[pick]) for pick in picks])
    return float(values.mean()), float(values.std())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 50, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 with the kernel
    (x.y / d + 1)^3, averaged over random subsets; (mean, std over subsets). Unbiased, so about
    0 (possibly negative) for two samples of one distribution, unlike FID."""
    real, fake = real.double(), fake.double()
    m = min(subset_size, len(real), len(fake))
    d = real.shape[1]
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=g)[:m]]
        y = fake[torch.randperm(len(fake), generator=g)[:m]]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = m * (m - 1)
        values.append(((kxx.sum() - kxx.trace()) / off + (kyy.sum() - kyy.trace()) / off - 2 * kxy.mean()).item())
    t = torch.tensor(values)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point (k shrinks for tiny sets)."""
    distances = torch.cdist(features, features)
    k = min(k, len(features) - 1)
    return distances.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019): precision is the share of
    synthetic samples inside the real manifold (the union of k-NN balls around real samples),
    recall the share of real samples inside the synthetic manifold."""
    real, fake = real.double(), fake.double()
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    cross = torch.cdist(fake, real)  # (fake, real)
    precision = (cross <= real_radii[None, :]).any(1).double().mean()
    recall = (cross.T <= fake_radii[None, :]).any(1).double().mean()
    return float(precision), float(recall)


def ms_ssim_scales(shape: tuple[int, ...], kernel_size: int) -> int:
    """The most MS-SSIM scales (<= 5) that MONAI allows for this image size and kernel."""
    for scales in range(5, 0, -1):
        if all(s // max(1, scales - 1) ** 2 > kernel_size - 1 for s in shape):
            return scales
    return 0


def ms_ssim_diversity(images: torch.Tensor, pairs: int = 200, seed: int = 0, kernel_size: int = 7) -> float:
    """Mean MS-SSIM between random pairs of different images (lower: more diverse). The number
    of scales shrinks for small images; NaN where even one scale does not fit."""
    scales = ms_ssim_scales(tuple(images.shape[2:]), kernel_size)
    if scales == 0 or len(images) < 2:
        return math.nan
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, len(images), (pairs,), generator=g)
    second = (first + torch.randint(1, len(images), (pairs,), generator=g)) % len(images)  # never the same image
    values = compute_ms_ssim(
        images[first].float(), images[second].float(), spatial_dims=images.ndim - 2, data_range=1.0,
        kernel_size=kernel_size, weights=tuple((weights / weights.sum()).tolist()),
    )
    return float(values.mean())


def nearest_real(fake: torch.Tensor, real: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each synthetic image, the index of the nearest real image and the distances to the
    nearest and second-nearest (Euclidean, in pixel space)."""
    flat_real = real.flatten(1).float()
    index, first, second = [], [], []
    for i in range(0, len(fake), chunk):
        d = torch.cdist(fake[i : i + chunk].flatten(1).float(), flat_real)
        values, idx = d.topk(min(2, d.shape[1]), dim=1, largest=False)
        index.append(idx[:, 0])
        first.append(values[:, 0])
        second.append(values[:, -1])
    return torch.cat(index), torch.cat(first), torch.cat(second)


def memorisation_audit(fake: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> dict[str, Any]:
    """Flags a synthetic image as a near-copy when its nearest training image is much closer
    than the second nearest: d1 < `ratio` * d2 (the test of Yoon et al. 2023 and Carlini et al.
    2023 for diffusion-model memorisation). Returns per-image nearest indices and distances,
    and the flagged share."""
    index, d1, d2 = nearest_real(fake, train)
    flagged = d1 < ratio * d2
    return {
        "ratio_threshold": ratio,
        "nearest_index": index.tolist(),
        "nearest_distance": d1.tolist(),
        "flagged": flagged.nonzero().flatten().tolist(),
        "memorized_fraction": float(flagged.double().mean()),
    }


def quality_report(
    fake: torch.Tensor, reference: torch.Tensor, audit: dict[str, Any], features: FeatureNetwork, train: torch.Tensor | None = None
) -> dict[str, Any]:
    """Every metric of a synthetic set (images in [0, 1]) against `reference` real images (for
    FID, KID, precision/recall), with the summary of its `memorisation_audit`; with the real
    `train` images, also the FID of as many real images (`real_fid_floor`)."""
    real_f, fake_f = features(reference), features(fake)
    kid_mean, kid_std = kid(real_f, fake_f)
    precision, recall = precision_recall(real_f, fake_f)
    floor = real_fid_floor(real_f, train, len(fake), features) if train is not None else None
    return {
        "fid": fid(real_f, fake_f),
        "fid_real_same_size": floor[0] if floor else None,
        "fid_real_same_size_std": floor[1] if floor else None,
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "ms_ssim_synthetic": ms_ssim_diversity(fake),
        "ms_ssim_real": ms_ssim_diversity(reference),
        "memorized_fraction": audit["memorized_fraction"],
        "flagged_near_copies": audit["flagged"],
        "reference_images": len(reference),
        "synthetic_images": len(fake),
        "feature_network": features.description,
    }
