"""The pipeline, its cache and report, Hydra sweeps and launchers, and multi-process evaluation:
small real runs on phantoms, through the commands a user types."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import get_class

from tests.conftest import REPO, SHARED_DATA, compose_train
from tests.test_cli import RANK_WEIGHTS, WORKBENCH, assert_ranks_trained_in_step, run_dir_of, workbench
from workbench.errors import WorkbenchError
from workbench.evaluate import evaluate
from workbench.evaluation.report import aggregate, ci95, medmnist_baselines, write_report
from workbench.models.checkpoints import load_checkpoint
from workbench.pipeline import pipeline
from workbench.runner import build
from workbench.stages import compose_stage, quoted_list
from workbench.sweeps import study_storage
from workbench.train import train

TINY = ["data.source.num_train=40", "data.source.num_val=10", "data.source.num_test=10", "data.batch_size=8"]
TINY_TRAIN = [*TINY, "trainer.max_epochs=1", "task.width=0.25"]


def test_pipeline_chains_every_stage_and_a_rerun_reuses_them(tmp_path):
    overrides = [
        "recipe=all", "selection=val", "label_fraction=0.25", f"common={quoted_list(TINY)}", f"cache_dir={tmp_path / 'stages'}",
        f"stages.pretrain={quoted_list(['ssl=simclr', 'ssl.width=0.25', 'trainer.max_epochs=1', '+trainer.limit_train_batches=2'])}",
        f"stages.synthesize={quoted_list(['generator=ddpm', 'generator.channels=[16,32]', 'generator.attention_levels=[false,false]', 'generator.norm_num_groups=8', 'generator.num_head_channels=16', 'trainer.max_epochs=1', '+trainer.limit_train_batches=2', 'generate.n_per_class=4', 'generate.steps=2', 'generate.quality=false'])}",
        f"stages.finetune={quoted_list(['task=fixmatch', 'trainer.max_epochs=1', '+trainer.limit_train_batches=2', 'data.unlabeled_ratio=1'])}",
        f"stages.baseline={quoted_list(['trainer.max_epochs=1'])}",
    ]
    first = pipeline(compose_train(overrides, tmp_path / "first", config_name="pipeline"))
    assert [s["reused"] for s in first["stages"].values()] == [False, False, False, False]
    report = (tmp_path / "first" / "report.md").read_text()
    assert " s sampling |" in report  # the synthesize stage's export
    pictures = [f"{stage}_curves.png" for stage in ("pretrain", "synthesize", "finetune", "baseline")] + ["real_samples.png", "synthetic_samples.png", "label_efficiency.png", "roc.png"]
    assert [p for p in pictures if f"(figures/{p})" not in report or (tmp_path / "first" / "figures" / p).stat().st_size < 1000] == []
    train_cfg = stage_config(first, "finetune")
    assert train_cfg["task"]["pretrained"] == first["stages"]["pretrain"]["run_dir"]
    assert train_cfg["task"]["width"] == 0.25  # the pretrained backbone's width travels with it
    assert train_cfg["data"]["synthetic_source"]["path"].endswith("synthetic")
    baseline_cfg = stage_config(first, "baseline")
    assert baseline_cfg["task"]["pretrained"] is None and baseline_cfg["data"]["synthetic_source"] is None
    assert baseline_cfg["task"]["width"] == 0.25  # compared on the same architecture
    assert first["labeled_images"] == 10
    labeled = {stage: json.loads((Path(s["run_dir"]) / "split.json").read_text())["labeled_ids"] for stage, s in first["stages"].items()}
    assert labeled["pretrain"] == labeled["synthesize"] == labeled["finetune"] == labeled["baseline"]  # one label budget
    for stage, prefix in (("finetune", ""), ("baseline", "baseline/")):  # the summary reports each stage's own test
        assert first[f"{prefix}test/auc"] == json.loads((Path(first["stages"][stage]["run_dir"]) / "metrics.json").read_text())["test/auc"]

    second = pipeline(compose_train(overrides, tmp_path / "second", config_name="pipeline"))
    assert [s["reused"] for s in second["stages"].values()] == [True, True, True, True]
    assert second["test/auc"] == first["test/auc"] and second["stages"] == {k: {**v, "reused": True} for k, v in first["stages"].items()}
    report = (tmp_path / "second" / "report.md").read_text()
    assert "supervised-only baseline" in report and "reused" in report


def test_a_moved_stage_is_reused_and_another_config_never_overwrites_one(tmp_path):
    """The cache compares configs with paths inside the run's own directory made relative, so a
    finished run reached under another name is reused; a different config aimed at a finished
    run's directory is refused and leaves its files as they were."""
    import shutil

    from workbench.stages import run_stage

    overrides = [*TINY_TRAIN, "+trainer.limit_train_batches=1", "logger=csv"]
    first = run_stage(train, "train", overrides, tmp_path / "made_here")
    shutil.move(tmp_path / "made_here", tmp_path / "moved")
    reused = run_stage(train, "train", overrides, tmp_path / "moved")
    assert reused["reused"] and reused["test/auc"] == first["test/auc"] and reused["steps"] == first["steps"]
    assert reused["run_dir"] == str(tmp_path / "moved") and Path(reused["best_checkpoint"]).is_file()  # where it lies now
    before = {f: f.read_bytes() for f in (tmp_path / "moved").rglob("*") if f.is_file()}
    with pytest.raises(WorkbenchError, match=r"moved: holds a finished run of another configuration"):
        run_stage(train, "train", [*overrides, "seed=1"], tmp_path / "moved")
    assert {f: f.read_bytes() for f in (tmp_path / "moved").rglob("*") if f.is_file()} == before


def test_a_pipeline_of_two_members_scores_their_ensemble_and_a_rerun_reuses_it(tmp_path):
    overrides = ["recipe=supervised", "selection=val", "label_fraction=0.5", "members=2", f"common={quoted_list(TINY_TRAIN)}", f"cache_dir={tmp_path / 'stages'}"]
    first = pipeline(compose_train(overrides, tmp_path / "first", config_name="pipeline"))
    scored = Path(first["stages"]["finetune"]["run_dir"])
    assert scored.parent.name == "evaluate"
    members = [Path(c).parents[1] for c in json.loads((scored / "metrics.json").read_text())["checkpoint"]]
    configs = [yaml.safe_load((m / "config.yaml").read_text()) for m in members]
    assert [(c["seed"], c["data"]["split_seed"]) for c in configs] == [(0, 0), (1000, 0)]
    # The same labeled and val images, and member 0 is the single model's own run.
    assert (members[0] / "split.json").read_text() == (members[1] / "split.json").read_text()
    single = pipeline(compose_train([*overrides, "members=1"], tmp_path / "single", config_name="pipeline"))
    assert single["stages"]["finetune"] == {"run_dir": str(members[0]), "reused": True}
    assert first["labeled_images"] == 20 and first["test/auc"] == json.loads((scored / "metrics.json").read_text())["test/auc"]
    assert "| finetune (ensemble of 2 models) | " in (tmp_path / "first" / "report.md").read_text()
    second = pipeline(compose_train(overrides, tmp_path / "second", config_name="pipeline"))
    assert second["stages"]["finetune"] == {"run_dir": str(scored), "reused": True} and second["test/auc"] == first["test/auc"]


@pytest.mark.parametrize("members, expected", [
    (0, "members=0: expected 1 .one model. or more"),
    (2, "members=2: PrototypicalNetwork cannot be scored as an ensemble; expected a classifier"),
])
def test_members_the_finetune_task_cannot_ensemble_are_refused_before_any_stage_runs(tmp_path, members, expected):
    overrides = [f"members={members}", f"stages.finetune={quoted_list(['task=protonet'])}", f"cache_dir={tmp_path / 'stages'}", "recipe=ssl"]
    with pytest.raises(WorkbenchError, match=expected):
        pipeline(compose_train(overrides, tmp_path / "run", config_name="pipeline"))
    assert not (tmp_path / "stages").exists()


def test_a_bad_stage_override_is_refused_before_anything_is_written(tmp_path):
    overrides = [f"stages.finetune={quoted_list(['task.no_such_key=1'])}", f"cache_dir={tmp_path / 'stages'}", "recipe=ssl"]
    with pytest.raises(WorkbenchError, match=r"stages.finetune: Could not override 'task.no_such_key'"):
        pipeline(compose_train(overrides, tmp_path / "run", config_name="pipeline"))
    assert not (tmp_path / "stages").exists() and not (tmp_path / "run" / "config.yaml").exists()


def stage_config(summary: dict, stage: str) -> dict:
    return yaml.safe_load((Path(summary["stages"][stage]["run_dir"]) / "config.yaml").read_text())


def test_multirun_over_fractions_and_recipes_ends_with_a_report_of_every_run(tmp_path):
    result = workbench([
        "pipeline", "-m", "label_fraction=0.25,0.5", "recipe=supervised,semi", "selection=val", f"common={quoted_list(TINY_TRAIN)}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep" / "label_efficiency.json").read_text())
    runs = {(r["recipe"], r["fraction"]) for r in summary["records"]}
    assert runs == {("supervised", 0.25), ("supervised", 0.5), ("semi", 0.25), ("semi", 0.5)}
    assert {r["labeled_images"] for r in summary["records"]} == {10, 20}
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| semi | 0.25 | 10 | 1 |" in report and (tmp_path / "sweep" / "label_efficiency_auc.png").is_file()


def test_report_aggregates_seeds_with_a_t_interval(tmp_path):
    records = [{"recipe": "r", "fraction": 0.1, "seed": s, "labeled_images": 47, "auc": v} for s, v in enumerate([0.8, 0.9, 1.0])]
    (row,) = aggregate(records)
    assert row["auc"]["mean"] == pytest.approx(0.9) and row["auc"]["std"] == pytest.approx(0.1)
    assert row["auc"]["ci95"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) s / sqrt(n)
    assert ci95([0.5]) == 0.0
    assert write_report(tmp_path) is None  # nothing finished there


def test_medmnist_reference_lines_are_read_from_the_published_table():
    if not (SHARED_DATA / "medmnist_v2_baselines.md").is_file():
        pytest.skip("../shared/data is not present")
    published = medmnist_baselines(SHARED_DATA / "medmnist_v2_baselines.md", "pneumoniamnist")
    assert published["ResNet-18 (28)"] == {"auc": 0.944, "acc": 0.854}
    assert published["Google AutoML Vision"] == {"auc": 0.991, "acc": 0.946}


def test_pipeline_runs_every_stage_under_two_process_ddp(tmp_path):
    """Every rank runs the pipeline; rank 0 alone exports, and the others must still wire its
    export into finetuning. The GAN steps its two optimizers by hand with 2 discriminator steps
    per generator step (so the generator sits out some backward passes, which plain DDP rejects)
    and R1 on every step (a double backward)."""
    gan = ["generator=dcgan", "generator.generator_channels=8", "generator.discriminator_channels=8", "generator.latent_dim=8",
           "generator.discriminator_steps=2", "generator.r1_every=1", "data.batch_size=2", "trainer.max_epochs=1",
           "+trainer.limit_train_batches=2", "generate.n_per_class=2", "generate.quality=false", "callbacks.sample_grid.n_per_class=1"]
    overrides = [
        "recipe=all", "selection=val", "label_fraction=0.25", f"common={quoted_list([*TINY, 'trainer=ddp_cpu', 'logger=csv', RANK_WEIGHTS])}",
        f"stages.pretrain={quoted_list(['ssl=simclr', 'ssl.width=0.25', 'trainer.max_epochs=1', '+trainer.limit_train_batches=2'])}",
        f"stages.synthesize={quoted_list(gan)}",
        f"stages.finetune={quoted_list(['task=fixmatch', 'task.width=0.25', 'trainer.max_epochs=1', '+trainer.limit_train_batches=2', 'data.unlabeled_ratio=1'])}",
        f"stages.baseline={quoted_list(['trainer.max_epochs=1'])}", f"paths.log_dir={tmp_path}",
    ]
    result = workbench(["pipeline", *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stderr + result.stdout
    reports = [line.removeprefix("Report: ") for line in result.stdout.splitlines() if line.startswith("Report: ")]
    assert len(reports) == 1  # rank 0 alone writes the report
    stages = json.loads((Path(reports[0]).parent / "metrics.json").read_text())["stages"]
    assert list(stages) == ["pretrain", "synthesize", "finetune", "baseline"]
    synthesize = Path(stages["synthesize"]["run_dir"])
    # Each rank has 5 of the 10 labeled images, 2 batches: 2 discriminator updates and 1 generator update.
    assert json.loads((synthesize / "metrics.json").read_text())["steps"] == 3
    assert json.loads((synthesize / "synthetic" / "manifest.json").read_text())["count"] == 4  # one export, not one per rank
    for stage in stages.values():
        assert_ranks_trained_in_step(Path(stage["run_dir"]))


def test_two_process_evaluation_scores_like_one_process(tmp_path):
    data = ["data.source.num_train=24", "data.source.num_val=9", "data.source.num_test=9", "data.batch_size=8",
            "data.eval_batch_size=8", "task.width=0.25"]
    # One process runs in this one (imports are the slow part); two as a user starts them.
    train(compose_train([*data, "trainer.max_epochs=1"], tmp_path / "train"))
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    scores = {}
    # The prior threshold's 12 unlabeled training images are split 6 + 6 over the ranks, their scores gathered.
    prior = ["task.threshold=prior", "data.label_fraction=0.5", "data.val_fraction=1.0"]
    for threshold, extra in (("val", []), ("prior", prior)):
        overrides = [*data, *extra, f"ckpt_path={checkpoint}"]
        scores[threshold, "cpu"] = evaluate(compose_train(overrides, tmp_path / threshold / "cpu", config_name="evaluate"))
        result = workbench(["evaluate", *overrides, "trainer=ddp_cpu", f"paths.log_dir={tmp_path / threshold / 'ddp_cpu'}"])
        assert result.returncode == 0, result.stderr[-3000:]
        scores[threshold, "ddp_cpu"] = json.loads((run_dir_of(result) / "metrics.json").read_text())
    assert scores["val", "ddp_cpu"]["world_size"] == 2 and scores["val", "cpu"]["world_size"] == 1
    # 9 val and 9 test images split 5 + 4 over the ranks, none repeated: the same AUC, accuracy,
    # loss (a mean over images, not over the ranks' means) and threshold.
    for threshold, keys in (("val", ["val/threshold"]), ("prior", ["test/threshold"])):
        for key in ["val/auc", "val/acc", "val/loss", "test/auc", "test/acc", "test/loss", *keys]:
            assert scores[threshold, "ddp_cpu"][key] == pytest.approx(scores[threshold, "cpu"][key], abs=1e-6), (threshold, key)
    # Validation kept the checkpoint's threshold (Youden's, from training); the prior test fitted its own.
    assert scores["prior", "cpu"]["test/threshold"] != pytest.approx(scores["prior", "cpu"]["val/threshold"])


def two_members(data: list[str], directory: Path, epochs: int) -> list[Path]:
    """Two checkpoints on the same labeled images: other initial weights and batches."""
    for seed in (0, 1):
        train(compose_train([*data, f"trainer.max_epochs={epochs}", f"seed={seed}"], directory / f"member{seed}"))
    return [directory / f"member{seed}" / "checkpoints" / "last.ckpt" for seed in (0, 1)]


def evaluated(data: list[str], paths: list[Path], directory: Path) -> dict:
    return evaluate(compose_train([*data, f"ckpt_path={quoted_list([str(p) for p in paths])}"], directory, config_name="evaluate"))


def softmax_on_test_split(data: list[str], checkpoints: list[Path], directory: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each checkpoint's softmax on the test split, computed here by hand, and the labels."""
    datamodule, task, _ = build(compose_train(data, directory), "task")
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    members = []
    for path in checkpoints:
        task.load_state_dict(load_checkpoint(path)["state_dict"])
        with torch.no_grad():
            members.append(torch.cat([task.eval()(b["image"]).softmax(1) for b in batches]))
    return members, torch.cat([b["label"] for b in batches]).long()


def test_evaluating_several_checkpoints_scores_the_mean_of_their_probabilities(tmp_path):
    data = ["data.source.num_train=24", "data.source.num_val=9", "data.source.num_test=9", "data.batch_size=8",
            "data.eval_batch_size=8", "task.width=0.25", "data.split_seed=0"]
    checkpoints = two_members(data, tmp_path, epochs=1)
    alone, twice, pair = (evaluated(data, paths, tmp_path / name) for name, paths in
                          (("alone", checkpoints[:1]), ("twice", [checkpoints[0]] * 2), ("pair", checkpoints)))
    assert pair["checkpoint"] == [str(c) for c in checkpoints] and alone["checkpoint"] == str(checkpoints[0])
    for key in ("val/loss", "val/auc", "test/loss", "test/auc", "test/acc"):  # one model twice is that model
        assert twice[key] == pytest.approx(alone[key], abs=1e-5), key
    # The pair's test loss is the cross-entropy of the members' mean probabilities.
    members, labels = softmax_on_test_split(data, checkpoints, tmp_path / "by_hand")
    labels = labels.reshape(-1)
    mean = (members[0] + members[1]) / 2
    assert pair["test/loss"] == pytest.approx(float(-mean[torch.arange(len(labels)), labels].log().mean()), rel=1e-4)
    assert pair["test/loss"] != pytest.approx(alone["test/loss"], rel=1e-3)


def test_an_ensemble_of_segmentation_checkpoints_scores_the_mean_of_their_softmax(tmp_path):
    data = ["task=segmentation", "task.channels=[8,16]", "task.num_res_units=0", "data.source.size=16", "data.source.num_train=8",
            "data.source.num_val=4", "data.source.num_test=4", "data.batch_size=4", "data.split_seed=0"]
    checkpoints = two_members(data, tmp_path, epochs=2)
    alone, twice, pair = (evaluated(data, paths, tmp_path / name) for name, paths in
                          (("alone", checkpoints[:1]), ("twice", [checkpoints[0]] * 2), ("pair", checkpoints)))
    for key in ("test/loss", "test/dice"):  # one model twice is that model
        assert twice[key] == pytest.approx(alone[key], abs=1e-5), key
    # The pair's test Dice is that of the argmax of the members' mean softmax.
    members, labels = softmax_on_test_split(data, checkpoints, tmp_path / "by_hand")
    predicted = ((members[0] + members[1]) / 2).argmax(1)
    dice = [2 * ((p == 1) & (t == 1)).sum() / ((p == 1).sum() + (t == 1).sum()) if (t == 1).any() or (p == 1).any() else torch.tensor(1.0)
            for p, t in zip(predicted, labels[:, 0])]
    assert pair["test/dice"] == pytest.approx(float(torch.stack(dice).mean()), abs=1e-5)


def test_optuna_sweep_runs_two_trials(tmp_path):
    result = workbench([
        "train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
        *TINY_TRAIN, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"task.lr", "task.weight_decay", "task.label_smoothing"}
    trials = [json.loads(m.read_text()) for m in (tmp_path / "sweep").glob("*/metrics.json")]
    assert len(trials) == 2 and best["best_value"] == max(t["best_val_score"] for t in trials)  # direction: maximize


def test_two_processes_fill_one_optuna_study_through_its_journal_file(tmp_path):
    """hparams_search=optuna on current Optuna: two sweeps started at once share one journal
    study of 2 trials (as SLURM jobs would), and together they run exactly those 2 trials."""
    import optuna

    journal = tmp_path / "study.log"
    common = ["train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
              f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=shared", *TINY_TRAIN, f"paths.log_dir={tmp_path}"]
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    processes = [subprocess.Popen([str(WORKBENCH), *common, f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=study_storage(str(journal)))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    runs = [m for i in range(2) for m in (tmp_path / f"sweep{i}").glob("*/metrics.json")]
    assert len(runs) == 2  # each trial ran once, in one of the two processes
    assert sorted(json.loads(m.read_text())["best_val_score"] for m in runs) == sorted(t.value for t in study.trials)


def test_a_pruned_optuna_trial_stops_training_at_its_first_report(tmp_path):
    """A pruner that prunes every value below 2 (AUC never is above): the trial reports its first
    validation through the journal, stops there instead of training 3 epochs, and is PRUNED."""
    import optuna

    journal = tmp_path / "study.log"
    result = workbench([
        "train", "hparams_search=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={journal}",
        "+hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "+hydra.sweeper.pruner.lower=2.0",
        *TINY, "task.width=0.25", "trainer.max_epochs=3", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = optuna.load_study(study_name="workbench", storage=study_storage(str(journal))).trials
    assert trial.state == optuna.trial.TrialState.PRUNED and len(trial.intermediate_values) == 1
    (metrics,) = (tmp_path / "sweep").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["epochs"] == 1


def test_submitit_local_launcher_runs_a_job(tmp_path):
    result = workbench(["train", "-m", "launcher=local", *TINY_TRAIN, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = list((tmp_path / "sweep").glob("*/metrics.json"))
    assert "test/auc" in json.loads(metrics.read_text())
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))  # it ran as a submitit job


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_a_cross_validated_pipeline_scores_its_fold_ensemble_with_an_honest_estimate(tmp_path, task):
    """3 folds of the budget's pool: each fold model trains on two folds and predicts the third,
    unselected; the ensemble of the three is tested; oof/* are the pooled held-out predictions'."""
    common = ["data.source.num_train=30", "data.source.num_val=12", "data.source.num_test=8", "data.batch_size=4", "trainer.max_epochs=2"]
    if task == "classification":
        dataset, finetune = "phantom2d", ["task.width=0.25"]
    else:
        dataset = "phantom3d"
        common += ["data.source.size=16", "task_kind=segmentation"]
        finetune = ["task=segmentation", "task.channels=[8,16]", "task.num_res_units=0"]
    overrides = [f"dataset={dataset}", "recipe=supervised", "selection=cv", "folds=3", "label_fraction=0.5", f"common={quoted_list(common)}",
                 f"stages.finetune={quoted_list(finetune)}", f"stages.baseline={quoted_list(finetune)}", f"cache_dir={tmp_path / 'stages'}"]
    summary = pipeline(compose_train(overrides, tmp_path / "run", config_name="pipeline"))
    scored = yaml.safe_load((Path(summary["stages"]["finetune"]["run_dir"]) / "config.yaml").read_text())
    folds = [Path(c).parents[1] for c in scored["ckpt_path"]]
    assert len(folds) == 3 and scored["data"]["folds"] is None  # the ensemble is tested on the whole test split
    splits = [json.loads((f / "split.json").read_text()) for f in folds]
    held_out = [i for s in splits for i in s["val_ids"]]
    assert sorted(held_out) == sorted(i for fold in splits[0]["fold_ids"] for i in fold) and len(set(held_out)) == len(held_out)
    assert summary["labeled_images"] == len(held_out) == splits[0]["counts"]["pool"]
    assert all(yaml.safe_load((f / "config.yaml").read_text())["selection"] == "last" for f in folds)
    assert not any(k.startswith("test/") for f in folds for k in json.loads((f / "metrics.json").read_text()))  # tested once, as one
    predictions = json.loads(Path(summary["out_of_fold_finetune"]).read_text())
    assert sorted(predictions["ids"]) == sorted(held_out)
    key = "oof/auc" if task == "classification" else "oof/dice"
    if task == "classification":  # recomputed from the saved predictions, by hand
        probs, labels = torch.tensor(predictions["probabilities"]), torch.tensor(predictions["labels"])
        pos, neg = probs[labels == 1, 1], probs[labels == 0, 1]
        by_hand = float(((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()).mean())
    else:
        by_hand = sum(predictions["dice"]) / len(predictions["dice"])
    assert summary[key] == pytest.approx(by_hand, abs=1e-6) and f"baseline/{key}" in summary
    report = (tmp_path / "run" / "report.md").read_text()
    assert "ensemble of 3 folds" in report and key in report


def test_a_fold_ensemble_is_validated_externally_on_another_npz(tmp_path):
    """External validation: the checkpoints of a cross-validated pipeline scored on another
    dataset's test split by `workbench evaluate`, as one ensemble."""
    from tests.conftest import write_medmnist

    own, other = write_medmnist(tmp_path / "own.npz", (28, 28), seed=0), write_medmnist(tmp_path / "other.npz", (28, 28), seed=1)
    common = [f"data.source.path={own}", "data.batch_size=8", "trainer.max_epochs=3"]
    overrides = ["dataset=medmnist", "recipe=supervised", "selection=cv", "folds=2", "label_fraction=0.5", f"common={quoted_list(common)}",
                 f"stages.finetune={quoted_list(['task.width=0.25'])}", "stages.baseline=null", f"cache_dir={tmp_path / 'stages'}"]
    summary = pipeline(compose_train(overrides, tmp_path / "run", config_name="pipeline"))
    folds = yaml.safe_load((Path(summary["stages"]["finetune"]["run_dir"]) / "config.yaml").read_text())["ckpt_path"]
    data = ["data=medmnist", f"data.source.path={other}", "task.width=0.25", f"task.threshold={summary['oof/threshold']}"]
    external = evaluate(compose_train([*data, f"ckpt_path={quoted_list(folds)}"], tmp_path / "external", config_name="evaluate"))
    assert external["checkpoint"] == folds
    assert external["test/auc"] > 0.9  # the brightness rule carries over to the other file
    assert json.loads((tmp_path / "external" / "split.json").read_text())["source"].endswith("other.npz")
    # run_dir=<pipeline run dir>: the same ensemble, architecture and threshold, found from the run itself
    by_run = evaluate(compose_train(["data=medmnist", f"data.source.path={other}", f"run_dir={tmp_path / 'run'}"], tmp_path / "by_run",
                                    config_name="evaluate"))
    assert by_run["checkpoint"] == folds
    assert (by_run["test/auc"], by_run["test/acc"]) == pytest.approx((external["test/auc"], external["test/acc"]), abs=1e-6)
    # The fold ensemble exported as one TorchScript model: the mean of its members' probabilities.
    from workbench.export import export

    scripted = torch.jit.load(export(compose_train([f"run_dir={tmp_path / 'run'}", "format=torchscript"], tmp_path / "ts", config_name="export"))["model"])
    config = yaml.safe_load((Path(folds[0]).parents[1] / "config.yaml").read_text())
    members = [get_class(config["task"]["_target_"]).load_from_checkpoint(f, map_location="cpu", weights_only=True).eval() for f in folds]
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        mean = torch.stack([m.evaluated_network()(images).softmax(1) for m in members]).mean(0)
        assert torch.allclose(scripted(images), mean, atol=1e-5)


def test_a_segmentation_recipe_s_baseline_is_a_segmentation_network():
    """The default baseline ([]) follows the finetune stage's kind of task, so recipe=semi with a
    segmentation method compares against supervised segmentation, not a classifier."""
    from workbench.pipeline import recipe_plan

    cfg = compose_train(["recipe=semi", f"stages.finetune={quoted_list(['task=cps'])}", f"common={quoted_list(['task_kind=segmentation'])}"],
                        Path("/tmp/unused"), config_name="pipeline")
    assert recipe_plan(cfg)["baseline"] == ["task=segmentation"]
    cfg = compose_train(["recipe=semi"], Path("/tmp/unused"), config_name="pipeline")  # FixMatch: a classifier's baseline
    assert recipe_plan(cfg)["baseline"] == []
    # Without task_kind the stages keep their own: cps's stage segments, and so does its baseline.
    cfg = compose_train(["recipe=semi", "dataset=phantom3d", f"stages.finetune={quoted_list(['task=cps'])}"], Path("/tmp/unused"),
                        config_name="pipeline")
    assert recipe_plan(cfg)["baseline"] == ["task=segmentation"]


def test_the_training_budget_is_in_steps_for_every_stage_and_common_still_overrides_it():
    """pretrain_steps / finetune_steps become max_steps with max_epochs=-1 for the pretraining,
    the finetune stage and its baseline alike; the generator keeps its epochs."""
    from workbench.pipeline import shared_overrides

    cfg = compose_train(["budget.pretrain_steps=70", "budget.finetune_steps=30", "budget.finetune_batch_size=4",
                         f"common={quoted_list(['trainer.max_epochs=2'])}"], Path("/tmp/unused"), config_name="pipeline")
    composed = {stage: compose_stage("train" if stage in ("finetune", "baseline") else stage, shared_overrides(cfg, stage))
                for stage in ("pretrain", "synthesize", "finetune", "baseline")}
    assert composed["pretrain"].trainer.max_steps == 70 and composed["finetune"].trainer.max_steps == 30 == composed["baseline"].trainer.max_steps
    assert composed["finetune"].data.batch_size == 4 == composed["baseline"].data.batch_size
    assert composed["synthesize"].trainer.max_steps == -1
    assert all(c.trainer.max_epochs == 2 for c in composed.values())  # common comes after the budget


BUNDLE_CHECK = """
import sys, torch
from monai.bundle import ConfigParser
bundle, inputs, outputs = sys.argv[1:4]
parser = ConfigParser()
parser.read_config(bundle + "/configs/inference.json")
parser.read_meta(bundle + "/configs/metadata.json")
parser["bundle_root"] = bundle
network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
with torch.no_grad():
    torch.save(inferer(torch.load(inputs), network), outputs)
assert not any(name.split(".")[0] == "workbench" for name in sys.modules), "the bundle needed the workbench"
"""


@pytest.mark.parametrize("kind", ["classification-2d", "segmentation-3d"])
def test_an_exported_bundle_and_torchscript_model_give_the_checkpoint_s_probabilities(tmp_path, kind):
    """The export round trip: a trained run's checkpoint, loaded as Lightning loads it, and its
    TorchScript and MONAI bundle forms (the bundle parsed by monai.bundle in a fresh process
    that never imports the workbench) give the same probabilities on the same images."""
    from workbench.export import export

    if kind == "classification-2d":
        data = ["data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8", "task.width=0.25"]
    else:
        data = ["task=segmentation", "task.channels=[8,16]", "task.num_res_units=0", "data=phantom3d", "data.source.size=16",
                "data.source.num_train=4", "data.source.num_val=2", "data.source.num_test=2", "data.batch_size=2"]
    metrics = train(compose_train([*data, "trainer.max_epochs=1"], tmp_path / "run"))
    outputs = {fmt: export(compose_train([f"run_dir={tmp_path / 'run'}", f"format={fmt}"], tmp_path / fmt, config_name="export"))
               for fmt in ("torchscript", "bundle")}
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    task = get_class(config["task"]["_target_"]).load_from_checkpoint(metrics["best_checkpoint"], map_location="cpu", weights_only=True).eval()
    images = torch.rand(2, *outputs["bundle"]["input_shape"])
    with torch.no_grad():
        expected = task.evaluated_network()(images).softmax(1)
        scripted = torch.jit.load(outputs["torchscript"]["model"])(images)
    torch.save(images, tmp_path / "images.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fresh = subprocess.run([sys.executable, "-c", BUNDLE_CHECK, outputs["bundle"]["model"], str(tmp_path / "images.pt"), str(tmp_path / "pred.pt")],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert torch.allclose(scripted, expected, atol=1e-5) and torch.allclose(torch.load(tmp_path / "pred.pt"), expected, atol=1e-5)
    meta = json.loads((Path(outputs["bundle"]["model"]) / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == expected.shape[1]
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == list(images.shape[2:])
    if kind == "classification-2d":  # ONNX (the export extra): a valid graph from image to pred
        import onnx

        onnx_run = export(compose_train([f"run_dir={tmp_path / 'run'}", "format=onnx"], tmp_path / "onnx", config_name="export"))
        graph = onnx.load(onnx_run["model"])
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == ["image"] and [o.name for o in graph.graph.output] == ["pred"]


def test_the_bundle_scales_intensities_with_the_source_s_own_window(tmp_path):
    """MedMNIST images are scaled by their 8-bit range in training, not per image: the bundle
    must do the same, or a dim image would be stretched to [0, 1]."""
    from hydra.utils import instantiate

    from tests.conftest import write_medmnist
    from workbench.export import preprocessing

    path = write_medmnist(tmp_path / "m.npz", (28, 28))
    dm = instantiate(compose_train(["data=medmnist", f"data.source.path={path}"], tmp_path / "run").data)
    scaling = [step for step in preprocessing(dm, 2) if step["_target_"].startswith(("ScaleIntensity", "NormalizeIntensity"))]
    assert scaling == [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0, "clip": True}]


@pytest.mark.parametrize("probabilities, labels, area", [
    ([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]], [0, 0, 1, 1], 1.0),  # separated: through (0, 1)
    ([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]], [1, 1, 0, 0], 0.0),  # every positive ranked last
    ([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1]], [0, 1, 2, 0], 1.0),  # three classes, macro
])
def test_the_report_s_roc_curve_has_the_area_of_the_auc(probabilities, labels, area):
    from workbench.evaluation.report_figures import roc_curve

    fpr, tpr = roc_curve(torch.tensor(probabilities), torch.tensor(labels))
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(area, abs=0.01)


def test_the_report_s_bootstrap_interval_brackets_the_auc_and_is_zero_wide_when_separated():
    from workbench.evaluation.report_figures import bootstrap_auc

    separated = torch.tensor([[0.9, 0.1]] * 20 + [[0.2, 0.8]] * 20)
    assert bootstrap_auc(separated, torch.tensor([0] * 20 + [1] * 20)) == (1.0, 1.0, 1.0)
    noisy = torch.rand(200, 1)
    auc, low, high = bootstrap_auc(torch.cat([1 - noisy, noisy], 1), (noisy[:, 0] + 0.5 * torch.rand(200) > 0.75).long())
    assert low < auc < high and high - low < 0.2
