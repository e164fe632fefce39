"""Semi-supervised and few-shot methods: each takes real training steps on phantoms through the
`train` function the command runs; their losses, masks, thresholds, EMA updates and episodes are
checked on constructed inputs with known answers."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate

from tests.conftest import EVERY_PARAMETER_LEARNS, REPO, compose_train, run_cli
from workbench.data.episodes import EpisodeSampler
from workbench.errors import WorkbenchError
from workbench.models.ema import EMATeacher, ema_decay
from workbench.semi.base import sigmoid_rampup
from workbench.semi.cps import cross_pseudo_loss
from workbench.semi.fixmatch import FixMatch, align_distribution, confident_pseudo_label_loss
from workbench.semi.freematch import FreeMatch, fairness_loss, freematch_mask, update_thresholds
from workbench.semi.protonet import class_prototypes, episode_accuracy
from workbench.semi.ua_mt import uncertainty_masked_mse
from workbench.train import train

TINY_2D = ["data.source.num_train=40", "data.source.num_val=8", "data.source.num_test=8", "data.label_fraction=0.25", "data.batch_size=4"]
TINY_3D = ["data=phantom3d", "data.source.size=16", "data.source.num_train=8", "data.source.num_val=2", "data.source.num_test=2",
           "data.label_fraction=0.5", "data.batch_size=2", "task.channels=[8,16,32]"]
STEPS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=fixmatch", "task.backbone=resnet18", "task.width=0.25", *TINY_2D],
        ["task=freematch", "task.width=0.25", *TINY_2D],
        ["task=mean_teacher", "task.width=0.25", *TINY_2D],
        ["task=seg_mean_teacher", "task.channels=[8,16,32]", *TINY_2D],
        ["task=ua_mt", "task.channels=[8,16,32]", *TINY_2D],
        ["task=cps", "task.channels=[8,16,32]", *TINY_2D],
        ["task=seg_mean_teacher", *TINY_3D],
        ["task=cps", *TINY_3D, "task.roi_size=[16,16,16]"],
        ["task=protonet", "task.width=0.25", "data.source.num_train=40", "data.source.num_val=8", "data.source.num_test=16",
         "task.eval_episodes=20", "data.episodes.n_query=2", "data.episodes.k_shot=2", "data.k_shot=6"],
    ],
    ids=["fixmatch", "freematch", "mean-teacher", "seg-mt-2d", "ua-mt-2d", "cps-2d", "seg-mt-3d", "cps-3d", "protonet"],
)
def test_every_method_trains_on_phantoms(tmp_path, overrides):
    cfg = compose_train([*overrides, *STEPS, EVERY_PARAMETER_LEARNS], tmp_path)
    metrics = train(cfg)
    assert metrics["steps"] == 2
    history = (tmp_path / "metrics.csv").read_text()
    assert "train/loss" in history
    if "task=protonet" in overrides:  # 20 test episodes: the 95% interval of their mean accuracy
        assert "test/episode_acc" in metrics and metrics["test/episode_acc_ci95"] > 0.0
    elif overrides[0] in ("task=fixmatch", "task=freematch", "task=mean_teacher"):
        assert "train/unsup_loss" in history and {"test/auc", "test/acc"} <= set(metrics)
        assert ("train/fairness_loss" in history) == (overrides[0] == "task=freematch")
    else:
        assert "train/unsup_loss" in history and "test/dice" in metrics


@pytest.mark.parametrize(
    "overrides, key, chance",
    [
        (["task=fixmatch", "task.width=0.25", "data.unlabeled_ratio=2", "+trainer.limit_train_batches=10"], "test/auc", 0.5),
        (["task=cps", "task.channels=[8,16,32]", "+trainer.limit_train_batches=10"], "test/dice", None),
    ],
    ids=["fixmatch", "cps"],
)
def test_semi_supervised_methods_learn_the_phantoms(tmp_path, overrides, key, chance):
    """A few epochs from 20 labels and 180 unlabeled phantoms beat chance clearly: AUC above
    0.5 for FixMatch; for CPS a Dice above that of predicting the whole image foreground."""
    cfg = compose_train([*overrides, "data.label_fraction=0.1", "data.batch_size=8", "trainer.max_epochs=5"], tmp_path)
    metrics = train(cfg)
    if chance is None:  # Dice of an all-foreground prediction: 2 |mask| / (|mask| + |image|)
        datamodule = instantiate(cfg.data, output_dir=None)
        datamodule.setup("test")
        masks = torch.cat([b["label"] for b in datamodule.test_dataloader()]).flatten(1).float()
        chance = float((2 * masks.sum(1) / (masks.sum(1) + masks.shape[1])).mean())
    assert metrics[key] > chance + 0.2, (metrics[key], chance)


def test_semi_supervised_task_without_unlabeled_batches_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="data.mode=semi needs data.unlabeled_ratio"):
        train(compose_train(["task=fixmatch", "data.unlabeled_ratio=null", *TINY_2D, *STEPS], tmp_path))


def test_fixmatch_evaluates_and_exports_its_ema_model(tmp_path):
    cfg = compose_train(["task=fixmatch", "task.width=0.25", "task.ema_decay=0.5", *TINY_2D, *STEPS], tmp_path)
    metrics = train(cfg)
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    exported = torch.load(metrics["backbone"], weights_only=True)
    for name, value in exported.items():
        assert torch.equal(value, state[f"teacher.model.0.{name}"]), name
    # The EMA weights trail the trained ones; batch-norm statistics are the trained model's.
    assert not torch.equal(state["teacher.model.0.conv1.weight"], state["backbone.conv1.weight"])
    assert torch.equal(state["teacher.model.0.bn1.running_mean"], state["backbone.bn1.running_mean"])
    assert state["backbone.bn1.running_mean"].abs().sum() > 0


def test_fixmatch_refuses_an_ema_decay_outside_0_1():
    with pytest.raises(WorkbenchError, match=r"task.ema_decay=1.5: expected a decay in \(0, 1\)"):
        FixMatch(in_channels=1, num_classes=2, width=0.25, ema_decay=1.5)


def test_fixmatch_masks_low_confidence_pseudo_labels():
    # Rows: confident class 1 (p=0.99), unsure (p=0.6), confident class 0 (p=0.97).
    p = torch.tensor([[0.01, 0.99], [0.4, 0.6], [0.97, 0.03]])
    logits_strong = torch.tensor([[0.0, 2.0], [3.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss, mask = confident_pseudo_label_loss(p, logits_strong, threshold=0.95)
    assert mask.tolist() == [1.0, 0.0, 1.0]
    expected = (F.cross_entropy(logits_strong[0:1], torch.tensor([1])) + F.cross_entropy(logits_strong[2:3], torch.tensor([0]))) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits_strong.grad[1].abs().sum() == 0  # the unsure item teaches nothing


def test_distribution_alignment_scales_by_target_over_predicted_share():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    aligned = align_distribution(probs, torch.tensor([0.5, 0.5]), torch.tensor([0.75, 0.25]))
    # (0.9/0.75, 0.1/0.25) * 0.5 = (0.6, 0.2) -> (0.75, 0.25); (0.4, 0.8) -> (1/3, 2/3)
    assert torch.allclose(aligned, torch.tensor([[0.75, 0.25], [1 / 3, 2 / 3]]))
    # A model that already predicts the target prior keeps its probabilities.
    assert torch.allclose(align_distribution(probs, torch.tensor([0.7, 0.3]), torch.tensor([0.7, 0.3])), probs)


def test_fixmatch_aligns_pseudo_labels_to_the_labeled_prior(tmp_path):
    cfg = compose_train(["task=fixmatch", "task.width=0.25", "task.distribution_alignment=true", "task.alignment_momentum=0.5",
                         *TINY_2D, *STEPS], tmp_path)
    metrics = train(cfg)
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    labels = torch.tensor([int(r["label"]) for r in datamodule.subsets["labeled"]])
    assert torch.allclose(state["labeled_prior"], torch.bincount(labels, minlength=2) / len(labels))
    # Two steps at momentum 0.5 move the running prediction off its start (the labeled prior).
    assert state["predicted_prior"].sum().item() == pytest.approx(1.0)
    assert not torch.allclose(state["predicted_prior"], state["labeled_prior"])
    assert "train/predicted_share_class1" in (tmp_path / "metrics.csv").read_text()


def test_distribution_alignment_needs_every_class_among_the_labels():
    model = FixMatch(in_channels=1, num_classes=3, width=0.25, distribution_alignment=True, class_prior=[0.5, 0.0, 0.5])
    with pytest.raises(WorkbenchError, match=r"task.distribution_alignment=true needs every class among the labeled images; classes \[1\] have none"):
        model.on_fit_start()


def test_freematch_thresholds_adapt_per_class():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    conf, cls = update_thresholds(probs, torch.tensor(0.5), torch.tensor([0.5, 0.5]), momentum=0.5)
    assert conf.item() == pytest.approx(0.5 * 0.5 + 0.5 * (0.9 + 0.8 + 0.7) / 3)
    assert cls.tolist() == pytest.approx([0.5 * 0.5 + 0.5 * 2.0 / 3, 0.5 * 0.5 + 0.5 * 1.0 / 3])
    mask, pseudo = freematch_mask(probs, conf, cls)
    # class 0 threshold = conf (it is the most predicted); class 1's is scaled down by 0.4167/0.5833
    assert pseudo.tolist() == [0, 0, 1]
    assert mask.tolist() == [1.0, 1.0, 1.0]
    mask, _ = freematch_mask(probs, torch.tensor(0.85), cls)
    assert mask.tolist() == [1.0, 0.0, 1.0]  # 0.8 < 0.85 for class 0; class 1 needs 0.85 * 5/7 = 0.607


def test_freematch_fairness_loss_on_known_predictions():
    uniform = torch.tensor([0.5, 0.5])
    logits = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]).log().requires_grad_()
    # Kept: rows 0 and 1, one hard label each, so the batch histogram is uniform and the mean
    # prediction (0.55, 0.45) stays as it is; the running distribution is uniform too.
    loss = fairness_loss(logits, torch.tensor([1.0, 1.0, 0.0]), uniform, uniform)
    assert loss.item() == pytest.approx(0.5 * math.log(0.55) + 0.5 * math.log(0.45), rel=1e-5)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0  # only kept items learn
    # A class missing from the kept hard labels gets no share, and no NaN gradient.
    lopsided = torch.tensor([[0.8, 0.2], [0.9, 0.1]]).log().requires_grad_()
    loss = fairness_loss(lopsided, torch.ones(2), torch.tensor([0.7, 0.3]), uniform)
    loss.backward()
    assert loss.item() == pytest.approx(0.3 * math.log(1e-12), rel=1e-4) and torch.isfinite(lopsided.grad).all()
    assert fairness_loss(logits, torch.zeros(3), uniform, uniform).item() == 0.0


def test_freematch_loads_a_checkpoint_from_before_its_label_histogram():
    model = FreeMatch(in_channels=1, num_classes=2, width=0.25)
    checkpoint = {"state_dict": {k: v for k, v in model.state_dict().items() if k != "label_hist"}}
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])  # strict
    assert model.label_hist.tolist() == [0.5, 0.5]


def test_ema_teacher_update_is_the_weighted_average():
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student)
    before = teacher.model.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student, decay=0.9)
    assert torch.allclose(teacher.model.weight, 0.9 * before + 0.1 * student.weight)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert ema_decay(0, 0.99) == 0.0 and ema_decay(1, 0.99) == 0.5 and ema_decay(10_000, 0.99) == 0.99
    assert sigmoid_rampup(0.0) == pytest.approx(math.exp(-5)) and sigmoid_rampup(1.0) == 1.0


def test_uncertainty_mask_keeps_only_confident_voxels():
    teacher = torch.tensor([[[[0.99, 0.5]], [[0.01, 0.5]]]])  # (1, 2 classes, 1, 2): certain, then maximally unsure
    student = torch.zeros(1, 2, 1, 2)  # softmax 0.5 / 0.5 everywhere
    loss, mask = uncertainty_masked_mse(student, teacher, threshold=0.75 * math.log(2))
    assert mask.flatten().tolist() == [1.0, 0.0]
    assert loss.item() == pytest.approx(((0.5 - 0.99) ** 2 + (0.5 - 0.01) ** 2) / 2, rel=1e-5)


def test_cross_pseudo_loss_uses_the_other_networks_argmax():
    a = torch.tensor([[[2.0]], [[0.0]]]).unsqueeze(0)  # predicts class 0
    b = torch.tensor([[[0.0]], [[1.0]]]).unsqueeze(0)  # predicts class 1
    expected = F.cross_entropy(a, torch.tensor([[[1]]])) + F.cross_entropy(b, torch.tensor([[[0]]]))
    assert cross_pseudo_loss(a, b).item() == pytest.approx(expected.item())


def test_episode_sampler_returns_disjoint_support_and_query():
    labels = [0] * 10 + [1] * 8 + [2] * 3  # class 2 is too small for 3 + 2 items
    sampler = EpisodeSampler(labels, n_way=2, k_shot=3, n_query=2, episodes=5, seed=1)
    episodes = list(sampler)
    assert len(episodes) == 5
    for idx in episodes:
        support, query = idx[:6], idx[6:]
        assert len(support) == 2 * 3 and len(query) == 2 * 2
        assert not set(support) & set(query) and len(set(idx)) == len(idx)
        assert [labels[i] for i in support] == [0, 0, 0, 1, 1, 1]
        assert [labels[i] for i in query] == [0, 0, 1, 1]
    assert list(EpisodeSampler(labels, 2, 3, 2, 5, seed=1)) == episodes  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != episodes  # another epoch, another draw
    # two DDP ranks: 3 episodes each (5 split, rounded up), and not the same ones
    ranks = [list(EpisodeSampler(labels, 2, 3, 2, 5, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [3, 3] and ranks[0] != ranks[1]
    with pytest.raises(WorkbenchError, match="3-way 3-shot with 2 queries needs 3 classes with at least 5 items"):
        EpisodeSampler(labels, n_way=3, k_shot=3, n_query=2, episodes=1)


def test_prototypes_and_episode_accuracy_on_separable_features():
    features = torch.tensor([[0.0, 0.0], [0.0, 0.2], [5.0, 5.0], [5.2, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(class_prototypes(features, labels, 2), torch.tensor([[0.0, 0.1], [5.1, 5.0]]))
    with pytest.raises(WorkbenchError, match=r"classes \[2\] have no labeled images"):
        class_prototypes(features, labels, 3)
    clusters = torch.cat([torch.randn(20, 4) * 0.1, torch.randn(20, 4) * 0.1 + 3.0])
    acc, ci = episode_accuracy(clusters, torch.tensor([0] * 20 + [1] * 20), 2, 3, 4, episodes=30)
    assert acc == 1.0 and ci == 0.0
    acc, ci = episode_accuracy(torch.randn(40, 4), torch.tensor([0, 1] * 20), 2, 3, 4, episodes=200)
    assert 0.35 < acc < 0.65 and 0.0 < ci < 0.05  # random features: chance, with a narrow interval


def test_rampup_counts_steps_of_the_real_epoch_length():

    from workbench.semi.seg_mean_teacher import MeanTeacherSegmentation

    model = MeanTeacherSegmentation(in_channels=1, num_classes=2, channels=(4, 8), rampup_epochs=5)
    # max_epochs=-1 under max_steps must not matter: 10 batches an epoch, step 25 of a 50-step ramp
    model._trainer = SimpleNamespace(num_training_batches=10, global_step=25, max_epochs=-1)
    assert model.rampup() == pytest.approx(math.exp(-5 * 0.5**2))
    model._trainer.global_step = 80
    assert model.rampup() == 1.0


def test_k_shot_linear_probe_trains_only_the_head_of_a_pretrained_backbone(tmp_path):
    from workbench.ssl import SimCLR

    SimCLR(in_channels=1, width=0.25).export(tmp_path / "pre")
    before = torch.load(tmp_path / "pre" / "backbone.pt", weights_only=True)
    cfg = compose_train(["task.width=0.25", "data.k_shot=5", f"task.pretrained={tmp_path / 'pre'}", "task.freeze_backbone=true",
                         "data.batch_size=4", *STEPS], tmp_path / "probe")
    metrics = train(cfg)
    assert metrics["labeled_images"] == 10  # 5 per class
    state = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    assert all(torch.equal(backbone[k], v) for k, v in before.items())  # frozen, batch-norm statistics included
    head = [v for k, v in state.items() if k.startswith("head.")]
    assert head and metrics["steps"] == 2


def test_episodic_training_runs_under_two_process_ddp(tmp_path):
    """A prototypical network on 2 CPU processes: each rank trains on its own episodes, the ranks
    stay in step, and every rank classifies against the prototypes of the whole labeled view
    (each rank embeds only its share of it)."""
    result = run_cli(
        ["workbench.train", "task=protonet", "task.width=0.25", "trainer=ddp_cpu", "trainer.max_epochs=1",
         "data.source.num_train=40", "data.source.num_val=8", "data.source.num_test=16", "data.k_shot=7",
         "data.episodes.k_shot=2", "data.episodes.n_query=2", "data.episodes.per_epoch=4", "task.eval_episodes=20",
         "+callbacks.rank_weights._target_=tests.ddp_checks.RankWeights",
         "+callbacks.rank_prototypes._target_=tests.ddp_checks.RankPrototypes", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    weights = json.loads((tmp_path / "rank_weights.json").read_text())
    assert weights["world_size"] == 2 and weights["max_rank_difference"] < 1e-6 < weights["max_training_change"]
    prototypes = json.loads((tmp_path / "rank_prototypes.json").read_text())
    assert prototypes["labeled_images"] == 14  # 7 per class, split 7 + 7 between the ranks
    assert prototypes["max_difference_from_one_process"] < 1e-5
    episodes = prototypes["episodes_per_rank"]  # the ids of each rank's training episodes
    assert [len(e) for e in episodes] == [2, 2] and not set(map(tuple, episodes[0])) & set(map(tuple, episodes[1]))
    assert json.loads((tmp_path / "metrics.json").read_text())["test/episode_acc_ci95"] > 0.0  # the test episodes ran
