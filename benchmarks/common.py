"""What the benchmark scripts share: running one stage through the commands' own functions
(reusing a finished run of the same configuration) and mean ± std over seeds."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from workbench.config_path import config_dir
from workbench.runs import redact_secrets


def without_nulls(tree):
    """The config without null-valued keys: a key added later with a null default changes nothing."""
    if isinstance(tree, dict):
        return {k: without_nulls(v) for k, v in tree.items() if v is not None}
    return [without_nulls(v) for v in tree] if isinstance(tree, list) else tree


def run_stage(command: Callable, config_name: str, overrides: list[str], output_dir: Path) -> dict:
    """`command` (train, pretrain) on the composed config writing into `output_dir`; or the
    metrics.json already there when that run finished with exactly this configuration, so a
    stopped benchmark resumes where it stopped."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    done, saved = output_dir / "metrics.json", output_dir / "config.yaml"
    wanted = without_nulls(redact_secrets(OmegaConf.to_container(cfg, resolve=True)))
    if done.is_file() and saved.is_file() and without_nulls(yaml.safe_load(saved.read_text())) == wanted:
        print(f"reusing {output_dir}", flush=True)
        return json.loads(done.read_text())
    return command(cfg)


def mean_sd(values: Sequence[float]) -> str:
    """'mean ± sample std' (std 0 for a single seed)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"
