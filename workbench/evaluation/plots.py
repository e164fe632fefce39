"""Plots written into run directories (PNG, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from workbench.io import written_aside  # noqa: E402


def plot_training_curves(history: pd.DataFrame, path: str | Path, title: str = "") -> Path | None:
    """Losses on the left, validation metrics on the right, against the epoch."""
    if history.empty or "epoch" not in history:
        return None
    losses = [c for c in history.columns if c.endswith("/loss") and not c.startswith("test/")]
    scores = [c for c in history.columns if c.startswith("val/") and c not in losses and c != "val/threshold"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, columns, label in ((axes[0], losses, "loss"), (axes[1], scores, "validation metric")):
        for column in columns:
            series = history[["epoch", column]].dropna()
            ax.plot(series["epoch"], series[column], marker="o", label=column)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if columns:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int) -> Path:
    """Writes the figure aside and renames it when complete, then closes it."""
    try:
        with written_aside(path) as partial:
            fig.savefig(partial, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)
