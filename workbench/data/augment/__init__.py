"""Augmentation views: several random views of each training image, for self-supervised
pretraining (`multi_view`) and semi-supervised training (`weak_strong`). One parameter set
(`params.py`), two backends chosen by `on_device`: per-image MONAI transforms in the
DataLoader's workers (`monai_views.py`), or the same draws for a whole batch on the training
device (`batched_views.py`). "Views" here are augmentations; the datamodule's record subsets
(labeled, unlabeled, val, ...) are "subsets"."""

from __future__ import annotations

from collections.abc import Sequence

from workbench.data.augment.batched_views import BatchedMultiView, BatchedView, BatchedWeakStrongView
from workbench.data.augment.monai_views import MultiViewd, view_transform, weak_strong_transform
from workbench.data.augment.params import ViewSpec


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
    """Self-supervised views: `n_global` views at `size` (the first ones), then `n_local`
    DINO-style local crops."""
    common = dict(flip=flip, affine=affine, elastic=elastic, intensity=intensity, blur=blur, noise=noise)
    specs = [ViewSpec(size, tuple(crop_scale), **common) for _ in range(n_global)]
    specs += [ViewSpec(local_size or max(8, size // 2), tuple(local_crop_scale), **common) for _ in range(n_local)]
    if on_device:
        return BatchedMultiView([BatchedView(spec, spatial_dims) for spec in specs])
    return MultiViewd([view_transform(spec, spatial_dims) for spec in specs])


def weak_strong(
    spatial_dims: int, n_weak: int = 1, n_strong: int = 1, flip: bool = True, translate: int = 3, cutout: int = 8,
    on_device: bool = False,
) -> MultiViewd | BatchedMultiView:
    """{"image": x} -> {"views": [weak..., strong...]}: `n_weak` weak then `n_strong` strong draws."""
    kinds = [False] * n_weak + [True] * n_strong
    if on_device:
        return BatchedMultiView([BatchedWeakStrongView(spatial_dims, strong, flip, translate, cutout) for strong in kinds])
    return MultiViewd([weak_strong_transform(spatial_dims, strong, flip, translate, cutout) for strong in kinds])


__all__ = ["BatchedMultiView", "MultiViewd", "ViewSpec", "multi_view", "weak_strong"]
