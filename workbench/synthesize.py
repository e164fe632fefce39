"""`workbench synthesize`: train a generator (diffusion, latent diffusion's autoencoder, or a
GAN) on the datamodule's labeled subset, then, when `generate.n_per_class` > 0, export a
synthetic dataset into the run directory (`<run>/synthetic`, see `workbench generate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from workbench.generators.base import GeneratorModule
from workbench.generators.sampling import export_generated, quality_metrics
from workbench.runner import finish_run, fit_on_datamodule, fit_summary, hydra_entry, logged


def synthesize(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "generator")
    metrics: dict[str, Any] = {
        **fit_summary(trainer, run_dir, "train_seconds", seconds),
        "generator": type(model).__name__,
        "training_images": len(datamodule.subsets["labeled"]),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        **logged(trainer, "train/"),
    }
    if trainer.is_global_zero:
        if cfg.generate.n_per_class and isinstance(model, GeneratorModule):
            manifest = export_generated(model, datamodule, Path(metrics["checkpoint"]), cfg.generate)
            metrics.update({"synthetic": manifest["output"], "sampling_seconds": manifest["sampling_seconds"], **quality_metrics(manifest)})
        finish_run(run_dir, metrics, f"{metrics['generator']}: {datamodule.data.description}", f"Generator: {metrics['checkpoint']}")
    return metrics


main = hydra_entry(synthesize, "synthesize")

if __name__ == "__main__":
    main()
