"""On-device weak and strong views: exact answers where the draws are pinned, MONAI's per-image
views in distribution, and the datamodule turning a semi-supervised batch's unlabeled part into
views on its device."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_train
from tests.semi.test_semi import STEPS, TINY_2D
from workbench.data.augment import weak_strong
from workbench.data.augment.batched_ops import Draws, cut_out
from workbench.data.augment.batched_views import BatchedMultiView, BatchedWeakStrongView
from workbench.errors import WorkbenchError
from workbench.train import train


def generator(seed: int = 0, epoch: int = 0, rank: int = 0) -> torch.Generator:
    return BatchedMultiView.generator(torch.device("cpu"), seed, epoch, rank)


def test_a_weak_view_without_shift_is_one_of_the_image_s_mirror_images():
    images = torch.rand(64, 1, 10, 10)
    views = BatchedWeakStrongView(2, strong=False, flip=True, translate=0, cutout=0)(images, generator())
    mirrors = [images, images.flip(-1), images.flip(-2), images.flip(-1, -2)]
    which = [[torch.allclose(v, m[i], atol=1e-5) for m in mirrors].index(True) for i, v in enumerate(views)]
    assert set(which) == {0, 1, 2, 3}


@pytest.mark.parametrize("axis", [-1, -2])
def test_a_weak_view_shifts_a_ramp_by_at_most_translate_pixels(axis):
    """A ramp rising one unit per pixel along `axis`: away from the border the view is the ramp
    plus one offset per image, within +-3 pixels and different between images."""
    ramp = torch.arange(32.0).view(*([1] * 3), 32).transpose(-1, axis).expand(16, 1, 32, 32)
    views = BatchedWeakStrongView(2, strong=False, flip=False, translate=3, cutout=0)(ramp, generator())
    inner = (slice(None), 0, slice(4, -4), slice(4, -4))
    offsets = (views - ramp)[inner].flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-4)  # a pure shift
    assert offsets.abs().max() <= 3 + 1e-4 and offsets[:, 0].std() > 0.5


@pytest.mark.parametrize("shape,side", [((12, 12), 4), ((6, 9, 8), 3), ((5, 5), 8)])
def test_cutout_zeroes_one_hole_of_its_side_wholly_inside_each_image(shape, side):
    images = torch.rand(40, 2, *shape) + 1  # no zeros of their own
    g = generator()
    holes = cut_out(images, Draws(40, images.device, g), side) == 0
    extents = [min(side, n) for n in shape]
    assert (holes.flatten(1).sum(1) == 2 * np.prod(extents)).all()  # every channel, one box of the side
    assert torch.equal(holes[:, 0], holes[:, 1])
    for axis, (n, extent) in enumerate(zip(shape, extents)):
        covered = holes[:, 0].any(dim=tuple(a + 1 for a in range(len(shape)) if a != axis))
        first = covered.float().argmax(1)
        assert (covered.sum(1) == extent).all() and (first + extent <= n).all()  # contiguous, inside
        if extent < n:
            assert {0, n - extent} <= set(first.tolist())  # both ends of the range are reached


def test_batched_strong_views_match_monai_s_per_image_ones_in_distribution():
    """A ramp through both, 1200 draws each: brightness, contrast, likeness to the ramp (which
    rotations and shears lower, and shifts barely), sharpness and the share of zeroed pixels
    (the cutout) agree within three standard errors (seeded, so no flake; a dropped step or a
    rotation range of 0.1, a gamma range of (0.7, 1.5) or no blur fails it). A ramp, because resampling it bilinearly is exact: MONAI
    resamples twice (the weak shift, then the rotation), which blurs other images more."""
    image = torch.linspace(0.1, 1.0, 32).repeat(32, 1)[None]  # no zeros outside the cutout
    n = 1200
    per_image = weak_strong(2, n_weak=0, n_strong=1)
    per_image.set_random_state(0)
    monai = torch.stack([per_image({"image": image.clone()})["views"][0] for _ in range(n)])
    batched = weak_strong(2, n_weak=0, n_strong=1, on_device=True)(image[None].repeat(n, 1, 1, 1), generator())[0]

    def summary(views: torch.Tensor) -> torch.Tensor:
        flat, v = views.flatten(1), views[:, 0]
        likeness = torch.stack([torch.corrcoef(torch.stack([f, image.flatten()]))[0, 1] for f in flat]).abs()  # flips give -1
        steps = (v[:, 1:] - v[:, :-1]).abs().mean((1, 2)) + (v[:, :, 1:] - v[:, :, :-1]).abs().mean((1, 2))
        return torch.stack([flat.mean(1), flat.std(1), likeness, steps / flat.std(1), (flat == 0).float().mean(1)])

    a, b = summary(monai), summary(batched)
    assert a[4].mean() == pytest.approx(64 / 1024, abs=1e-3)  # MONAI's hole: 8 x 8 of 32 x 32
    standard_error = torch.sqrt((a.var(1) + b.var(1)) / n)
    assert ((a.mean(1) - b.mean(1)).abs() < 3 * standard_error + 1e-4).all(), (a.mean(1), b.mean(1))


def test_views_repeat_per_generator_and_a_3d_batch_keeps_its_shape():
    images = torch.rand(3, 1, 8, 10, 12)
    views = weak_strong(3, on_device=True)
    first = views(images, generator(0))
    assert [tuple(v.shape) for v in first] == [(3, 1, 8, 10, 12)] * 2
    assert all(torch.equal(a, b) for a, b in zip(first, views(images, generator(0))))
    assert not torch.equal(first[1], views(images, generator(1))[1])
    with pytest.raises(WorkbenchError, match=r"a batch of shape \(3, 8, 10, 12\); expected \(batch, channels, 3 spatial axes\)"):
        views(images[:, 0], generator())


def test_the_datamodule_turns_unlabeled_batches_into_views_on_their_device(tmp_path):
    cfg = compose_train(["task=fixmatch", *TINY_2D, "data.unlabeled_views.on_device=true"], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))[0]  # CombinedLoader: (batch, index, loader index)
    assert "views" not in batch["unlabeled"] and batch["unlabeled"]["image"].shape == (28, 1, 32, 32)  # mu = 7
    datamodule.trainer = SimpleNamespace(training=False, current_epoch=0, global_rank=0)
    assert datamodule.on_after_batch_transfer(batch, 0) is batch
    datamodule.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0)
    moved = datamodule.on_after_batch_transfer(batch, 0)
    assert moved["labeled"] is batch["labeled"]
    weak, strong = moved["unlabeled"]["views"]
    assert weak.shape == strong.shape == (28, 1, 32, 32) and not torch.equal(weak, strong)


def test_fixmatch_trains_on_on_device_views(tmp_path):
    cfg = compose_train(["task=fixmatch", "task.width=0.25", *TINY_2D, *STEPS, "data.unlabeled_views.on_device=true", "data.cache=memory"], tmp_path)
    metrics = train(cfg)  # FixMatch reads unlabeled["views"], which only the datamodule's hook makes here
    assert metrics["steps"] == 2 and "train/unsup_loss" in (tmp_path / "metrics.csv").read_text()
