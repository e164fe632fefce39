"""Every config in configs/ composes, and every `_target_` in it imports."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from tests.conftest import compose_train
from workbench.config_path import config_dir

ROOT = Path(config_dir())
GROUPS = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in ("base", "hydra"))
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((ROOT / g).glob("*.yaml"))]
COMMANDS = ("train", "pretrain", "synthesize", "pipeline", "generate", "evaluate")


def groups_of(command: str) -> list[str]:
    """The config groups in a command's defaults list (Hydra's own excluded)."""
    defaults = yaml.safe_load((ROOT / f"{command}.yaml").read_text()).get("defaults", [])
    names = [next(iter(d)).lstrip("/") for d in defaults if isinstance(d, dict)]
    return [g for g in names if g in GROUPS]


def targets(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append(node["_target_"])
        for v in node.values():
            found += targets(v)
    elif isinstance(node, list):
        for v in node:
            found += targets(v)
    return found


@pytest.mark.config
def test_groups_are_the_designed_ones():
    assert {"data", "task", "trainer", "logger", "callbacks", "paths", "experiment"} <= set(GROUPS)


# Each option is composed with every command that has its group; experiments are written for
# one command each (they override that command's groups), so each composes with at least one.
CASES = [(c, g, o) for c in COMMANDS for g in groups_of(c) if g != "experiment" for g2, o in OPTIONS if g2 == g]
EXPERIMENTS = [o for g, o in OPTIONS if g == "experiment"]


def check_composed(cfg) -> None:
    plain = OmegaConf.to_container(cfg, resolve=False)
    for target in targets(plain):
        try:
            get_class(target)
        except ValueError:  # a function target (e.g. multi_view), not a class
            get_method(target)
    # Everything resolves except the paths a user must give (???), which stay missing on purpose.
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.mark.config
@pytest.mark.parametrize("command, group, option", CASES, ids=[f"{c}:{g}={o}" for c, g, o in CASES])
def test_option_composes_and_targets_import(tmp_path, command, group, option):
    check_composed(compose_train([f"{group}={option}"], tmp_path, config_name=command))


@pytest.mark.config
@pytest.mark.parametrize("option", EXPERIMENTS)
def test_every_experiment_composes_with_its_command(tmp_path, option):
    composed = []
    for command in COMMANDS:
        if "experiment" not in groups_of(command):
            continue
        try:
            cfg = compose_train([f"experiment={option}"], tmp_path, config_name=command)
        except ConfigCompositionException:  # written for another command's groups
            continue
        check_composed(cfg)
        composed.append(command)
    assert composed, f"experiment={option} composes with none of {COMMANDS}"


@pytest.mark.config
def test_every_command_composes_on_its_defaults(tmp_path):
    for command in COMMANDS:
        overrides = ["run_dir=/tmp/none"] if command == "generate" else []
        check_composed(compose_train(overrides, tmp_path, config_name=command))


@pytest.mark.config
@pytest.mark.parametrize("recipe, scale", [("supervised", None), ("semi", None), ("ssl", 0.1), ("all", 0.1)])
def test_recipes_finetune_a_pretrained_backbone_at_a_tenth_of_the_rate(tmp_path, recipe, scale):
    """Every benchmark on real data found the full rate erases what pretraining learned
    (benchmarks/README.md); the recipes without pretraining have no backbone to spare."""
    finetune = list(compose_train([f"recipe={recipe}"], tmp_path, config_name="pipeline").stages.finetune)
    assert compose_train(finetune, tmp_path).task.backbone_lr_scale == scale


@pytest.mark.config
@pytest.mark.parametrize("data, size", [("image_folder", 64), ("pneumoniamnist", 32)])
def test_pretraining_views_take_the_finetuned_image_size_where_the_data_option_sets_one(tmp_path, data, size):
    """Pretrained on 32-pixel crops, a backbone then finetuned on 64-pixel images sees objects at
    twice the scale it learned them at; without data.image_size the views keep 32."""
    assert compose_train([f"data={data}"], tmp_path, config_name="pretrain").data.pretrain_views.size == size


def test_the_wheel_ships_every_config(tmp_path):
    """An installed workbench runs without the repository: the wheel carries configs/ and the
    Optuna sweeper in Hydra's plugin namespace."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv (installed by scripts/setup.sh) is not in this environment")
    subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(tmp_path)], cwd=ROOT.parent, check=True)
    [wheel] = list(tmp_path.glob("workbench-*.whl"))
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("workbench/configs/")}
    expected = {f"workbench/configs/{p.relative_to(ROOT).as_posix()}" for p in ROOT.rglob("*.yaml")}
    assert expected and expected <= shipped
    assert "hydra_plugins/workbench_optuna_sweeper/optuna_sweeper.py" in zipfile.ZipFile(wheel).namelist()


def test_the_lock_pins_current_optuna_and_sqlalchemy_2():
    """hydra-optuna-sweeper held optuna at 2.10 and SQLAlchemy at 1.4; the workbench's own sweeper does not."""
    pins = dict(line.split("==") for line in (ROOT.parent / "requirements" / "lock.txt").read_text().splitlines() if "==" in line)
    assert int(pins["optuna"].split(".")[0]) >= 4 and int(pins["sqlalchemy"].split(".")[0]) >= 2
    assert "hydra-optuna-sweeper" not in pins


def test_the_processes_of_one_launch_name_one_run_directory(monkeypatch, capsys):
    """torchrun and srun start every rank as a process that composes its own config; the run
    directory is named by the launch they share, and by the moment only outside one."""
    from hydra import compose, initialize_config_dir

    from workbench.config_path import launch_name

    for var in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_STEP_ID", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    moment = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}"
    assert re.fullmatch(moment, launch_name())
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's static rendezvous without --rdzv-id
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert re.fullmatch(moment, launch_name()) and capsys.readouterr().err == ""  # one rank: nothing to share
    monkeypatch.setenv("WORLD_SIZE", "2")  # two ranks, no shared id: the way out, in one line
    assert re.fullmatch(moment, launch_name())
    assert "torchrun's static rendezvous without --rdzv-id: each rank names its own run directory" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: nothing to share
    assert re.fullmatch(moment, launch_name())
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert launch_name() == "slurm-4242.0"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    assert launch_name() == "torchrun-job-7"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=["paths.log_dir=/logs"])
    assert cfg.hydra.run.dir == "/logs/train/runs/torchrun-job-7"


# Every module option built, with its datamodule and trainer, on the phantoms its task takes:
# what `workbench <command>` does before it fits. The latent diffusion model needs a trained
# autoencoder run (built and trained in tests/generators/test_generators.py).
PHANTOM = ["data.source.size=16", "data.source.num_train=16", "data.source.num_val=4", "data.source.num_test=4", "data.batch_size=4",
           "data.label_fraction=0.5"]
MODEL_GROUPS = {"train": "task", "pretrain": "ssl", "synthesize": "generator"}
BUILDS = [(c, o) for c, g in MODEL_GROUPS.items() for g2, o in OPTIONS if g2 == g and o != "ldm"]


@pytest.mark.parametrize("command, option", BUILDS, ids=[f"{c}:{o}" for c, o in BUILDS])
def test_every_module_option_builds_with_its_datamodule_on_phantoms(tmp_path, command, option):
    from workbench.runner import build

    key = MODEL_GROUPS[command]
    extra = ["data.pretrain_views.size=16"] if command == "pretrain" else []
    if option == "protonet":
        extra = ["data.k_shot=4", "data.episodes.k_shot=2", "data.episodes.n_query=2"]
    cfg = compose_train([f"{key}={option}", *PHANTOM, *extra, "logger=none"], tmp_path, config_name=command)
    datamodule, model, trainer = build(cfg, key)
    assert model.data_task in ("pretrain", datamodule.data.task)
    assert type(model).__name__ == cfg[key]._target_.rsplit(".", 1)[-1]
    batch = next(iter(datamodule.train_dataloader()))
    if datamodule.mode == "semi":  # the combined loader yields (batch, index, loader index)
        assert set(batch[0]) == {"labeled", "unlabeled"} and "label" not in batch[0]["unlabeled"]
    elif datamodule.mode == "pretrain":
        views = cfg.data.pretrain_views
        assert command == "pretrain" and len(batch["views"]) == views.n_global + views.n_local
    else:
        assert {"image", "label"} <= set(batch) and len(batch["image"]) == len(batch["label"])
