"""Interrupted runs resume, seeded runs reproduce, checkpoints load safely, secrets stay out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import REPO, compose_train, run_cli, write_png
from workbench.data import ArchiveSource, MedicalDataModule
from workbench.errors import WorkbenchError
from workbench.generate import generate
from workbench.generators.base import GeneratorModule
from workbench.generators.loading import CLASS_KEY, load_module
from workbench.generators.quality import FeatureNetwork
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.models.ensemble import checkpoint_ensemble
from workbench.pipeline import pipeline
from workbench.pretrain import pretrain
from workbench.synthesize import synthesize
from workbench.tasks.classification import ClassificationTask
from workbench.train import train

SMALL = ["data.source.num_train=48", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8"]


def test_kill_9_during_training_then_resume_finishes_the_same_steps(tmp_path):
    args = ["workbench.train", f"paths.log_dir={tmp_path}", "trainer.max_epochs=4", *SMALL]
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    last = []
    while time.time() < deadline and not last:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        last = list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt"))
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last, "no checkpoint appeared"
    run = last[0].parents[1]
    assert not (run / "metrics.json").exists()  # the killed run wrote no summary
    resumed_from = torch.load(last[0], map_location="cpu", weights_only=True)
    assert resumed_from["global_step"] < 4 * 6

    result = run_cli([*args, f"ckpt_path={last[0]}"], REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(tmp_path.glob("train/runs/*/metrics.json"))
    metrics = json.loads(runs[-1].read_text())
    assert metrics["steps"] == 4 * 6 and metrics["epochs"] == 4  # 48 images / batch 8 = 6 steps per epoch
    assert "test/auc" in metrics


class LastCheckpointFollows(pl.Callback):
    """Fails the run unless checkpoints/last.ckpt holds the epoch just finished when the next
    starts: what a resume after a kill would continue from."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            return
        last = torch.load(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["epoch"] == trainer.current_epoch - 1, f"last.ckpt holds epoch {last['epoch']} at the start of {trainer.current_epoch}"


LAST_FOLLOWS = "+callbacks.last_follows._target_=tests.test_reliability.LastCheckpointFollows"


@pytest.mark.parametrize(
    "command, config, overrides",
    [
        # The monitored checkpoint stays at epoch 0 (train loss only falls), and last.ckpt still moves on.
        (train, "train", ["monitor.metric=train/loss", "monitor.mode=max", "task.width=0.25"]),
        (pretrain, "pretrain", ["ssl=simclr", "ssl.width=0.25", "data.source.size=16", "data.pretrain_views.size=16"]),
        (synthesize, "synthesize", ["generator=dcgan", "generator.generator_channels=8", "generator.discriminator_channels=8"]),
    ],
    ids=["train", "pretrain", "synthesize"],
)
def test_last_checkpoint_is_every_epochs_end(tmp_path, command, config, overrides):
    tiny = ["data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8", "trainer.max_epochs=3"]
    metrics = command(compose_train([*overrides, *tiny, LAST_FOLLOWS], tmp_path, config_name=config))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == metrics["steps"]
    if command is train:
        assert metrics["best_checkpoint"].endswith("epoch000.ckpt")


class RecordStartStep(pl.Callback):
    """Writes the optimizer step a fit starts from: a resumed fit starts at its checkpoint's."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        (Path(trainer.default_root_dir) / "start_step.json").write_text(json.dumps(trainer.global_step))


@pytest.mark.parametrize(
    "command, config, overrides",
    [
        (train, "train", ["task.width=0.25"]),
        (pretrain, "pretrain", ["ssl=simclr", "ssl.width=0.25", "data.source.size=16", "data.pretrain_views.size=16"]),
        (synthesize, "synthesize", ["generator=dcgan", "generator.generator_channels=8", "generator.discriminator_channels=8"]),
    ],
    ids=["train", "pretrain", "synthesize"],
)
def test_a_resumed_run_continues_from_its_checkpoint_not_from_scratch(tmp_path, command, config, overrides):
    """Resuming with ckpt_path=<run>/checkpoints/last.ckpt starts at that checkpoint's step and
    trains only the remaining epochs; starting over would end at the same step count too."""
    tiny = ["data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8"]
    command(compose_train([*overrides, *tiny, "trainer.max_epochs=2"], tmp_path / "first", config_name=config))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    record = "+callbacks.start_step._target_=tests.test_reliability.RecordStartStep"
    resumed = command(compose_train([*overrides, *tiny, "trainer.max_epochs=3", f"ckpt_path={last}", record], tmp_path / "resumed", config_name=config))
    saved = torch.load(last, weights_only=True)["global_step"]  # two epochs' steps (the GAN counts both optimizers')
    assert json.loads((tmp_path / "resumed" / "start_step.json").read_text()) == saved > 0
    assert resumed["steps"] == saved * 3 // 2 and resumed["epochs"] == 3
    epochs = [line.split(",")[0] for line in (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["2"]  # the resumed run's own history: the one epoch it trained


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_split_and_metrics_other_seed_other_split(tmp_path, workers):
    """Augmentations drawn in DataLoader worker processes are seeded from the run's seed too."""

    def run(seed: int, name: str) -> tuple[dict, list]:
        cfg = compose_train([f"seed={seed}", "trainer.max_epochs=1", "data.label_fraction=0.5", f"data.num_workers={workers}", *SMALL],
                            tmp_path / name)
        metrics = train(cfg)
        split = json.loads((tmp_path / name / "split.json").read_text())
        return {k: v for k, v in metrics.items() if k.startswith(("test/", "best_val"))}, split["labeled_ids"]

    a_metrics, a_split = run(0, "a")
    b_metrics, b_split = run(0, "b")
    _, c_split = run(1, "c")
    assert a_split == b_split and a_metrics == b_metrics  # identical on CPU, augmentation included
    assert a_split != c_split


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    made = ClassificationTask(in_channels=1, num_classes=2, backbone="resnet18")
    path = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": made.state_dict(), "hyper_parameters": dict(made.hparams)}, path)
    other = ClassificationTask(in_channels=1, num_classes=2, backbone="densenet121")
    with pytest.raises(WorkbenchError, match=r"resnet\.ckpt: checkpoint of another architecture \(backbone=resnet18.*expected backbone=densenet121"):
        check_checkpoint_fits(path, other)
    assert check_checkpoint_fits(path, ClassificationTask(in_channels=1, num_classes=2))["state_dict"]
    cfg = compose_train(["task.backbone=densenet121", f"ckpt_path={path}", *SMALL], tmp_path / "run")
    with pytest.raises(WorkbenchError, match="checkpoint of another architecture"):
        train(cfg)


class _Payload:
    """Unpickling this would create a file: the loader must refuse before running it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _classifier() -> ClassificationTask:
    return ClassificationTask(in_channels=1, num_classes=2, width=0.25)


# Every way a file of weights enters the workbench: resume and evaluate (a checkpoint), an
# evaluated ensemble, a generator for `workbench generate`, a pretrained backbone
# (task.pretrained) and the synthesis metrics' feature network (generate.features).
LOADERS = {
    "checkpoint": ("evil.ckpt", lambda path: check_checkpoint_fits(path, _classifier())),
    "ensemble": ("evil.ckpt", lambda path: checkpoint_ensemble(_classifier(), [path, path])),
    "generator": ("evil.ckpt", lambda path: load_module(path, GeneratorModule)),
    "task.pretrained": ("backbone.pt", lambda path: ClassificationTask(in_channels=1, num_classes=2, width=0.25, pretrained=str(path))),
    "generate.features": ("backbone.pt", lambda path: FeatureNetwork.from_backbone(path)),
}


@pytest.mark.parametrize("loader", LOADERS)
def test_a_malicious_pickle_is_refused_by_every_load_path_before_it_runs(tmp_path, loader):
    name, load = LOADERS[loader]
    marker = tmp_path / "payload-ran"
    path = tmp_path / name
    torch.save({"state_dict": {}, "extra": _Payload(str(marker))}, path)
    meta = {"method": "test", "backbone": "resnet18", "spatial_dims": 2, "in_channels": 1, "small_input": True, "width": 0.25}
    path.with_suffix(".json").write_text(json.dumps(meta))  # a backbone's provenance that fits, for the backbone loaders
    with pytest.raises(WorkbenchError, match=rf"{name}: refused: it holds pickled objects besides tensors") as refused:
        load(path)
    assert not marker.exists() and "weights_only" not in str(refused.value)  # never advice to switch the check off
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(WorkbenchError, match=r"junk\.ckpt: not a loadable checkpoint"):
        check_checkpoint_fits(tmp_path / "junk.ckpt", _classifier())


def test_a_generator_checkpoint_naming_a_class_outside_the_workbench_imports_nothing(tmp_path, monkeypatch):
    (tmp_path / "planted.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w')\nclass Generator: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, CLASS_KEY: "planted.Generator"}, path)
    with pytest.raises(WorkbenchError, match=r"other\.ckpt: not a GeneratorModule checkpoint \(it names class 'planted.Generator'\)"):
        load_module(path, GeneratorModule)
    assert not (tmp_path / "imported").exists()


def test_archive_of_mixed_shapes_needs_image_size(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((10, 12), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(WorkbenchError, match=rf"{tmp_path}: images of 2 different shapes .* set data.image_size"):
        MedicalDataModule(ArchiveSource(str(tmp_path))).setup()
    dm = MedicalDataModule(ArchiveSource(str(tmp_path)), image_size=16)
    dm.setup()
    assert next(iter(dm.unlabeled_dataloader()))["image"].shape == (2, 1, 16, 16)


def _network_isolated() -> list[str]:
    """`unshare -n` (a network namespace with only loopback) where the system allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def test_wandb_offline_by_default_and_no_secrets_written(tmp_path):
    secret = "sk-test-0123456789abcdef"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY=secret, PYTHONWARNINGS="ignore")
    cmd = [
        *_network_isolated(), sys.executable, "-m", "workbench.train", "logger=wandb", f"paths.log_dir={tmp_path}",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=2", f"+notes.api_token={secret}", *SMALL,
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = list(tmp_path.glob("train/runs/*"))
    assert list(run.glob("wandb/offline-run-*")), "wandb did not log offline"
    assert "api_token: <redacted>" in (run / "config.yaml").read_text()
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret written to {path}"


def kill_when(proc: subprocess.Popen, appeared: Callable[[], list[Path]], what: str) -> list[Path]:
    """kill -9 the process group of `proc` as soon as `appeared()` finds files; returns them."""
    deadline, found = time.time() + 300, []
    while time.time() < deadline and not found:
        assert proc.poll() is None, f"the run ended before {what}"
        found = appeared()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert found, f"{what} never happened"
    return found


def started(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


PIPELINE = ["recipe=ssl", "selection=val", "label_fraction=0.5", "common=['data.source.num_train=24','data.source.num_val=8','data.source.num_test=8','data.batch_size=8']",
            "stages.pretrain=['ssl.width=0.25','trainer.max_epochs=1','data.pretrain_views.size=16']",
            "stages.finetune=['task.width=0.25','trainer.max_epochs=6']", "stages.baseline=null"]


def test_kill_9_during_a_pipeline_then_rerun_redoes_only_the_unfinished_stage(tmp_path):
    """Killed while finetuning: the rerun reuses the finished pretraining, redoes the finetune
    stage whole, and ends with an uninterrupted run's test metrics."""
    args = ["workbench.pipeline", *PIPELINE, f"cache_dir={tmp_path / 'stages'}", f"hydra.run.dir={tmp_path / 'run'}"]
    kill_when(started(args), lambda: list((tmp_path / "stages" / "train").glob("*/checkpoints/last.ckpt")), "the finetune stage saved an epoch")
    assert not (tmp_path / "run" / "report.md").exists()
    result = run_cli(args, REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rerun["stages"]["pretrain"]["reused"] and not rerun["stages"]["finetune"]["reused"]
    uninterrupted = pipeline(compose_train([*PIPELINE, f"cache_dir={tmp_path / 'fresh'}"], tmp_path / "fresh_run", config_name="pipeline"))
    assert rerun["test/auc"] == uninterrupted["test/auc"] and rerun["test/acc"] == uninterrupted["test/acc"]


def test_kill_9_during_generate_leaves_no_partial_export_and_a_rerun_completes_it(tmp_path):
    synthesize(compose_train(["generator=ddpm", "generator.channels=[8,16]", "generator.attention_levels=[false,false]",
                              "generator.norm_num_groups=8", "generator.num_head_channels=8", "data.source.size=16",
                              "data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8",
                              "trainer.max_epochs=1", "generate.n_per_class=0"], tmp_path / "gen_run", config_name="synthesize"))
    sampling = [f"run_dir={tmp_path / 'gen_run'}", "generate.n_per_class=64", "generate.steps=40", "generate.batch_size=8", "generate.quality=false"]
    args = ["workbench.generate", *sampling, f"hydra.run.dir={tmp_path / 'export'}"]
    kill_when(started(args), lambda: list((tmp_path / "export").glob("config.yaml")), "generate started sampling")
    assert not (tmp_path / "export" / "synthetic").exists()  # nothing half-written is visible
    result = run_cli(args, REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    generate(compose_train(sampling, tmp_path / "uninterrupted", config_name="generate"))
    rerun, whole = tmp_path / "export" / "synthetic", tmp_path / "uninterrupted" / "synthetic"
    assert not list((tmp_path / "export").glob(".synthetic.partial*"))
    assert [p.read_bytes() for p in sorted((rerun / "images").iterdir())] == [p.read_bytes() for p in sorted((whole / "images").iterdir())]
    assert json.loads((rerun / "manifest.json").read_text())["files_sha256"] == json.loads((whole / "manifest.json").read_text())["files_sha256"]
