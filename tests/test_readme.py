"""Every `workbench ...` command in the README runs as written, with tiny budgets appended and its
placeholders filled in: the image folder and the other .npz are generated here, and a run
directory is the one an earlier command printed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import numpy as np
import pytest

from tests.conftest import REPO, write_medmnist, write_png
from tests.test_cli import WORKBENCH

# Appended to each command: the smallest training that still runs every part of it.
TINY = {
    "pipeline": ["budget.pretrain_steps=2", "budget.pretrain_batch_size=16", "budget.finetune_steps=2", "budget.finetune_batch_size=8", "folds=2"],
    "train": ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "task.width=0.25"],
    "pretrain": ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "data.batch_size=16", "ssl.width=0.25"],
}


def readme_commands() -> list[str]:
    """The README's `.venv/bin/workbench` lines (the arguments), continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    lines = [line.split("    #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return [line.removeprefix(".venv/bin/workbench ") for line in lines if line.startswith(".venv/bin/workbench ")]


def image_folder(root):
    """40 gray PNGs whose brightness is their class, with labels.csv, as the README describes."""
    rows = ["image,label"]
    for i in range(40):
        write_png(root / f"{i}.png", np.full((32, 32), 60 + 120 * (i % 2), np.uint8) + np.uint8(i % 7))
        rows.append(f"{i}.png,{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_every_readme_command_runs_as_written(tmp_path, shared_data):
    commands = readme_commands()
    assert {c.split()[0] for c in commands} >= {"pipeline", "train", "pretrain", "evaluate", "export"}
    filled = {"/path/to/images": str(image_folder(tmp_path / "images")), "<another .npz>": str(write_medmnist(tmp_path / "other.npz", (28, 28)))}
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", WORKBENCH_DATA=str(shared_data))
    for line in commands:
        line = re.sub("|".join(map(re.escape, filled)), lambda m: filled[m.group(0)], line)
        assert "<" not in line, f"no earlier command gave the placeholder in: {line}"
        args = shlex.split(line)
        result = subprocess.run([str(WORKBENCH), *args, *TINY.get(args[0], []), f"paths.log_dir={tmp_path / 'logs'}"], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{' '.join(args)}\n{result.stderr[-3000:]}"
        run_dir = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith(("Run directory: ", "Report: "))]
        if args[0] == "pretrain":
            filled["<pretrain run dir>"] = run_dir[-1]
        elif args[0] in ("train", "pipeline"):
            filled["<train or pipeline run dir>"] = run_dir[-1].removesuffix("/report.md")
        elif args[0] == "evaluate":
            assert "test/auc=" in result.stdout
    assert (tmp_path / "logs" / "export").is_dir()
