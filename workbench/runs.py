"""Run directories: environment defaults, the resolved config, metrics as JSON/CSV, plots, and
the one-line error report shared by every command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from workbench.errors import find_workbench_error, one_line
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


def run_command(fn: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> Any:
    """Runs a command and returns the value of `cfg.optimized_metric` for sweepers (Optuna);
    bad input ends it with one line on stderr and exit status 2."""
    try:
        metrics = fn(cfg)
    except Exception as e:
        error = find_workbench_error(e)
        if error is None:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None
