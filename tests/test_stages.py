"""The stage cache's key: every setting that changes a run changes it; where files go, and keys
added later with a null default, do not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from omegaconf import OmegaConf, open_dict

from tests.conftest import REPO, compose_train
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


TINY = ["data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8", "task.width=0.25",
        "trainer.max_epochs=1", "logger=none"]


def test_another_code_version_never_reuses_a_stage_unless_asked(tmp_path, monkeypatch):
    from workbench import stages
    from workbench.train import train

    first = stages.run_stage(train, "train", TINY, cache_dir=tmp_path)
    assert not first["reused"] and stages.run_stage(train, "train", TINY, cache_dir=tmp_path)["reused"]
    monkeypatch.setattr(stages, "code_version", lambda: "0.1.0+another")  # an upgrade
    after = stages.run_stage(train, "train", TINY, cache_dir=tmp_path)
    assert not after["reused"] and after["run_dir"] != first["run_dir"]
    deliberate = [stages.run_stage(train, "train", TINY, cache_dir=tmp_path / "any", same_code=False) for _ in range(2)]
    monkeypatch.undo()
    assert deliberate[1]["reused"] and stages.run_stage(train, "train", TINY, cache_dir=tmp_path / "any", same_code=False)["reused"]


RACER = """
import json, sys
from workbench.stages import run_stage
from workbench.train import train
metrics = run_stage(train, "train", sys.argv[2:], cache_dir=sys.argv[1])
print("RESULT " + json.dumps({"reused": metrics["reused"], "run_dir": metrics["run_dir"]}))
"""


def test_two_processes_racing_for_one_stage_train_it_once(tmp_path):
    """Two jobs of a sweep that need the same stage: one trains, the other waits and reuses it."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), *TINY], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    results = [json.loads(next(line[7:] for line in r.communicate(timeout=600)[0].splitlines() if line.startswith("RESULT "))) for r in racers]
    assert sorted(r["reused"] for r in results) == [False, True] and results[0]["run_dir"] == results[1]["run_dir"]
    [stage] = [p for p in (tmp_path / "train").iterdir() if p.is_dir()]
    assert (stage / "metrics.json").is_file() and len(list((stage / "checkpoints").glob("epoch*.ckpt"))) == 1
