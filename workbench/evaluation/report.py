"""The label-efficiency report: every finished run under a folder (a multirun, a benchmark) as
one record per recipe, label fraction and seed, aggregated into a Markdown table and a plot of
the test metric against the number of labeled images (mean with a 95% confidence interval),
with published full-label baselines drawn as reference lines where known.

A run is a directory holding `metrics.json` and `config.yaml`: a `workbench pipeline` run (its
metrics name the recipe) or a `workbench train` run (the recipe is its task's class name).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from scipy import stats  # noqa: E402

from workbench.evaluation.plots import save_figure  # noqa: E402
from workbench.io import write_json_atomic, write_text_atomic  # noqa: E402

METRICS = ("auc", "acc", "dice")
DEFAULT_REFERENCES = ("ResNet-18 (28)", "Google AutoML Vision")


def run_record(run_dir: Path) -> dict[str, Any] | None:
    """One record of a finished run, or None when the folder is not a finished run."""
    metrics_file, config_file = run_dir / "metrics.json", run_dir / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        return None
    metrics = json.loads(metrics_file.read_text())
    cfg = yaml.safe_load(config_file.read_text()) or {}
    scores = {m: metrics.get(f"test/{m}") for m in METRICS if metrics.get(f"test/{m}") is not None}
    if not scores:
        return None
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    recipe = metrics.get("recipe") or str((cfg.get("task") or {}).get("_target_", "unknown")).rsplit(".", 1)[-1]
    return {
        "recipe": recipe,
        "fraction": metrics.get("label_fraction", data.get("label_fraction", cfg.get("label_fraction"))),
        "seed": cfg.get("seed"),
        "labeled_images": metrics.get("labeled_images"),
        **scores,
        "train_seconds": metrics.get("train_seconds"),
        "run_dir": str(run_dir),
    }


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Records of the finished runs under `root` (a pipeline's own stage runs are not counted)."""
    records = []
    for metrics_file in sorted(Path(root).rglob("metrics.json")):
        if "stages" in metrics_file.relative_to(root).parts[:-1]:
            continue  # a cached stage of a pipeline run, counted through the pipeline run itself
        record = run_record(metrics_file.parent)
        if record is not None:
            records.append(record)
    return records


def ci95(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t); 0 for one value."""
    if len(values) < 2:
        return 0.0
    return float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std and 95% CI per recipe and label fraction, for every metric present."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["recipe"], r["fraction"]), []).append(r)
    rows = []
    for (recipe, fraction), group in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0)):
        row: dict[str, Any] = {"recipe": recipe, "fraction": fraction, "seeds": len(group)}
        labeled = [r["labeled_images"] for r in group if r.get("labeled_images") is not None]
        row["labeled_images"] = statistics.mean(labeled) if labeled else None
        for m in METRICS:
            values = [r[m] for r in group if r.get(m) is not None]
            if values:
                row[m] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                          "ci95": ci95(values), "n": len(values)}
        rows.append(row)
    return rows


def medmnist_baselines(path: str | Path, dataset: str) -> dict[str, dict[str, float]]:
    """{method: {"auc": .., "acc": ..}} for `dataset` (e.g. "pneumoniamnist") from the MedMNIST v2
    baselines Markdown (tables whose headers read "<Dataset> AUC", "<Dataset> ACC")."""
    found: dict[str, dict[str, float]] = {}
    header: list[str] = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Method":
            header = cells
        elif header and not set(cells[0]) <= set("-: "):
            for name, value in zip(header[1:], cells[1:]):
                match = re.fullmatch(r"(\w+) (AUC|ACC)", name)
                if match and match.group(1).lower() == dataset.lower() and re.fullmatch(r"[0-9.]+", value):
                    found.setdefault(cells[0], {})[match.group(2).lower()] = float(value)
    return found


def published_lines(baselines: str | Path | None, dataset: str | None, metric: str,
                    references: tuple[str, ...] = DEFAULT_REFERENCES) -> dict[str, float]:
    """The published full-label results of `references` for `dataset` and `metric` ({} where the
    file or the dataset's table is missing)."""
    published = medmnist_baselines(baselines, dataset) if baselines and dataset and Path(baselines).is_file() else {}
    return {name: published[name][metric] for name in references if metric in published.get(name, {})}


def plot_label_efficiency(rows: list[dict], metric: str, path: Path, references: dict[str, float], title: str) -> Path | None:
    """The metric against labeled images (log axis), one line per recipe with its 95% CI band."""
    rows = [r for r in rows if metric in r and r.get("labeled_images")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = sorted((r for r in rows if r["recipe"] == recipe), key=lambda r: r["labeled_images"])
        x = [r["labeled_images"] for r in mine]
        mean = [r[metric]["mean"] for r in mine]
        half = [r[metric]["ci95"] for r in mine]
        # Error bars as well as the band: with one label fraction there is no band to see.
        ax.errorbar(x, mean, yerr=half, marker="o", capsize=4, label=f"{recipe} (95% CI)")
        ax.fill_between(x, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)], alpha=0.2)
    for i, (name, value) in enumerate(references.items()):
        ax.axhline(value, linestyle="--", color=f"C{7 + i % 3}", label=f"{name} (all labels, published)")
    ax.set_xscale("log")
    ax.set_xlabel("labeled training images")
    ax.set_ylabel(f"test {metric.upper()}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def markdown_table(rows: list[dict]) -> str:
    metrics = [m for m in METRICS if any(m in r for r in rows)]
    head = "| recipe | label fraction | labeled images | seeds | " + " | ".join(f"test {m.upper()} (mean ± std, 95% CI)" for m in metrics) + " |"
    lines = [head, "|" + "---|" * (4 + len(metrics))]
    for r in rows:
        cells = [str(r["recipe"]), f"{r['fraction']}", f"{r['labeled_images']:.0f}" if r["labeled_images"] is not None else "?", str(r["seeds"])]
        for m in metrics:
            s = r.get(m)
            cells.append(f"{s['mean']:.4f} ± {s['std']:.4f} (± {s['ci95']:.4f})" if s else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    root: str | Path, out_dir: str | Path | None = None, dataset: str | None = None, baselines: str | Path | None = None,
    references: tuple[str, ...] = DEFAULT_REFERENCES,
) -> Path | None:
    """report.md, label_efficiency.json and one PNG per metric into `out_dir` (default `root`);
    None when `root` holds no finished run."""
    root = Path(root)
    out = Path(out_dir or root)
    records = collect(root)
    if not records:
        return None
    rows = aggregate(records)
    lines = [f"# Label efficiency: {root}", "", f"{len(records)} runs; test metrics of each run's selected checkpoint, scored once.", "",
             markdown_table(rows), ""]
    plots, published = {}, False
    for metric in METRICS:
        refs = published_lines(baselines, dataset, metric, references)
        published = published or bool(refs)
        plot = plot_label_efficiency(rows, metric, out / f"label_efficiency_{metric}.png", refs, f"{dataset or root.name}: test {metric.upper()}")
        if plot:
            plots[metric] = plot.name
            lines += [f"![test {metric.upper()} against labeled images]({plot.name})", ""]
    if published:
        lines += [f"Reference lines: published MedMNIST v2 full-label results for {dataset} ({baselines})."]
    write_json_atomic(out / "label_efficiency.json", {"records": records, "summary": rows, "plots": plots})
    return write_text_atomic(out / "report.md", "\n".join(lines) + "\n")


class LabelEfficiencyReport(Callback):
    """Hydra callback: at the end of a multirun, the report of all its runs in the sweep folder."""

    def __init__(self, dataset: str | None = None, baselines: str | None = None) -> None:
        self.dataset = dataset
        self.baselines = baselines

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report = write_report(config.hydra.sweep.dir, dataset=self.dataset, baselines=self.baselines)
        if report is not None:
            print(f"Report: {report}")
