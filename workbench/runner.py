"""What every command shares: build the datamodule, module and trainer from a config, fit,
gather the logged metrics, write the run summary, and the Hydra entry point. A command module
keeps only what is its own (`train.py`: select and test; `pretrain.py`: export the backbone;
...), so each stage is a sibling over this one runner."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from workbench.config_path import config_dir
from workbench.errors import WorkbenchError, unwrapped_workbench_errors
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.runs import run_command, save_config, set_environment_defaults, write_run_summary

# Facts of the data and the label budget a module may ask for: the generators' image shape, a
# classifier's labeled class prior and whether its labels were drawn balanced.
DATA_FACTS = ("image_shape", "class_prior", "labels_balanced")


def command_line_overrides() -> list[str] | None:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def instantiate_all(group: DictConfig | None) -> list:
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


def build(cfg: DictConfig, model_key: str) -> tuple[Any, pl.LightningModule, pl.Trainer]:
    """What every command that trains or evaluates does first: seed, build the datamodule, the
    module `cfg[model_key]` (told what it needs of the data: channels, classes, dimensions and
    its DATA_FACTS) and the trainer with its loggers and callbacks."""
    set_environment_defaults()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_model(cfg, model_key)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, strategy=ddp_strategy_for(model, cfg.trainer.get("strategy", "auto")),
        logger=instantiate_all(cfg.get("logger")) or False, callbacks=instantiate_all(cfg.get("callbacks")),
    )
    return datamodule, model, trainer


def build_model(cfg: DictConfig, model_key: str, **datamodule_kwargs: Any) -> tuple[Any, pl.LightningModule]:
    """The datamodule and the module `cfg[model_key]`, told what it needs of the data (channels,
    classes, dimensions and the DATA_FACTS its config declares null)."""
    with unwrapped_workbench_errors():  # Hydra wraps a constructor's error in its own
        datamodule = instantiate(cfg.data, **datamodule_kwargs)
    kwargs = datamodule.task_kwargs()
    for fact in DATA_FACTS:  # what a module declares null in its config, the datamodule fills in
        if fact in cfg[model_key] and cfg[model_key][fact] is None:
            kwargs[fact] = getattr(datamodule, fact)()
    # Plain lists and dicts in the hyperparameters, so checkpoints load with weights_only=True.
    model = instantiate(cfg[model_key], _convert_="all", **kwargs)
    if model.data_task not in ("pretrain", datamodule.data.task):  # pretraining takes any images
        raise WorkbenchError(
            f"task={type(model).__name__} needs {model.data_task} data, but data={datamodule.data.description} "
            f"provides {datamodule.data.task} data"
        )
    return datamodule, model


def ddp_strategy_for(model: pl.LightningModule, strategy: Any) -> Any:
    """A module that steps several optimizers by hand (the GAN) leaves some parameters out of
    each backward pass, which plain DDP rejects; its DDP variants detect those parameters."""
    manual_ddp = isinstance(strategy, str) and strategy.startswith("ddp") and "find_unused" not in strategy
    return f"{strategy}_find_unused_parameters_true" if manual_ddp and not model.automatic_optimization else strategy


def fit_on_datamodule(cfg: DictConfig, model_key: str) -> tuple[Any, pl.LightningModule, pl.Trainer, float]:
    """`build`, check a checkpoint to resume from, save the config, fit. Returns the pieces and
    the seconds `fit` took."""
    datamodule, model, trainer = build(cfg, model_key)
    resume = cfg.get("ckpt_path")
    if resume:
        check_checkpoint_fits(resume, model)
    if trainer.is_global_zero:
        save_config(cfg, cfg.paths.output_dir, command_line_overrides())
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    return datamodule, model, trainer, time.perf_counter() - start


def fit_summary(trainer: pl.Trainer, run_dir: Path, seconds_key: str, seconds: float) -> dict[str, Any]:
    """The first entries of a fitted run's metrics."""
    return {"run_dir": str(run_dir), "epochs": trainer.current_epoch, "steps": trainer.global_step, seconds_key: seconds}


def logged(trainer: pl.Trainer, *prefixes: str) -> dict[str, float]:
    """The metrics the module logged under these prefixes (e.g. "test/"), as floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefixes)}


def finish_run(run_dir: Path, metrics: dict[str, Any], title: str, shown: str) -> dict[str, Any]:
    """metrics.json, metrics.csv and curves.png into the run directory, then `shown` and the
    directory on the console. Rank 0 alone calls it."""
    metrics["files"] = write_run_summary(run_dir, metrics, title=title)
    print(f"{shown}\nRun directory: {run_dir}" if shown else f"Run directory: {run_dir}")
    return metrics


def hydra_entry(command: Callable[[DictConfig], dict[str, Any]], config_name: str) -> Callable[[], Any]:
    """The command's `main`: a Hydra app on `configs/<config_name>.yaml` that runs `command`
    with one-line errors (exit status 2) and returns the value a sweeper optimises."""

    @functools.wraps(command)  # Hydra names the job after the command's own module
    def task(cfg: DictConfig) -> Any:
        return run_command(command, cfg)

    return hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task)
