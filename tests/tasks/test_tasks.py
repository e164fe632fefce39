"""fast_dev_run of the classification and segmentation tasks on phantoms, 2D and 3D, through
the same `train` function the command runs; plus a short real fit with a known answer."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import EVERY_PARAMETER_LEARNS, compose_train
from workbench.errors import WorkbenchError
from workbench.tasks.classification import ClassificationTask
from workbench.tasks.segmentation import SegmentationTask
from workbench.train import train

SMALL_3D = ["data=phantom3d", "data.source.size=16", "data.source.num_train=4", "data.source.num_val=2", "data.source.num_test=2"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=classification"],
        ["task=segmentation"],
        ["task=classification", "task.backbone=densenet121", *SMALL_3D],
        ["task=segmentation", *SMALL_3D, "task.channels=[8,16,32]", "task.roi_size=[16,16,16]"],
    ],
    ids=["cls-2d", "seg-2d", "cls-3d-densenet", "seg-3d-sliding-window"],
)
def test_fast_dev_run(tmp_path, overrides):
    cfg = compose_train([*overrides, "+trainer.fast_dev_run=true", EVERY_PARAMETER_LEARNS], tmp_path)
    metrics = train(cfg)
    keys = ["test/auc"] if "task=classification" in overrides else ["test/dice", "test/dice_1", "test/hd95", "test/hd95_1", "test/surface_dice"]
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "split.json").is_file()
    for key in keys:
        assert json.loads((tmp_path / "metrics.json").read_text())[key] == pytest.approx(metrics[key], nan_ok=True)


def test_classification_learns_the_phantom_rule(tmp_path):
    """Labels are a deterministic function of the image: a short fit must beat chance clearly."""
    cfg = compose_train(["experiment=quickstart", "trainer.max_epochs=3"], tmp_path)
    metrics = train(cfg)
    assert metrics["test/auc"] > 0.9
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs
    assert metrics["best_checkpoint"].startswith(str(tmp_path / "checkpoints"))
    # The test split's predictions, saved for the report's ROC curve, give the logged test AUC.
    saved = json.loads((tmp_path / "test_predictions.json").read_text())
    probs, labels = torch.tensor(saved["probabilities"])[:, 1], torch.tensor(saved["labels"])
    pos, neg = probs[labels == 1], probs[labels == 0]
    assert float(((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()).mean()) == pytest.approx(metrics["test/auc"], abs=1e-6)


def test_task_and_data_must_agree(tmp_path):
    cfg = compose_train(["task=classification", "data.source.task=segmentation"], tmp_path)
    with pytest.raises(WorkbenchError, match="needs classification data"):
        train(cfg)


def test_models_output_shapes():
    cls = ClassificationTask(in_channels=3, num_classes=4, spatial_dims=2, backbone="resnet50")
    assert cls(torch.randn(2, 3, 28, 28)).shape == (2, 4)
    seg = SegmentationTask(in_channels=2, num_classes=3, spatial_dims=3, channels=(8, 16))
    assert seg(torch.randn(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(WorkbenchError, match="backbone 'vgg'"):
        ClassificationTask(in_channels=1, num_classes=2, backbone="vgg")


@pytest.mark.parametrize("name, spatial_dims, full_dim", [("resnet18", 2, 512), ("resnet18", 3, 512), ("densenet121", 2, 1024)])
def test_width_narrows_the_backbone(name, spatial_dims, full_dim):
    from workbench.models.backbones import build_backbone

    full, dim = build_backbone(name, spatial_dims, 1)
    half, half_dim = build_backbone(name, spatial_dims, 1, width=0.5)
    assert dim == full_dim and half_dim == full_dim // 2
    x = torch.randn(2, 1, *[16] * spatial_dims)
    assert half(x).shape == (2, half_dim)
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert n(half) < 0.3 * n(full)  # channels halve, so weights shrink about 4x
    with pytest.raises(WorkbenchError, match=r"width=0: expected a channel multiplier"):
        build_backbone(name, spatial_dims, 1, width=0)
    with pytest.raises(WorkbenchError, match="fixed width"):
        build_backbone("vit_tiny", 2, 1, width=0.5)


def test_backbone_lr_scale_slows_only_the_backbone():
    from workbench.models.optim import warmup_cosine

    task = ClassificationTask(in_channels=1, num_classes=2, width=0.25, lr=1e-2, backbone_lr_scale=0.1)
    groups = task.parameter_groups()
    trainable = {id(p) for p in task.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable and sum(len(g["params"]) for g in groups) == len(trainable)
    optimizer = warmup_cosine(groups, "adamw", lr=1e-2, weight_decay=0.0, total_steps=10, warmup_steps=0)["optimizer"]
    backbone_group, head_group = optimizer.param_groups
    assert backbone_group["lr"] == pytest.approx(1e-3) and head_group["lr"] == pytest.approx(1e-2)
    assert all(p is q for p, q in zip(head_group["params"], task.head.parameters()))
    default = ClassificationTask(in_channels=1, num_classes=2, width=0.25).parameter_groups()
    assert len(default) == 1 and len(default[0]["params"]) == len(list(task.parameters()))
    with pytest.raises(WorkbenchError, match="task.backbone_lr_scale=0"):
        ClassificationTask(in_channels=1, num_classes=2, backbone_lr_scale=0)


def test_youden_threshold_is_the_middle_of_the_optimal_interval():
    from workbench.evaluation.classification_metrics import classification_metrics, youden_threshold

    # Separable: any threshold in (0.4, 0.7] is perfect; the middle is 0.55.
    scores, targets = torch.tensor([0.2, 0.4, 0.7, 0.8, 0.9]), torch.tensor([0, 0, 1, 1, 1])
    assert youden_threshold(scores, targets) == pytest.approx(0.55)
    assert classification_metrics(torch.stack([1 - scores, scores], 1), targets, 0.55) == {"auc": 1.0, "acc": 1.0}
    # A negative at 0.75 above a positive at 0.7: J is best (2/3) for thresholds in (0.75, 0.8].
    assert youden_threshold(torch.tensor([0.2, 0.75, 0.7, 0.8, 0.9]), targets) == pytest.approx(0.775)
    assert youden_threshold(scores, torch.ones(5)) == 0.5  # one class: no ROC, the default


def test_prior_matched_threshold_calls_the_prior_share_positive():
    from workbench.evaluation.classification_metrics import prior_matched_threshold

    scores = torch.arange(100) / 100  # 0.00 .. 0.99
    threshold = prior_matched_threshold(scores, 0.25)
    assert int((scores >= threshold).sum()) == 25 and threshold == pytest.approx(0.7425)
    for share in (0.0, 1.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            prior_matched_threshold(scores, share)


def test_prior_threshold_matches_the_labeled_prior_on_the_unlabeled_training_images(tmp_path):
    from workbench.runner import build

    cfg = compose_train(["task=classification", "task.threshold=prior", "data.label_fraction=0.5"], tmp_path)
    datamodule, model, trainer = build(cfg, "task")
    trainer.test(model, datamodule=datamodule, verbose=False)
    threshold = float(trainer.callback_metrics["test/threshold"])
    labeled = [int(r["label"]) for r in datamodule.subsets["labeled"]]
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(b["image"]).softmax(1)[:, 1] for b in datamodule.eval_dataloader("unlabeled_train")])
    assert len(scores) == len(datamodule.subsets["unlabeled_train"]) > 10
    # The untrained model's scores are spread, so the share called positive is the prior to within one image.
    assert abs(float((scores >= threshold).float().mean()) - sum(labeled) / len(labeled)) <= 1 / len(scores) + 1e-6
    assert threshold == pytest.approx(float(model.decision_threshold))

    cfg = compose_train(["task=classification", "task.threshold=prior"], tmp_path / "all-labels")
    datamodule, model, trainer = build(cfg, "task")
    with pytest.raises(WorkbenchError, match="needs unlabeled training images"):
        trainer.test(model, datamodule=datamodule, verbose=False)


def test_a_budget_in_optimizer_steps_trains_that_many_steps_with_warm_up_in_epochs(tmp_path):
    """One recipe means the same training on 50 or 50,000 images when its budget is in steps
    (trainer.max_steps); settings counted in epochs still count the loader's real epochs."""
    from pytorch_lightning import Callback

    from workbench.runner import build

    class Schedule(Callback):
        def on_train_start(self, trainer, pl_module):
            self.factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]

    data = ["data.source.num_train=40", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8", "task.width=0.25"]
    cfg = compose_train([*data, "trainer.max_steps=13", "trainer.max_epochs=-1", "task.warmup_epochs=1", "logger=none"], tmp_path)
    datamodule, model, trainer = build(cfg, "task")
    schedule = Schedule()
    trainer.callbacks.append(schedule)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 13  # 5 batches an epoch: 2 whole epochs, then 3 steps of the third
    # last.ckpt holds the weights the budget ended with (what selection=last tests and ensembles)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 13
    assert schedule.factor(0) == pytest.approx(1 / 6) and schedule.factor(4) == pytest.approx(5 / 6)  # one epoch of warm-up
    assert schedule.factor(5) == pytest.approx(1.0) and schedule.factor(13) == pytest.approx(0.0, abs=1e-6)  # cosine to 0 at step 13


def test_three_class_auc_is_the_macro_mean_of_one_vs_rest_aucs_computed_by_hand():
    """RetinaMNIST-style scoring: macro one-vs-rest AUC (not weighted by class size) and argmax
    accuracy, on imbalanced classes where macro and weighted differ."""
    from workbench.evaluation.classification_metrics import classification_metrics

    g = torch.Generator().manual_seed(0)
    targets = torch.tensor([0] * 12 + [1] * 5 + [2] * 3)
    probs = (torch.rand(20, 3, generator=g) + 0.6 * torch.nn.functional.one_hot(targets, 3)).softmax(1)

    def one_vs_rest(c: int) -> float:
        pos, neg = probs[targets == c, c], probs[targets != c, c]
        return float(((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()).mean())

    aucs = [one_vs_rest(c) for c in range(3)]
    weighted = sum(a * int((targets == c).sum()) for c, a in enumerate(aucs)) / 20
    metrics = classification_metrics(probs, targets)
    assert metrics["auc"] == pytest.approx(sum(aucs) / 3, abs=1e-6) and abs(metrics["auc"] - weighted) > 1e-3
    assert metrics["acc"] == pytest.approx(float((probs.argmax(1) == targets).float().mean()))


def test_the_test_split_is_scored_at_the_selected_checkpoint_s_validation_threshold(tmp_path):
    """task.threshold=val: the threshold is chosen on the val subset and stored with the
    checkpoint; the test uses that one, never one fitted to the test labels."""
    data = ["data.source.num_train=40", "data.source.num_val=10", "data.source.num_test=40", "data.batch_size=8", "task.width=0.25"]
    metrics = train(compose_train([*data, "trainer.max_epochs=2", "task.threshold=val"], tmp_path))
    stored = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]["decision_threshold"]
    assert metrics["test/threshold"] == pytest.approx(float(stored))


def concentric_spheres(inner: int, outer: int, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict a ball of radius `outer`, and a label ball of radius `inner`, same centre:
    every boundary point of one lies `outer - inner` from the other's boundary."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    radius = (grid - size // 2).norm(dim=0)
    label = (radius <= inner).long()[None, None]
    logits = torch.nn.functional.one_hot((radius <= outer).long(), 2).movedim(-1, 0)[None].float()
    return logits, label


@pytest.mark.parametrize("spacing", [None, (2.0, 2.0, 2.0)])
def test_hd95_and_surface_dice_of_two_concentric_spheres_are_their_radial_gap(spacing):
    """Radii 8 and 12 voxels: HD95 is the 4-voxel gap (to within the grid's half-diagonal), in
    spacing units; surface Dice is 1 at a tolerance above the gap and 0 below it; Dice is
    2 * 8^3 / (8^3 + 12^3) of the continuous balls, to within the grid."""
    from workbench.evaluation.segmentation_metrics import surface_metrics

    logits, label = concentric_spheres(8, 12)
    unit = spacing[0] if spacing else 1.0
    above, below = (surface_metrics(logits, label, 2, spacing, tolerance) for tolerance in (6.0 * unit, 2.0 * unit))
    assert above["hd95"].item() == pytest.approx(4.0 * unit, abs=0.5 * unit)
    assert above["surface_dice"].item() == 1.0 and below["surface_dice"].item() == 0.0
    assert above["dice"].item() == pytest.approx(2 * 8**3 / (8**3 + 12**3), abs=0.01)
