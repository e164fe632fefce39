"""Generators: every model trains on phantoms through the `synthesize` command's function and
exports a dataset that loads back; sampling, guidance, export atomicity, the real/synthetic mix
and the quality metrics are checked against known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import EVERY_PARAMETER_LEARNS, compose_train
from workbench.data import MedicalDataModule, PhantomSource, SyntheticSource
from workbench.data.synthetic import RealSyntheticSampler
from workbench.errors import WorkbenchError
from workbench.generate import generate
from workbench.generators import ConditionalGAN, DiffusionModel
from workbench.generators import export as export_module
from workbench.generators.base import generator_ema_decay
from workbench.generators.diffaugment import cutout, diff_augment
from workbench.generators.export import export_synthetic
from workbench.generators.gan import MinibatchStd
from workbench.generators.loading import load_module
from workbench.generators.quality import (
    FeatureNetwork,
    fid,
    kid,
    memorisation_audit,
    ms_ssim_diversity,
    ms_ssim_scales,
    precision_recall,
    real_fid_floor,
)
from workbench.generators.sampling import sampling_device
from workbench.io import sha256_of
from workbench.synthesize import synthesize

TINY_2D = ["data.source.num_train=16", "data.source.num_val=6", "data.source.num_test=6", "data.batch_size=4"]
TINY_3D = ["data=phantom3d", "data.source.size=16", "data.source.num_train=4", "data.source.num_val=2",
           "data.source.num_test=2", "data.batch_size=2"]
SMALL_UNET = ["generator.channels=[16,32]", "generator.attention_levels=[false,true]", "generator.num_head_channels=16",
              "generator.norm_num_groups=8"]
STEPS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "callbacks.sample_grid.n_per_class=2"]
EXPORT = ["generate.n_per_class=3", "generate.steps=3", "generate.reference=val"]
GAN = ["generator.generator_channels=16", "generator.discriminator_channels=16", "generator.latent_dim=16", "generator.r1_every=1"]


def run_synthesize(tmp_path, overrides):
    cfg = compose_train([*overrides, *STEPS, EVERY_PARAMETER_LEARNS], tmp_path, config_name="synthesize")
    return synthesize(cfg)


@pytest.mark.parametrize(
    "overrides, task, count",
    [
        (["generator=ddpm", *SMALL_UNET, *TINY_2D, *EXPORT], "classification", 6),
        (["generator=ddpm", "generator.condition=mask", "task_kind=segmentation", *SMALL_UNET, *TINY_2D, *EXPORT], "segmentation", 3),
        (["generator=ddpm", "generator.condition=mask", "task_kind=segmentation", "generator.channels=[8,16]",
          "generator.attention_levels=[false,false]", "generator.norm_num_groups=8", "generator.num_head_channels=8", *TINY_3D, *EXPORT], "segmentation", 3),
        (["generator=dcgan", *GAN, *TINY_2D, *EXPORT], "classification", 6),
        (["generator=patch_gan", *GAN, *TINY_2D, *EXPORT], "classification", 6),
    ],
    ids=["ddpm-class-2d", "ddpm-joint-mask-2d", "ddpm-joint-mask-3d", "dcgan-2d", "patch-gan-2d"],
)
def test_every_generator_trains_exports_and_the_export_loads(tmp_path, overrides, task, count):
    metrics = run_synthesize(tmp_path, overrides)
    assert metrics["steps"] >= 2 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "samples" / "epoch000.png").is_file()
    manifest = json.loads((tmp_path / "synthetic" / "manifest.json").read_text())
    assert manifest["task"] == task and manifest["count"] == count
    assert manifest["checkpoint_sha256"] == sha256_of(tmp_path / "checkpoints" / "last.ckpt")
    assert manifest["quality"]["reference_view"] == "val" and math.isfinite(manifest["quality"]["fid"])
    data = SyntheticSource(str(tmp_path / "synthetic")).load()
    assert data.task == task and len(data.splits["train"]) == count
    rows = (tmp_path / "synthetic" / "memorisation.csv").read_text().splitlines()
    assert rows[0].startswith("synthetic_index,nearest_training_image") and len(rows) == count + 1


def test_latent_diffusion_trains_on_a_trained_autoencoder_and_reloads_without_it(tmp_path):
    ae_dir, ldm_dir = tmp_path / "ae", tmp_path / "ldm"
    run_synthesize(ae_dir, ["generator=autoencoder_kl", "generator.channels=[8,16]", "generator.norm_num_groups=8", *TINY_2D])
    overrides = ["generator=ldm", f"generator.autoencoder={ae_dir}", "generator.channels=[16,32]", "generator.norm_num_groups=8",
                 "generator.num_head_channels=16", *TINY_2D, *EXPORT]
    run_synthesize(ldm_dir, overrides)
    # The checkpoint carries the autoencoder: `generate` works after the autoencoder run is gone.
    for path in sorted(ae_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    cfg = compose_train([f"run_dir={ldm_dir}", "generate.n_per_class=2", "generate.steps=2", "generate.quality=false"],
                        tmp_path / "gen", config_name="generate")
    metrics = generate(cfg)
    manifest = json.loads((tmp_path / "gen" / "synthetic" / "manifest.json").read_text())
    assert metrics["output"].endswith("synthetic") and manifest["count"] == 4 and manifest["generator"] == "DiffusionModel"


def tiny_diffusion(condition="class", **kwargs) -> DiffusionModel:
    return DiffusionModel(in_channels=1, num_classes=2, image_shape=(16, 16), channels=(16, 32), attention_levels=(False, False),
                          norm_num_groups=8, num_head_channels=16, condition=condition, **kwargs).eval()


def test_ddim_and_ddpm_samples_have_the_shape_range_and_labels_asked_for():
    model = tiny_diffusion()
    labels = torch.tensor([0, 1, 1])
    for sampler, steps in (("ddim", 4), ("ddpm", 3)):
        out = model.sample(3, labels, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps)
        assert out["image"].shape == (3, 1, 16, 16) and out["label"].tolist() == [0, 1, 1]
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert len(model.make_scheduler("ddim", 7).timesteps) == 7
    again = [model.sample(3, labels, generator=torch.Generator().manual_seed(1), steps=4)["image"] for _ in range(2)]
    assert torch.equal(again[0], again[1])  # DDIM (eta 0) is deterministic given the seed
    with pytest.raises(WorkbenchError, match="steps=1001: expected 1 to 1000"):
        model.sample(3, labels, steps=1001)
    with pytest.raises(WorkbenchError, match="needs 3 class ids"):
        model.sample(3, None)


def test_classifier_free_guidance_mixes_conditional_and_unconditional_noise():
    model = tiny_diffusion()

    class KnownNoise(torch.nn.Module):  # predicts 10 * (class + 1); the null class (2) gives 30
        def forward(self, x, timesteps, class_labels):
            return (10.0 * (class_labels.float() + 1)).view(-1, 1, 1, 1).expand_as(x)

    model.ema = None
    model.net = KnownNoise()
    x, t = torch.zeros(2, 1, 4, 4), torch.tensor(5)
    out = model.guided_noise(x, t, torch.tensor([0, 1]), guidance=3.0)
    # uncond + 3 * (cond - uncond): class 0 -> 30 + 3 * (10 - 30) = -30; class 1 -> 30 + 3 * (20 - 30) = 0
    assert out[:, 0, 0, 0].tolist() == [-30.0, 0.0]
    assert model.guided_noise(x, t, torch.tensor([1, 1]), guidance=1.0)[:, 0, 0, 0].tolist() == [20.0, 20.0]


def test_bad_generator_settings_are_refused():
    with pytest.raises(WorkbenchError, match="generator.condition='maybe'"):
        tiny_diffusion(condition="maybe")
    with pytest.raises(WorkbenchError, match=r"generator.image_shape=\[18, 18\]"):
        DiffusionModel(in_channels=1, num_classes=2, image_shape=(18, 18), channels=(16, 32, 32), norm_num_groups=8, num_head_channels=16)
    with pytest.raises(WorkbenchError, match="the GAN is 2D"):
        ConditionalGAN(in_channels=1, num_classes=2, spatial_dims=3, image_shape=(16, 16, 16))
    with pytest.raises(WorkbenchError, match="not masks"):
        ConditionalGAN(in_channels=1, num_classes=2, condition="mask", image_shape=(16, 16))
    with pytest.raises(WorkbenchError, match="generator.minibatch_std=4: expected a group size >= 0, used by discriminator=dcgan only"):
        ConditionalGAN(in_channels=1, num_classes=2, image_shape=(16, 16), discriminator="patch", minibatch_std=4)
    with pytest.raises(WorkbenchError, match="generator.discriminator_steps=0: expected discriminator updates per generator update >= 1"):
        ConditionalGAN(in_channels=1, num_classes=2, image_shape=(16, 16), discriminator_steps=0)
    with pytest.raises(WorkbenchError, match="unknown policy 'hue'"):
        ConditionalGAN(in_channels=1, num_classes=2, image_shape=(16, 16), diffaugment="translation,hue")
    with pytest.raises(WorkbenchError, match="generate.device='gpu0': expected auto, cpu, cuda or cuda:N"):
        sampling_device("gpu0")
    assert sampling_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert sampling_device("auto") == torch.device("cpu")
        with pytest.raises(WorkbenchError, match="no GPU is visible"):
            sampling_device("cuda:0")


def test_gan_ema_generator_copies_batch_norm_statistics(tmp_path):
    run_synthesize(tmp_path, ["generator=dcgan", *GAN, *TINY_2D])
    model = load_module(tmp_path, ConditionalGAN)
    for ema_buffer, buffer in zip(model.ema.model.buffers(), model.net.buffers()):
        assert torch.equal(ema_buffer, buffer)
    assert any(b.float().abs().sum() > 0 for b in model.ema.model.buffers())


@pytest.mark.parametrize("discriminator_steps, optimizer_steps", [(1, 4), (2, 3)])
def test_gan_updates_the_generator_every_discriminator_steps_batches(tmp_path, discriminator_steps, optimizer_steps):
    """2 batches: the discriminator steps on both, the generator on batch 0 and then every
    `discriminator_steps`-th; Lightning counts each optimizer step."""
    metrics = run_synthesize(tmp_path, ["generator=dcgan", *GAN, *TINY_2D, f"generator.discriminator_steps={discriminator_steps}"])
    assert metrics["steps"] == optimizer_steps and "train/d_gap" in metrics


def test_generator_ema_follows_recent_weights_from_the_start():
    assert generator_ema_decay(0, 0.999) == pytest.approx(0.1)
    assert generator_ema_decay(80, 0.999) == pytest.approx(0.9)
    assert generator_ema_decay(10**6, 0.999) == 0.999


def test_minibatch_std_channel_sees_a_collapsed_batch():
    """The appended channel is the mean feature std within each group: about 0 for a batch of
    one repeated image, positive for a varied one, equal within a group, computed per group."""
    layer = MinibatchStd(group_size=4)
    same = layer(torch.rand(1, 3, 5, 5).repeat(8, 1, 1, 1))
    assert same.shape == (8, 4, 5, 5) and same[:, 3].max() < 1e-3
    varied = torch.rand(8, 3, 5, 5)
    out = layer(varied)[:, 3]
    assert torch.all(out > 0.1) and torch.equal(out, out[:, :1, :1].expand_as(out))
    assert torch.allclose(out[1, 0, 0], varied[1::2].std(0, unbiased=False).mean(), atol=1e-4)  # group {1, 3, 5, 7}
    assert layer(torch.rand(6, 3, 5, 5)).shape == (6, 4, 5, 5)  # groups of 3 when 4 does not divide 6


def test_diffaugment_keeps_shapes_and_passes_gradients():
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    out = diff_augment(x, "brightness,contrast,translation,cutout")
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    cut = cutout(torch.ones(3, 1, 16, 16), ratio=0.5)
    assert (cut == 0).flatten(1).sum(1).tolist() == [64, 64, 64]  # one 8 x 8 square each


# ----- export and the synthetic source ------------------------------------------------------------
def test_export_round_trips_through_the_synthetic_source(tmp_path):
    images = torch.rand(6, 1, 16, 16)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = export_synthetic(tmp_path / "set8", images, labels, "classification", 2, [0, 255], {"seed": 7})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["file_format"] == "png8" and manifest["count_per_class"] == {"0": 3, "1": 3} and manifest["seed"] == 7
    dm = MedicalDataModule(SyntheticSource(str(out)), intensity_mode="range", intensity_range=[0, 255])
    dm.load()
    loaded = torch.stack([dm.dataset("labeled", train=False)[i]["image"] for i in range(6)])
    order = [int(r["id"].split("/")[-1][:6]) for r in dm.subsets["labeled"]]
    assert torch.allclose(loaded, images[order], atol=0.5 / 255 + 1e-6)
    assert [r["label"] for r in dm.subsets["labeled"]] == labels[order].tolist()
    # Per-image normalised data (no range) is stored in 16 bits.
    out16 = export_synthetic(tmp_path / "set16", images, labels, "classification", 2, None, {})
    assert json.loads((out16 / "manifest.json").read_text())["file_format"] == "png16"


def test_export_of_3d_segmentation_pairs_round_trips(tmp_path):
    images = torch.rand(2, 1, 8, 8, 8)
    masks = (torch.rand(2, 1, 8, 8, 8) > 0.5).long()
    out = export_synthetic(tmp_path / "vol", images, masks, "segmentation", 2, None, {})
    data = SyntheticSource(str(out)).load()
    assert data.task == "segmentation" and data.spatial_dims == 3 and len(data.splits["train"]) == 2
    dm = MedicalDataModule(SyntheticSource(str(out)), intensity_mode="none")
    dm.load()
    item = dm.dataset("labeled", train=False)[0]
    index = int(dm.subsets["labeled"][0]["id"].split("/")[-1][:6])
    assert torch.allclose(item["image"], images[index], atol=1e-6) and torch.equal(item["label"], masks[index])


def test_interrupted_export_leaves_no_dataset_and_existing_ones_are_kept(tmp_path, monkeypatch):
    images, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    calls = []
    real_write = export_module.write_array

    def failing_write(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as when a user stops the command mid-export
        return real_write(*args)

    monkeypatch.setattr(export_module, "write_array", failing_write)
    with pytest.raises(KeyboardInterrupt):
        export_synthetic(tmp_path / "set", images, labels, "classification", 2, None, {})
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its partial copy
    monkeypatch.setattr(export_module, "write_array", real_write)
    export_synthetic(tmp_path / "set", images, labels, "classification", 2, None, {})
    with pytest.raises(WorkbenchError, match="already exists; a synthetic dataset is never overwritten"):
        export_synthetic(tmp_path / "set", images, labels, "classification", 2, None, {})
    assert len(list((tmp_path / "set" / "images").iterdir())) == 4


def test_a_folder_without_manifest_is_not_a_synthetic_dataset(tmp_path):
    with pytest.raises(WorkbenchError, match="not a synthetic dataset"):
        SyntheticSource(str(tmp_path)).load()


def test_datamodule_mixes_synthetic_images_at_the_configured_ratio(tmp_path):
    out = export_synthetic(tmp_path / "syn", torch.rand(30, 1, 32, 32), torch.randint(0, 2, (30,)), "classification", 2, None, {})
    real = PhantomSource(num_train=40, num_val=4, num_test=4)
    dm = MedicalDataModule(real, label_fraction=0.25, batch_size=4, synthetic_source=SyntheticSource(str(out)), synthetic_ratio=2.0)
    dm.load()
    loader = dm.train_dataloader()
    assert len(dm.subsets["labeled"]) == 10 and len(loader.sampler) == 10 + 20
    epoch = list(loader.sampler)
    assert sorted(i for i in epoch if i < 10) == list(range(10))  # every real image once
    assert len({i for i in epoch if i >= 10}) == 20  # 20 distinct synthetic ones
    assert list(loader.sampler) != epoch  # a fresh draw next epoch
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 32, 32)
    # TSTR: synthetic training images, real val and test.
    tstr = SyntheticSource(str(out), real=real).load()
    assert len(tstr.splits["train"]) == 30 and len(tstr.splits["test"]) == 4


def test_synthetic_set_of_another_kind_is_refused(tmp_path):
    out = export_synthetic(tmp_path / "syn", torch.rand(4, 1, 8, 8, 8), torch.tensor([0, 1, 0, 1]), "classification", 2, None, {})
    dm = MedicalDataModule(PhantomSource(num_train=8, num_val=2, num_test=2), synthetic_source=SyntheticSource(str(out)))
    with pytest.raises(WorkbenchError, match=r"data.synthetic_source has \(task, spatial_dims, in_channels, num_classes\) = \('classification', 3"):
        dm.load()
    with pytest.raises(WorkbenchError, match="export of 2-channel images is not supported"):
        export_synthetic(tmp_path / "two", torch.rand(2, 2, 8, 8), torch.tensor([0, 1]), "classification", 2, None, {})


def test_real_synthetic_sampler_caps_the_draw_at_the_synthetic_count():
    sampler = RealSyntheticSampler(n_real=5, n_synthetic=3, per_epoch=10)
    assert len(sampler) == 8 and sorted(sampler) == list(range(8))


# ----- quality metrics on inputs with known answers ------------------------------------------------
def test_fid_kid_and_precision_recall_on_known_distributions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    b = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    shifted = b + torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    assert fid(a, b) == pytest.approx(0.0, abs=0.02)
    assert fid(a, shifted) == pytest.approx(2.0, abs=0.1)  # ||mu_a - mu_b||^2 with equal covariances
    assert abs(kid(a, b, subsets=10, subset_size=500)[0]) < 0.01 < kid(a, shifted, subsets=10, subset_size=500)[0]
    small = a[:300]
    assert precision_recall(small, small.clone()) == (1.0, 1.0)
    precision, recall = precision_recall(small, small + 100.0)
    assert precision == 0.0 and recall == 0.0


def test_real_fid_floor_shrinks_with_the_set_size():
    """FID is biased upward for small sets: real draws of 50 score well above real draws of
    1000 against the same reference, and the spread says how much equal sets differ."""
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    pool = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    identity = FeatureNetwork(torch.nn.Identity(), {"kind": "identity"})
    small, small_sd = real_fid_floor(reference, pool, 50, identity)
    large, large_sd = real_fid_floor(reference, pool, 1000, identity)
    assert large < 0.05 < small and 0 < large_sd < small_sd
    assert real_fid_floor(reference, pool[:40], 50, identity) is None  # too few real images
    shifted, _ = real_fid_floor(reference, pool + torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), 1000, identity)
    assert shifted == pytest.approx(2.0, abs=0.15)


def test_memorisation_audit_flags_near_copies_only():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(20, 1, 8, 8, generator=g)
    fake = torch.stack([train[3] + 0.001, torch.rand(1, 8, 8, generator=g)])
    audit = memorisation_audit(fake, train)
    assert audit["nearest_index"][0] == 3 and audit["flagged"] == [0] and audit["memorized_fraction"] == 0.5


def test_ms_ssim_diversity_is_one_for_identical_images_and_scales_fit_small_images():
    same = torch.rand(1, 1, 28, 28).repeat(5, 1, 1, 1)
    assert ms_ssim_diversity(same) == pytest.approx(1.0, abs=1e-4)
    assert ms_ssim_diversity(torch.rand(10, 1, 28, 28)) < 0.2
    assert ms_ssim_scales((28, 28), 7) == 3 and ms_ssim_scales((256, 256), 7) == 5
    assert np.isnan(ms_ssim_diversity(torch.rand(3, 1, 4, 4)))


def test_fid_of_two_gaussians_of_other_covariance_is_the_trace_term():
    """FID(N(0, I), N(0, 4I)) in d dimensions = d (1 + 4 - 2 * 2) = d: the covariance term alone."""
    g = torch.Generator().manual_seed(0)
    unit = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    wide = 2.0 * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    assert fid(unit, wide) == pytest.approx(4.0, rel=0.05)


def test_kid_equals_the_unbiased_mmd_with_the_cubic_kernel_computed_directly():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, generator=g, dtype=torch.float64), 0.5 + torch.randn(12, 3, generator=g, dtype=torch.float64)

    def k(a, b):
        return (sum(float(ai * bi) for ai, bi in zip(a, b)) / 3 + 1) ** 3

    n = len(x)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    assert kid(x, y, subsets=1, subset_size=n)[0] == pytest.approx(xx + yy - 2 * xy, rel=1e-6)


def test_precision_and_recall_tell_a_generator_that_covers_one_of_two_clusters():
    """Synthetic samples all in one of the real data's two clusters: every one is realistic
    (precision 1), but only half of the real data is covered (recall 0.5)."""
    g = torch.Generator().manual_seed(2)
    clusters = torch.randn(400, 4, generator=g, dtype=torch.float64) * 0.1
    clusters[200:] += 10.0
    fake = clusters[:200].clone()  # the first cluster only
    assert precision_recall(clusters, fake) == (1.0, 0.5)


@pytest.mark.parametrize("position, flagged", [(0.24, True), (0.26, False)])
def test_memorisation_flags_a_nearest_distance_below_a_third_of_the_second(position, flagged):
    """A synthetic image on the line between two training images, at `position` of the way:
    d1 / d2 = 0.24 / 0.76 = 0.32 is a near-copy, 0.26 / 0.74 = 0.35 is not."""
    train = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4), 5 * torch.ones(1, 4, 4)])
    fake = position * torch.ones(1, 1, 4, 4)
    audit = memorisation_audit(fake, train)
    assert (audit["flagged"] == [0]) is flagged and audit["nearest_index"] == [0]


def test_a_synthetic_set_whose_manifest_lies_is_refused(tmp_path):
    """The count, the file list, each file and the generator checkpoint are checked on load."""
    checkpoint = tmp_path / "generator.ckpt"
    checkpoint.write_bytes(b"weights")

    def made(name: str, **manifest) -> Path:
        provenance = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_of(checkpoint), **manifest}
        return export_synthetic(tmp_path / name, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), "classification", 2, [0, 255], provenance)

    def lie(out: Path, **changes) -> None:
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, **changes}))

    assert len(SyntheticSource(str(made("honest"))).load().splits["train"]) == 4
    lie(out := made("count"), count=1000)
    with pytest.raises(WorkbenchError, match=r"count/manifest\.json: count 1000, but .*images holds 4 files"):
        SyntheticSource(str(out)).load()
    out = made("missing")
    (out / "images" / "000003.png").unlink()
    lie(out, count=3)
    with pytest.raises(WorkbenchError, match=r"missing/manifest\.json: files_sha256 does not match the files"):
        SyntheticSource(str(out)).load()
    lie(out := made("hash"), checkpoint_sha256="0" * 64)
    with pytest.raises(WorkbenchError, match=r"hash/manifest\.json: checkpoint_sha256 is not the sha256 of .*generator\.ckpt"):
        SyntheticSource(str(out)).load()
    out = made("unreadable")
    (out / "images" / "000001.png").write_bytes(b"\x89PNG cut short")
    lie(out, files_sha256=None)  # an export from before the file list was recorded: each file is still read
    with pytest.raises(WorkbenchError, match=r"images/000001\.png: not a readable image"):
        SyntheticSource(str(out)).load()


def test_the_docs_real_plus_synthetic_command_runs_as_written(tmp_path):
    """docs/synthesize.md's `workbench train ... data.synthetic_source=...` line, with a real
    export in place of <export>, composes and mixes the export into the labeled batches."""
    import shlex

    docs = (Path(__file__).resolve().parents[2] / "docs" / "synthesize.md").read_text()
    command = next(block for block in docs.split(".venv/bin/workbench ") if "data.synthetic_source=" in block)
    command = command.split("```")[0].replace("\\\n", " ").split("#")[0]
    out = export_synthetic(tmp_path / "export", torch.rand(6, 1, 28, 28), torch.tensor([0, 1] * 3), "classification", 2, [0, 255], {})
    words = shlex.split(command.replace("<export>", str(out)))
    assert words[0] == "train" and any(w.startswith("data.synthetic_source=") for w in words)
    data = [w.replace("pneumoniamnist", "phantom2d") for w in words[1:]]  # the phantoms stand in for the real set
    cfg = compose_train([*data, "data.source.size=28", "data.source.num_train=12", "data.label_fraction=0.5"], tmp_path / "run")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert len(datamodule.subsets["synthetic"]) == 6 and len(datamodule.train_dataloader().sampler) == 6 + 6
