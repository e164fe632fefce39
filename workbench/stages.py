"""Running one command (train, pretrain, synthesize, generate) as a stage of a bigger job, in
this process, with a cache: a stage's run directory is named by the content hash of its resolved
config, and a finished run (metrics.json beside a matching config.yaml) is reused instead of
redone. The pipeline and the benchmarks chain stages with it, so reruns and sweeps do not
repeat work."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from workbench import __version__
from workbench.config_path import config_dir
from workbench.errors import WorkbenchError
from workbench.runs import redact_secrets, removed_on_bad_input

HASH_PLACEHOLDER = "<stage directory>"


def without_nulls(tree: Any) -> Any:
    """The config without null-valued keys: a key added later with a null default changes nothing."""
    if isinstance(tree, dict):
        return {k: without_nulls(v) for k, v in tree.items() if v is not None}
    return [without_nulls(v) for v in tree] if isinstance(tree, list) else tree


def quoted_list(items: list[str]) -> str:
    """A Hydra override value holding a list of strings, each quoted (paths and overrides may
    hold '=' or ',')."""
    return "[" + ",".join(f"'{item}'" for item in items) + "]"


def compose_stage(config_name: str, overrides: list[str]) -> DictConfig:
    """A command's config with overrides, inside a running Hydra app or outside one."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=overrides)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def comparable(cfg: DictConfig) -> dict:
    """What identifies a run: the resolved config, secrets redacted, nulls dropped, without the
    machine-specific `paths` (what they point at is resolved into the other keys)."""
    plain = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    plain.pop("paths", None)
    return without_nulls(plain)


def rebased(tree: Any, old_dir: str, new_dir: str) -> Any:
    """The tree with `old_dir` at the start of any string replaced by `new_dir`."""
    old_dir = old_dir.rstrip("/")
    if isinstance(tree, dict):
        return {k: rebased(v, old_dir, new_dir) for k, v in tree.items()}
    if isinstance(tree, list):
        return [rebased(v, old_dir, new_dir) for v in tree]
    if isinstance(tree, str) and (tree == old_dir or tree.startswith(old_dir + "/")):
        return new_dir + tree[len(old_dir):]
    return tree


def identity(cfg: DictConfig) -> dict:
    """The comparable config with its output directory replaced by the placeholder."""
    probe = cfg.copy()
    with open_dict(probe):
        probe.paths.output_dir = HASH_PLACEHOLDER
    return comparable(probe)


@functools.cache
def code_version() -> str:
    """The workbench version and a sha256 of its Python code: a stage run by other code is not
    the same stage, though its config is."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def config_hash(cfg: DictConfig, same_code: bool = True) -> str:
    """12 hex digits of the sha256 of the config's `identity`, and unless `same_code` is off,
    of the code's version (so an upgrade never reuses a stale result)."""
    key = {"config": identity(cfg), "code": code_version()} if same_code else identity(cfg)
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextmanager
def stage_lock(output_dir: Path) -> Iterator[None]:
    """One process at a time in a stage directory: a second job that needs the same stage (a
    sweep's jobs sharing a pretraining) waits here, then finds it finished and reuses it. A POSIX
    record lock on `<dir>.lock`, which the system releases when its holder dies, so a killed job
    leaves no stale lock (shared file systems need POSIX locks: NFS with lockd, Lustre with
    -o flock). Only rank 0 locks: the other ranks of a DDP job follow it into the stage."""
    if rank_zero_only.rank != 0:
        yield
        return
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(output_dir.with_name(output_dir.name + ".lock"), "a+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)  # blocks while another process holds it
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def finished(output_dir: Path, cfg: DictConfig) -> dict | None:
    """The metrics of a finished run of this config in `output_dir` (wherever the run was made:
    paths inside its own directory compare equal), else None. A finished run of another config
    there is refused, not overwritten."""
    done, saved = output_dir / "metrics.json", output_dir / "config.yaml"
    if not (done.is_file() and saved.is_file()):
        return None
    tree = yaml.safe_load(saved.read_text()) or {}
    made_in = str((tree.get("paths") or {}).get("output_dir", output_dir))  # keys like data.output_dir interpolate it
    if rebased(without_nulls({k: v for k, v in tree.items() if k != "paths"}), made_in, HASH_PLACEHOLDER) != identity(cfg):
        raise WorkbenchError(f"{output_dir}: holds a finished run of another configuration; delete it or choose another directory")
    return rebased(json.loads(done.read_text()), made_in, str(output_dir))


def run_stage(
    command: Callable[[DictConfig], dict], config_name: str, overrides: list[str], output_dir: Path | None = None,
    cache_dir: Path | None = None, same_code: bool = True,
) -> dict:
    """`command` on the composed config, writing into `output_dir` (default:
    `cache_dir/<config_name>/<config hash>`, the hash taking in the code's version unless
    `same_code` is off); a finished run of the same config there is reused, and a process that
    finds another at work there waits for it. Returns the run's metrics, with `reused` telling
    which happened."""
    cfg = compose_stage(config_name, overrides)
    if output_dir is None:
        if cache_dir is None:
            raise ValueError("run_stage needs output_dir or cache_dir")
        output_dir = Path(cache_dir) / config_name / config_hash(cfg, same_code)
    output_dir = Path(output_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    with stage_lock(output_dir):
        metrics = finished(output_dir, cfg)
        if metrics is not None:
            print(f"reusing {output_dir}", flush=True)
            return {**metrics, "reused": True}
        if output_dir.exists() and rank_zero_only.rank == 0:  # a killed run's remains (nobody else holds the lock): redo it whole
            shutil.rmtree(output_dir)
        with removed_on_bad_input(output_dir):
            return {**command(cfg), "reused": False}
