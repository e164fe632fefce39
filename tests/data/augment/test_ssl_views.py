"""On-device views: exact answers where the draws are pinned, MONAI's per-image views in
distribution, reproducible draws, and the datamodule turning training batches into views."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from monai.data import create_test_image_2d

from tests.ssl.test_methods import TINY, compose_pretrain
from workbench.data.augment import ViewSpec, multi_view
from workbench.data.augment.batched_ops import erf_gaussian_kernels, rotation, shear
from workbench.data.augment.batched_views import BatchedMultiView, BatchedView
from workbench.errors import WorkbenchError
from workbench.pretrain import pretrain

NOTHING = dict(crop_scale=(1.0, 1.0), flip=False, affine=False, intensity=0.0, blur=0.0, noise=0.0)


def generator(seed: int = 0, epoch: int = 0, rank: int = 0) -> torch.Generator:
    return BatchedMultiView.generator(torch.device("cpu"), seed, epoch, rank)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_view_with_every_draw_switched_off_is_the_image(dims):
    images = torch.rand((3, 2) + (12,) * dims)
    view = BatchedView(ViewSpec(12, **NOTHING), dims)
    assert torch.allclose(view(images, generator()), images, atol=1e-5)


def test_flips_alone_give_each_image_one_of_its_four_mirror_images():
    images = torch.rand(64, 1, 10, 10)
    views = BatchedView(ViewSpec(10, **{**NOTHING, "flip": True}), 2)(images, generator())
    mirrors = [images, images.flip(-1), images.flip(-2), images.flip(-1, -2)]
    which = [[torch.allclose(v, m[i], atol=1e-5) for m in mirrors].index(True) for i, v in enumerate(views)]
    assert set(which) == {0, 1, 2, 3}  # every combination drawn, each image exactly one of them


def test_a_crop_of_half_the_side_shows_half_a_linear_ramp():
    ramp = torch.linspace(0, 1, 64).repeat(64, 1)[None, None].repeat(16, 1, 1, 1)  # 0 at the left edge, 1 at the right
    views = BatchedView(ViewSpec(32, **{**NOTHING, "crop_scale": (0.5, 0.5)}), 2)(ramp, generator())
    spans = views[:, 0].amax((1, 2)) - views[:, 0].amin((1, 2))
    assert torch.allclose(spans, torch.full_like(spans, 0.5), atol=0.03)  # half the width, anywhere inside
    assert views[:, 0].amin() >= -1e-6 and views[:, 0].amax() <= 1 + 1e-6
    assert len({round(float(v.min()), 2) for v in views[:, 0]}) > 4  # at different places


def test_blur_keeps_a_point_s_mass_and_spreads_it():
    point = torch.zeros(8, 1, 15, 15)
    point[:, :, 7, 7] = 1.0
    views = BatchedView(ViewSpec(15, **{**NOTHING, "blur": 1.0}), 2)(point, generator())
    assert torch.allclose(views.sum((1, 2, 3)), torch.ones(8), atol=1e-5)
    assert (views[:, 0, 7, 7] < 1).all() and (views[:, 0, 6, 7] > 0).all()
    # MONAI's "erf" kernel, normalised: sigma 1 puts about 38% of the mass on the centre tap
    kernel = erf_gaussian_kernels(torch.tensor([1.0]), 4)[0]
    assert kernel.sum() == pytest.approx(1.0) and kernel[4] == pytest.approx(0.3829, abs=1e-3)


def test_batched_views_match_monai_s_per_image_views_in_distribution():
    """The same phantom through both, 300 draws each: the views' brightness, contrast, likeness
    to the image and sharpness agree within three standard errors (seeded, so no flake; a
    dropped flip or noise step fails it). The spread of sharpness is left out: MONAI enlarges a
    crop with "area" resizing, which repeats pixels, where one bilinear resampling here does not."""
    image = torch.tensor(create_test_image_2d(32, 32, num_objs=6, rad_max=8, noise_max=0.1, random_state=np.random.RandomState(0))[0])
    image = image[None].float()
    n = 300
    per_image = multi_view(2, 32, n_global=1)
    per_image.set_random_state(0)
    monai = torch.stack([per_image.transforms[0]({"image": image.clone()})["image"] for _ in range(n)])
    batched = multi_view(2, 32, n_global=1, on_device=True)(image[None].repeat(n, 1, 1, 1), generator())[0]

    def summary(views: torch.Tensor) -> torch.Tensor:
        flat, v = views.flatten(1), views[:, 0]
        likeness = torch.stack([torch.corrcoef(torch.stack([f, image.flatten()]))[0, 1] for f in flat])
        steps = (v[:, 1:] - v[:, :-1]).abs().mean((1, 2)) + (v[:, :, 1:] - v[:, :, :-1]).abs().mean((1, 2))
        return torch.stack([flat.mean(1), flat.std(1), likeness, steps / flat.std(1)])  # (4, n)

    a, b = summary(monai), summary(batched)
    standard_error = torch.sqrt((a.var(1) + b.var(1)) / n)
    assert ((a.mean(1) - b.mean(1)).abs() < 3 * standard_error).all(), (a.mean(1), b.mean(1))
    assert ((a.std(1)[:3] / b.std(1)[:3]) - 1).abs().max() < 0.25


def test_intensity_changes_keep_each_image_s_order_and_noise_stays_small():
    images = torch.rand(32, 1, 8, 8)
    spec = {**NOTHING, "crop_scale": (1.0, 1.0)}
    changed = BatchedView(ViewSpec(8, **{**spec, "intensity": 1.0}), 2)(images, generator())
    for before, after in zip(images.flatten(1), changed.flatten(1)):  # gamma, scale and shift are monotone
        assert torch.equal(before.argsort(), after.argsort())
    assert not torch.allclose(changed, images, atol=1e-3)
    noisy = BatchedView(ViewSpec(8, **{**spec, "noise": 1.0}), 2)(images, generator()) - images
    assert 0 < noisy.std() < 0.05 and noisy.flatten(1).std(1).max() < 0.07


def test_rotations_are_proper_and_shears_keep_a_unit_diagonal():
    for angles in (torch.rand(5, 1), torch.rand(5, 3)):
        r = rotation(angles)
        d = r.shape[-1]
        assert torch.allclose(r @ r.transpose(1, 2), torch.eye(d).expand_as(r), atol=1e-6)
        assert torch.allclose(torch.linalg.det(r), torch.ones(5), atol=1e-6)
    assert torch.allclose(rotation(torch.tensor([[math.pi / 2]]))[0], torch.tensor([[0.0, -1.0], [1.0, 0.0]]), atol=1e-6)
    s = shear(torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]), 3)[0]
    assert torch.equal(s.diagonal(), torch.ones(3)) and s[0, 1] == pytest.approx(0.1) and s[2, 1] == pytest.approx(0.6)


def test_draws_repeat_per_seed_epoch_and_rank_and_differ_across_them():
    images = torch.rand(4, 1, 16, 16)
    views = multi_view(2, 16, on_device=True)
    first = views(images, generator(0, 0, 0))
    assert all(torch.equal(a, b) for a, b in zip(first, views(images, generator(0, 0, 0))))
    assert not torch.equal(first[0], first[1])  # the two views are independent draws
    for other in (generator(1, 0, 0), generator(0, 1, 0), generator(0, 0, 1)):
        assert not torch.equal(first[0], views(images, other)[0])


def test_elastic_and_bad_batches_are_refused_in_one_line():
    with pytest.raises(WorkbenchError, match=r"data.pretrain_views.elastic=true has no on-device form"):
        multi_view(2, 16, elastic=True, on_device=True)
    with pytest.raises(WorkbenchError, match=r"a batch of shape \(1, 16, 16\); expected \(batch, channels, 2 spatial axes\)"):
        multi_view(2, 16, on_device=True)(torch.rand(1, 16, 16), generator())


def test_the_datamodule_turns_training_batches_into_views_on_their_device(tmp_path):
    cfg = compose_pretrain(["ssl=dino", *TINY, "data.pretrain_views.on_device=true", "data.pretrain_views.n_local=2"], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert "views" not in batch and batch["image"].shape == (8, 1, 16, 16)  # plain images leave the workers
    datamodule.trainer = SimpleNamespace(training=False, current_epoch=0, global_rank=0)
    assert datamodule.on_after_batch_transfer(batch, 0) is batch  # validation batches pass unchanged
    datamodule.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0)
    views = datamodule.on_after_batch_transfer(batch, 0)["views"]
    assert [tuple(v.shape) for v in views] == [(8, 1, 16, 16)] * 2 + [(8, 1, 8, 8)] * 2
    datamodule.trainer.current_epoch = 1
    assert not torch.equal(views[0], datamodule.on_after_batch_transfer(batch, 0)["views"][0])


@pytest.mark.parametrize("method,data", [("simclr", "phantom2d"), ("byol", "phantom3d")])
def test_pretraining_runs_on_on_device_views(tmp_path, method, data):
    extra = ["ssl.small_input=false", "data.batch_size=4"] if data == "phantom3d" else []
    cfg = compose_pretrain(
        [f"ssl={method}", f"data={data}", *TINY, *extra, "data.pretrain_views.on_device=true", "+trainer.limit_train_batches=2"], tmp_path
    )
    metrics = pretrain(cfg)  # the methods read batch["views"], which only the datamodule's hook makes here
    assert metrics["steps"] == 2 and torch.isfinite(torch.tensor(metrics["val/knn_auc"]))
