"""Every self-supervised method trains under Lightning on phantoms; losses match hand
computations; the exported backbone loads downstream with identical features."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, NTXentLoss

from tests.conftest import EVERY_PARAMETER_LEARNS, compose_train
from workbench.data.augment import multi_view
from workbench.errors import WorkbenchError
from workbench.pretrain import pretrain
from workbench.ssl import BYOL, SimCLR
from workbench.tasks.classification import ClassificationTask

TINY = [
    "data.source.size=16", "data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=4",
    "data.batch_size=8", "data.pretrain_views.size=16", "trainer.max_epochs=1",
]


def compose_pretrain(overrides: list[str], output_dir):
    return compose_train(overrides, output_dir, config_name="pretrain")


@pytest.mark.parametrize(
    "method", ["simclr", "moco", "moco-v3", "byol", "simsiam", "barlow_twins", "vicreg", "dino", "dino_vit", "mae"]
)
def test_every_method_trains_a_step_on_2d_phantoms(tmp_path, method):
    extra = ["ssl=moco", "ssl.version=3"] if method == "moco-v3" else [f"ssl={method}"]
    if method == "moco":
        extra.append("ssl.queue_size=64")
    cfg = compose_pretrain([*extra, *TINY, "+trainer.limit_train_batches=1", EVERY_PARAMETER_LEARNS], tmp_path)
    metrics = pretrain(cfg)
    assert metrics["steps"] == 1 and torch.isfinite(torch.tensor(metrics["val/knn_auc"]))
    meta = json.loads((tmp_path / "backbone.json").read_text())
    expected = {"moco": "moco_v2", "moco-v3": "moco_v3", "dino_vit": "dino"}.get(method, method)
    assert meta["method"] == expected and meta["steps"] == 1
    assert meta["backbone"] == ("vit_tiny" if method in ("dino_vit", "mae") else "resnet18")


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_simclr_and_byol_on_3d_phantoms(tmp_path, method):
    cfg = compose_pretrain(
        [f"ssl={method}", "data=phantom3d", *TINY, "ssl.small_input=false", "data.batch_size=4", "+trainer.limit_train_batches=1"],
        tmp_path,
    )
    metrics = pretrain(cfg)
    assert metrics["steps"] == 1
    assert json.loads((tmp_path / "backbone.json").read_text())["spatial_dims"] == 3


def test_ntxent_matches_a_hand_computation():
    torch.manual_seed(0)
    z0, z1 = torch.randn(3, 4), torch.randn(3, 4)
    t = 0.5
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(3, 6), torch.arange(0, 3)])
    by_hand = F.cross_entropy(sim, positives)
    assert torch.allclose(NTXentLoss(temperature=t)(z0, z1), by_hand, atol=1e-6)


def test_barlow_twins_matches_a_hand_computation():
    torch.manual_seed(1)
    z0, z1 = torch.randn(6, 3), torch.randn(6, 3)
    lam = 5e-3
    # batch-norm standardisation, as in the paper: biased variance, eps 1e-5
    n0 = (z0 - z0.mean(0)) / (z0.var(0, unbiased=False) + 1e-5).sqrt()
    n1 = (z1 - z1.mean(0)) / (z1.var(0, unbiased=False) + 1e-5).sqrt()
    c = n0.T @ n1 / 6
    off = c - torch.diag(torch.diag(c))
    by_hand = (torch.diag(c) - 1).pow(2).sum() + lam * off.pow(2).sum()
    assert torch.allclose(BarlowTwinsLoss(lambda_param=lam)(z0, z1), by_hand, rtol=1e-4)


def test_byol_target_follows_online_by_ema():
    model = BYOL(in_channels=1, momentum_start=0.9)
    online, target = model.backbone, model.backbone_target
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    from lightly.models.utils import update_momentum

    update_momentum(online, target, m=0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    assert not any(p.requires_grad for p in target.parameters())


def test_pretraining_cut_by_max_time_still_exports_its_backbone(tmp_path):
    """trainer.max_time (a fixed GPU lease) ends a far longer schedule early, and the run finishes
    as usual: the backbone it reached is exported and the metrics say how far it got."""
    cfg = compose_pretrain(["ssl=simclr", *TINY, "trainer.max_epochs=100000", "trainer.max_time=00:00:00:03"], tmp_path)
    metrics = pretrain(cfg)
    assert 0 < metrics["epochs"] < 100000 and metrics["steps"] > 0
    assert json.loads((tmp_path / "backbone.json").read_text())["steps"] == metrics["steps"]
    assert metrics["pretrain_seconds"] < 60


def test_export_then_load_gives_identical_features(tmp_path):
    model = SimCLR(in_channels=1, backbone="resnet18")
    model.export(tmp_path, data="test", seed=0)
    task = ClassificationTask(in_channels=1, num_classes=2, backbone="resnet18", pretrained=str(tmp_path))
    model.eval(), task.eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.backbone(x), task.backbone(x))
    probe = ClassificationTask(in_channels=1, num_classes=2, pretrained=str(tmp_path / "backbone.pt"), freeze_backbone=True)
    assert not any(p.requires_grad for p in probe.backbone.parameters())
    assert all(p.requires_grad for p in probe.head.parameters())


def test_backbone_of_another_architecture_or_channel_count_is_refused(tmp_path):
    SimCLR(in_channels=1, backbone="resnet18").export(tmp_path)
    with pytest.raises(WorkbenchError, match=r"backbone\.pt: pretrained backbone does not fit: backbone='resnet18' \(expected 'densenet121'\)"):
        ClassificationTask(in_channels=1, num_classes=2, backbone="densenet121", pretrained=str(tmp_path))
    with pytest.raises(WorkbenchError, match=r"in_channels=1 \(expected 3\)"):
        ClassificationTask(in_channels=3, num_classes=2, pretrained=str(tmp_path))
    with pytest.raises(WorkbenchError, match="pretrained backbone not found"):
        ClassificationTask(in_channels=1, num_classes=2, pretrained=str(tmp_path / "nowhere"))


def test_downstream_training_from_a_pretrained_run(tmp_path):
    cfg = compose_pretrain(["ssl=simclr", *TINY, "+trainer.limit_train_batches=1"], tmp_path / "pre")
    pretrain(cfg)
    from workbench.train import train

    cfg = compose_train([f"task.pretrained={tmp_path / 'pre'}", "task.freeze_backbone=true", "+trainer.fast_dev_run=true", "data.source.size=16"], tmp_path / "down")
    assert "test/auc" in train(cfg)


def test_head_norm_standardises_the_probe_features_and_survives_a_batch_of_one(tmp_path):
    """task.head_norm: the linear head sees standardised features whatever their scale (MAE's
    probe); a labeled view's last batch of one image uses the running statistics."""
    from workbench.tasks.classification import FeatureStandardization
    from workbench.train import train

    norm = FeatureStandardization(8)
    features = 5.0 + 100.0 * torch.randn(64, 8)
    standardised = norm(features)
    assert standardised.mean(0).abs().max() < 1e-4 and torch.allclose(standardised.std(0, unbiased=False), torch.ones(8), atol=1e-3)
    one = norm(features[:1])
    assert torch.allclose(one, (features[:1] - norm.running_mean) / (norm.running_var + norm.eps).sqrt())
    assert not list(norm.parameters())  # no affine parameters: only the linear head learns

    SimCLR(in_channels=1, backbone="resnet18", width=0.25).export(tmp_path / "pre")
    probe = ClassificationTask(in_channels=1, num_classes=2, width=0.25, pretrained=str(tmp_path / "pre"), freeze_backbone=True, head_norm=True)
    assert isinstance(probe.head[0], FeatureStandardization)
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.2.weight", "head.2.bias"]
    cfg = compose_train([  # 17 labeled images in batches of 16: the last batch holds one
        f"task.pretrained={tmp_path / 'pre'}", "task.width=0.25", "task.freeze_backbone=true", "task.head_norm=true",
        "trainer.max_epochs=1", "data.source.size=16", "data.label_fraction=0.085", "data.val_fraction=1.0",
        "data.source.num_val=20", "data.source.num_test=20", "data.batch_size=16",
    ], tmp_path / "down")
    metrics = train(cfg)
    trained = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert trained["head.0.num_batches_tracked"] == 1  # the batch of 16 updated the statistics, the batch of one did not
    assert metrics["labeled_images"] == 17 and 0.0 <= metrics["test/auc"] <= 1.0


def test_head_only_epochs_keep_the_pretrained_backbone_untouched(tmp_path):
    """LP-FT: during the head-only epochs the backbone's weights and batch-norm statistics stay
    as pretrained while the head learns; its optimizer group starts at lr 0 and joins later."""
    from workbench.models.optim import warmup_cosine
    from workbench.train import train

    SimCLR(in_channels=1, backbone="resnet18", width=0.25).export(tmp_path / "pre")
    cfg = compose_train([
        f"task.pretrained={tmp_path / 'pre'}", "task.width=0.25", "task.head_only_epochs=1", "trainer.max_epochs=1",
        "data.source.size=16", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
    ], tmp_path / "down")
    metrics = train(cfg)
    trained = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    start = ClassificationTask(in_channels=1, num_classes=2, width=0.25, pretrained=str(tmp_path / "pre")).state_dict()
    backbone = [k for k in start if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(trained[k], start[k]) for k in backbone)
    assert not torch.equal(trained["head.1.weight"], start["head.1.weight"])

    task = ClassificationTask(in_channels=1, num_classes=2, width=0.25, lr=1e-2, pretrained=str(tmp_path / "pre"), head_only_epochs=2)
    scheduler = warmup_cosine(
        task.parameter_groups(), "adamw", lr=1e-2, weight_decay=0.0, total_steps=10, warmup_steps=2, steps_per_epoch=2
    )["lr_scheduler"]["scheduler"]  # head-only epochs 2 x 2 steps
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step(), scheduler.step()
    assert [b for b, _ in lrs[:4]] == [0.0] * 4 and lrs[4][0] == pytest.approx(1e-2 / 3)  # then its own warm-up
    assert lrs[0][1] == pytest.approx(1e-2 / 3) and lrs[4][1] < 1e-2  # the head's schedule runs from step 0
    with pytest.raises(WorkbenchError, match="task.head_only_epochs=1: expected epochs >= 0 before a pretrained backbone"):
        ClassificationTask(in_channels=1, num_classes=2, head_only_epochs=1)


@pytest.mark.parametrize("dims", [2, 3])
def test_views_shapes_multicrop_and_channels(dims):
    mv = multi_view(dims, size=16, n_global=2, n_local=3, local_size=8)
    mv.set_random_state(0)
    x = torch.rand((2,) + (20,) * dims)  # two channels: nothing assumes RGB or gray
    views = mv({"image": x})["views"]
    assert [tuple(v.shape) for v in views] == [(2,) + (16,) * dims] * 2 + [(2,) + (8,) * dims] * 3
    assert not torch.equal(views[0], views[1])  # independent draws
    mv.set_random_state(0)
    assert all(torch.equal(a, b) for a, b in zip(views, mv({"image": x})["views"]))


def test_backbone_of_another_width_is_refused(tmp_path):
    pretrained = SimCLR(in_channels=1, backbone="resnet18", width=0.5)
    pretrained.export(tmp_path)
    loaded = ClassificationTask(in_channels=1, num_classes=2, width=0.5, pretrained=str(tmp_path)).backbone.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in pretrained.backbone.state_dict().items())  # the weights arrive
    with pytest.raises(WorkbenchError, match=r"width=0.5 \(expected 1.0\)"):
        ClassificationTask(in_channels=1, num_classes=2, pretrained=str(tmp_path))
