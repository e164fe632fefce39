"""Sampling a trained generator into a synthetic dataset: images per class, quality metrics
against the real images, the memorisation audit and the export with its manifest. `workbench
synthesize` calls it at the end of training, `workbench generate` on a finished run."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from workbench.errors import WorkbenchError
from workbench.generators.base import GeneratorModule
from workbench.generators.export import export_synthetic
from workbench.generators.quality import FeatureNetwork, memorisation_audit, quality_report
from workbench.io import sha256_of

SAMPLING_KEYS = ("sampler", "steps", "guidance")


def stack_subset(datamodule: Any, subset: str) -> tuple[torch.Tensor, list[str]]:
    """Every image of a subset without augmentation, in [0, 1], and the record ids."""
    images, ids = [], []
    for batch in datamodule.eval_dataloader(subset):
        images.append(batch["image"])
        ids += [str(i) for i in batch["id"]] if "id" in batch else []
    return torch.cat(images), ids


def sampling_device(name: str) -> torch.device:
    """'auto': the first GPU when there is one, else the CPU; or any torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise WorkbenchError(f"generate.device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"generate.device={name!r}: no GPU is visible here (use auto or cpu)")
    return device


def sample_set(model: GeneratorModule, n_per_class: int, seed: int, batch_size: int, options: dict[str, Any]) -> dict[str, torch.Tensor]:
    """`n_per_class` images per class (class-conditional), else `n_per_class` images in all."""
    if n_per_class < 1:
        raise WorkbenchError(f"generate.n_per_class={n_per_class}: expected a positive number of images")
    conditions = model.default_conditions(n_per_class)
    n = len(conditions) if conditions is not None else n_per_class
    generator = torch.Generator(device=model.device).manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        chunk = conditions[start : start + size] if conditions is not None else None
        for key, value in model.sample(size, chunk, generator=generator, **options).items():
            parts.setdefault(key, []).append(value)
    return {k: torch.cat(v) for k, v in parts.items()}


def audit_csv(audit: dict[str, Any], train_ids: list[str]) -> str:
    """One row per synthetic image: its nearest training image, the distance, the flag."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["synthetic_index", "nearest_training_image", "distance", "near_copy"])
    flagged = set(audit["flagged"])
    for i, (index, distance) in enumerate(zip(audit["nearest_index"], audit["nearest_distance"])):
        writer.writerow([i, train_ids[index] if index < len(train_ids) else index, f"{distance:.6g}", i in flagged])
    return out.getvalue()


def export_generated(model: GeneratorModule, datamodule: Any, checkpoint: Path, options: DictConfig | dict) -> dict[str, Any]:
    """Samples, measures and writes the dataset at `options.output`; returns the manifest."""
    options = OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options)
    device = sampling_device(options.get("device", "auto"))
    model = model.to(device).eval()
    overrides = {k: options[k] for k in SAMPLING_KEYS if options.get(k) is not None}
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        sampled = sample_set(model, options["n_per_class"], options["seed"], options["batch_size"], overrides)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: time them to the end
    seconds = time.perf_counter() - start
    data = datamodule.load()
    manifest: dict[str, Any] = {
        "generator": type(model).__name__,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_of(checkpoint),
        "seed": options["seed"],
        "device": str(device),
        **model.sample_options(),
        **overrides,
        "n_per_class": options["n_per_class"],
        "sampling_seconds": seconds,
        "real_data": data.description,
        "generator_training_images": len(datamodule.subsets["labeled"]),
    }
    extra_files = {}
    if options.get("quality", True):
        train_images, train_ids = stack_subset(datamodule, "labeled")
        reference, _ = stack_subset(datamodule, options["reference"])
        features = (
            FeatureNetwork.from_backbone(options["features"]) if options.get("features")
            else FeatureNetwork.random(data.spatial_dims, data.in_channels)
        )
        audit = memorisation_audit(sampled["image"], train_images)
        manifest["quality"] = {"reference_view": options["reference"], **quality_report(sampled["image"], reference, audit, features, train_images)}
        extra_files["memorisation.csv"] = audit_csv(audit, train_ids)
    task = {"class": "classification", "mask": "segmentation", "none": "unlabeled"}[model.hparams.condition]
    intensity = datamodule.intensity_range or data.extra.get("intensity_range")
    value_range = list(intensity) if datamodule.intensity_mode in ("auto", "range") and intensity is not None else None
    out = export_synthetic(
        options["output"], sampled["image"], sampled.get("label"), task, data.num_classes, value_range, manifest, extra_files
    )
    print(f"Synthetic dataset: {out} ({len(sampled['image'])} images, {seconds:.1f} s sampling)")
    return {**manifest, "output": str(out)}


def quality_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """The manifest's numeric quality values as `quality/<name>` metrics."""
    return {f"quality/{k}": v for k, v in manifest.get("quality", {}).items() if isinstance(v, (int, float))}
