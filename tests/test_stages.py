"""The stage cache's key: every setting that changes a run changes it; where files go, and keys
added later with a null default, do not."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf, open_dict

from tests.conftest import compose_train
from workbench.stages import config_hash


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], node)]


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    return [*value, "other"] if isinstance(value, list) else "other"


def test_every_setting_changes_the_stage_hash_but_paths_and_nulls_do_not(tmp_path):
    cfg = compose_train(["task=fixmatch"], tmp_path)
    base = config_hash(cfg)
    settings = [(key, value) for key, value in leaves(OmegaConf.to_container(cfg, resolve=True))
                if value is not None and not key.startswith("paths.")]
    assert len(settings) > 80 and any(key == "task.lr" for key, _ in settings)
    for key, value in settings:
        other = cfg.copy()
        OmegaConf.update(other, key, changed(value), force_add=True)
        assert config_hash(other) != base, key
    for key in ("paths.output_dir", "paths.log_dir", "paths.cache_dir"):  # where the run goes, not what it is
        other = cfg.copy()
        OmegaConf.update(other, key, str(tmp_path / "elsewhere"))
        assert config_hash(other) == base, key
    other = cfg.copy()
    with open_dict(other):
        other.task.option_added_later = None  # a key added later with a null default changes nothing
    assert config_hash(other) == base
