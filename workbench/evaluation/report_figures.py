"""The pictures of a pipeline's report.md: each stage's training curves, the synthetic samples
beside real ones, and for classification the recipe's and baseline's test AUC against labeled
images (95% bootstrap intervals) and their ROC curves on the test split. They are
copied or drawn into the pipeline's run directory (figures/), so the report stays whole when the
stage cache is cleared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_roc

from workbench.evaluation.classification_metrics import classification_metrics
from workbench.evaluation.plots import plt, save_figure


def roc_curve(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates): class 1's ROC for two classes, the macro
    average of the one-vs-rest curves (on a common grid) for more."""
    if probabilities.shape[1] == 2:
        fpr, tpr, _ = binary_roc(probabilities[:, 1], labels)
        return fpr.numpy(), tpr.numpy()
    grid = np.linspace(0, 1, 201)
    curves = []
    for k in range(probabilities.shape[1]):
        if 0 < int((labels == k).sum()) < len(labels):
            fpr, tpr, _ = binary_roc(probabilities[:, k], (labels == k).long())
            curves.append(np.interp(grid, fpr.numpy(), tpr.numpy()))
    return grid, np.mean(curves, axis=0)


def finished(fig: Any, ax: Any, xlabel: str, ylabel: str, path: Path) -> Path:
    """Labels, legend and grid, then the figure written to `path`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def plot_roc(predictions: dict[str, Path], path: Path) -> Path | None:
    """One ROC curve per stage whose test split predictions were saved (test_predictions.json)."""
    if not predictions:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, file in predictions.items():
        saved = json.loads(file.read_text())
        fpr, tpr = roc_curve(torch.tensor(saved["probabilities"]), torch.tensor(saved["labels"]))
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_title("ROC on the test split")
    return finished(fig, ax, "false positive rate", "true positive rate", path)


def bootstrap_auc(probabilities: torch.Tensor, labels: torch.Tensor, draws: int = 500, seed: int = 0) -> tuple[float, float, float]:
    """The test AUC and its 95% bootstrap interval over the test images (one run has no seeds to
    spread over; resampling its test images shows how far its AUC is from settled)."""
    rng = np.random.default_rng(seed)
    auc = classification_metrics(probabilities, labels)["auc"]
    samples = [classification_metrics(probabilities[i], labels[i])["auc"] for i in
               (torch.from_numpy(rng.integers(0, len(labels), len(labels))) for _ in range(draws))]
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return auc, float(low), float(high)


def plot_label_efficiency_point(predictions: dict[str, Path], labeled_images: int, path: Path, references: dict[str, float]) -> Path | None:
    """Test AUC against labeled images for the recipe and its baseline, with 95% bootstrap
    error bars, beside the published full-label results where the dataset has them."""
    if not predictions:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (name, file) in enumerate(predictions.items()):
        saved = json.loads(file.read_text())
        auc, low, high = bootstrap_auc(torch.tensor(saved["probabilities"]), torch.tensor(saved["labels"]))
        ax.errorbar([labeled_images * (1 + 0.04 * i)], [auc], yerr=[[auc - low], [high - auc]], marker="o", capsize=4, label=f"{name} (95% CI)")
    for k, (name, value) in enumerate(references.items()):
        ax.axhline(value, linestyle="--", color=f"C{7 + k % 3}", label=f"{name} (all labels, published)")
    ax.set_xlim(labeled_images * 0.8, labeled_images * 1.25)
    ax.set_xticks([labeled_images])
    return finished(fig, ax, "labeled images", "test AUC", path)


def trained_run(stage: dict[str, Any]) -> Path:
    """The run directory whose training curves stand for a stage (an ensemble's first member)."""
    return Path(stage["members"][0] if stage.get("members") else stage["run_dir"])


def report_figures(run_dir: Path, stages: dict[str, dict[str, Any]], labeled_images: int, references: dict[str, float]) -> list[str]:
    """Markdown lines that embed the report's pictures, copied or drawn into run_dir/figures."""
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for name, stage in stages.items():
        curves = trained_run(stage) / "curves.png"
        if curves.is_file():
            shutil.copyfile(curves, figures / f"{name}_curves.png")
            lines.append(f"![{name}: training curves](figures/{name}_curves.png)")
    samples = sorted((Path(stages["synthesize"]["run_dir"]) / "samples").glob("epoch*.png")) if "synthesize" in stages else []
    if samples:  # the generator's last sample grid beside real labeled images, a row per class
        shutil.copyfile(samples[-1], figures / "synthetic_samples.png")
        real = samples[-1].parent / "real.png"
        if real.is_file():
            shutil.copyfile(real, figures / "real_samples.png")
            lines.append("![real labeled images, a row per class](figures/real_samples.png) ")
        lines.append("![synthetic samples, a row per class](figures/synthetic_samples.png)")
    predictions = {name: Path(stages[name]["run_dir"]) / "test_predictions.json" for name in ("finetune", "baseline") if name in stages}
    predictions = {name: path for name, path in predictions.items() if path.is_file()}
    if plot_label_efficiency_point(predictions, labeled_images, figures / "label_efficiency.png", references):
        lines.append("![test AUC against labeled images, 95% bootstrap intervals](figures/label_efficiency.png)")
    if plot_roc(predictions, figures / "roc.png"):
        lines.append("![ROC curves on the test split](figures/roc.png)")
    return ["", "## Figures", "", *lines] if lines else []
