"""Run directories: environment defaults, the resolved config, metrics as JSON/CSV, plots, and
the one-line error report shared by every command."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, read_write
from pytorch_lightning.utilities import rank_zero_only

from workbench.errors import WorkbenchError, find_workbench_error, one_line
from workbench.evaluation.plots import plot_training_curves
from workbench.io import write_json_atomic, write_text_atomic

SECRET_WORDS = ("api_key", "apikey", "token", "secret", "password")


def set_environment_defaults() -> None:
    """wandb stays offline unless the user asks for it (WANDB_MODE=online)."""
    os.environ.setdefault("WANDB_MODE", "offline")


def redact_secrets(node: Any) -> Any:
    """A copy of a plain config container with secret-looking values replaced."""
    if isinstance(node, dict):
        return {
            k: "<redacted>" if any(w in str(k).lower() for w in SECRET_WORDS) else redact_secrets(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact_secrets(v) for v in node]
    return node


def redact_override(override: str) -> str:
    key, sep, _ = override.partition("=")
    return f"{key}=<redacted>" if sep and any(w in key.lower() for w in SECRET_WORDS) else override


def save_config(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """config.yaml (resolved) and overrides.yaml (the command line), secrets redacted. Hydra's
    own unredacted copy (.hydra/) is switched off in configs/hydra/default.yaml."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    if overrides is not None:
        write_text_atomic(Path(run_dir) / "overrides.yaml", OmegaConf.to_yaml([redact_override(o) for o in overrides]))
    return write_text_atomic(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(redact_secrets(plain)))


def epoch_history(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch metrics from the CSV logger's file, one row per epoch."""
    files = sorted(Path(run_dir).glob("csv/**/metrics.csv"))
    if not files:
        return pd.DataFrame()
    raw = pd.read_csv(files[-1])
    if "epoch" not in raw:
        return pd.DataFrame()
    columns = [c for c in raw.columns if c not in ("step", "epoch") and not c.startswith("test/")]
    if not columns:
        return pd.DataFrame()
    # The test phase logs under the next epoch number with only test/* values: drop that row.
    return raw.dropna(how="all", subset=columns).groupby("epoch", as_index=False)[columns].last()


def write_run_summary(run_dir: str | Path, metrics: dict[str, Any], title: str) -> dict[str, str]:
    """metrics.json (final numbers), metrics.csv (per epoch) and curves.png into the run directory."""
    run_dir = Path(run_dir)
    history = epoch_history(run_dir)
    written = {"metrics_json": str(write_json_atomic(run_dir / "metrics.json", metrics))}
    if not history.empty:
        written["metrics_csv"] = str(write_text_atomic(run_dir / "metrics.csv", history.to_csv(index=False)))
        plot = plot_training_curves(history, run_dir / "curves.png", title)
        if plot:
            written["plot"] = str(plot)
    return written


@contextmanager
def single_job_command_line() -> Iterator[None]:
    """In a multirun, Lightning's DDP launcher would start the other ranks with the sweep's
    command line, and each of them would run every job of the sweep with its own configs. Within
    a job they get that job's command line instead: its overrides, in its own directory. After
    the job its process group and the launcher's environment variables (LOCAL_RANK, ...) go, or
    the next job would take the ranks as started already and wait for the finished ones."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra = HydraConfig.get()
    original, environment = list(sys.argv), dict(os.environ)
    sys.argv[:] = [original[0], *hydra.overrides.task]
    with read_write(hydra.run):  # the launcher hands the ranks hydra.run.dir
        hydra.run.dir = hydra.runtime.output_dir
    try:
        yield
    finally:
        sys.argv[:] = original
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)


def created_fresh(run_dir: Path) -> bool:
    """Whether `run_dir` holds nothing of an earlier run: absent, or only Hydra's job log."""
    return not run_dir.exists() or all(p.is_file() and p.suffix == ".log" for p in run_dir.iterdir())


@contextmanager
def removed_on_bad_input(run_dir: str | Path) -> Iterator[None]:
    """A run directory this command creates is removed again when bad input stops the command,
    wherever it is found (a file read by the loader mid-training, too): a run that never
    finished leaves no half run directory. One that held an earlier run is left alone."""
    run_dir = Path(run_dir)
    fresh = created_fresh(run_dir)
    try:
        yield
    except Exception as e:
        if fresh and find_workbench_error(e) is not None and rank_zero_only.rank == 0:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run_command(fn: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> Any:
    """Runs a command and returns the value of `cfg.optimized_metric` for sweepers (Optuna);
    bad input ends it with one line on stderr and exit status 2, and removes the run directory
    the command created."""
    try:
        with single_job_command_line(), removed_on_bad_input(cfg.paths.output_dir):
            metrics = fn(cfg)
    except Exception as e:
        error = find_workbench_error(e)
        if error is None:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def checkpoint_paths(value: Any) -> list[str]:
    """ckpt_path as a list: one checkpoint, or several to ensemble."""
    paths = [str(p) for p in value] if isinstance(value, (ListConfig, list, tuple)) else [str(value)] if value else []
    if not paths:
        raise WorkbenchError("ckpt_path: evaluate needs the checkpoint to score (e.g. <train run>/checkpoints/last.ckpt, or a list to ensemble)")
    return paths


def finished_run(run_dir: str | Path) -> tuple[list[str], DictConfig]:
    """The checkpoints a finished run scores and the config they were trained or scored with
    (its task: architecture, decision threshold; its data: preprocessing): a `workbench train`
    run's selected checkpoint, an `evaluate` run's checkpoints (an ensemble), or a pipeline
    run's finetune stage (under cross-validation, its fold ensemble)."""
    run = Path(run_dir)
    if not (run / "metrics.json").is_file() or not (run / "config.yaml").is_file():
        raise WorkbenchError(f"run_dir={run}: no metrics.json and config.yaml there; expected a finished train, evaluate or pipeline run directory")
    metrics = json.loads((run / "metrics.json").read_text())
    if "stages" in metrics:  # a pipeline: its finetune stage (a train run, or the evaluate run of an ensemble)
        return finished_run(metrics["stages"]["finetune"]["run_dir"])
    config = OmegaConf.load(run / "config.yaml")
    if "checkpoint" in metrics:  # an evaluate run: what it scored
        return checkpoint_paths(config.ckpt_path), config
    return [metrics.get("best_checkpoint") or str(run / "checkpoints" / "last.ckpt")], config
