"""Nothing half-written: a crash while any run file is written leaves the old file whole and no
temporary file behind."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from workbench.data import MedicalDataModule, PhantomSource
from workbench.evaluation.plots import plot_training_curves
from workbench.models.pretrained import export_backbone
from workbench.runs import save_config, write_run_summary


def writers(version: int) -> dict[str, tuple[str, Callable[[Path], object]]]:
    """Each run-file writer, writing content that differs by `version`, and the file it writes."""
    history = pd.DataFrame({"epoch": [0, 1], "train/loss": [1.0, 0.5 / version]})
    datamodule = MedicalDataModule(PhantomSource(num_train=10, num_val=4, num_test=4), label_fraction=0.5, split_seed=version)
    return {
        "config": ("config.yaml", lambda d: save_config(OmegaConf.create({"seed": version}), d)),
        "split": ("split.json", lambda d: datamodule.write_split(d)),
        "metrics": ("metrics.json", lambda d: write_run_summary(d, {"test/auc": 0.5 + version / 10}, title="t")),
        "plot": ("curves.png", lambda d: plot_training_curves(history, d / "curves.png")),
        "backbone": ("backbone.pt", lambda d: export_backbone(torch.nn.Linear(2, version), d, {"method": "test"})),
    }


def crash_on_rename(monkeypatch) -> None:
    def replace(src, dst):
        raise OSError("crash before the rename")

    monkeypatch.setattr("workbench.io.os.replace", replace)


def crash_mid_write(monkeypatch) -> None:
    """Every way the writers put bytes on disk writes part of them, then fails."""
    def half_text(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError("crash mid-write")

    def half_torch(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"\x80\x02half")
        raise OSError("crash mid-write")

    def half_figure(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError("crash mid-write")

    monkeypatch.setattr(pathlib.Path, "write_text", half_text)
    monkeypatch.setattr("workbench.models.pretrained.torch.save", half_torch)
    monkeypatch.setattr(plt.Figure, "savefig", half_figure)


@pytest.mark.parametrize("crash", [crash_on_rename, crash_mid_write], ids=["on-rename", "mid-write"])
@pytest.mark.parametrize("writer", ["config", "split", "metrics", "plot", "backbone"])
def test_a_crash_while_writing_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch, writer, crash):
    name, write = writers(1)[writer]
    write(tmp_path)
    before = (tmp_path / name).read_bytes()
    name, write = writers(2)[writer]
    crash(monkeypatch)
    with pytest.raises(OSError, match="crash"):
        write(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / name).read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name or p.name.endswith(".tmp")]
