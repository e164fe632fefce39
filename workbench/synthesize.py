"""`workbench synthesize`: train a generator (diffusion, latent diffusion's autoencoder, or a
GAN) on the datamodule's labeled view, then, when `generate.n_per_class` > 0, export a synthetic
dataset into the run directory (`<run>/synthetic`, see `workbench generate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from workbench.config_path import config_dir
from workbench.generate import export_generated
from workbench.generators.base import GeneratorModule
from workbench.runs import run_command, write_run_summary
from workbench.train import fit_on_datamodule


def synthesize(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "generator")
    metrics: dict[str, Any] = {
        "run_dir": str(run_dir),
        "generator": type(model).__name__,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "train_seconds": seconds,
        "training_images": len(datamodule.views["labeled"]),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
    if trainer.is_global_zero:
        if cfg.generate.n_per_class and isinstance(model, GeneratorModule):
            manifest = export_generated(model, datamodule, Path(metrics["checkpoint"]), cfg.generate)
            metrics["synthetic"] = manifest["output"]
            metrics["sampling_seconds"] = manifest["sampling_seconds"]
            metrics.update({f"quality/{k}": v for k, v in manifest.get("quality", {}).items() if isinstance(v, (int, float))})
        metrics["files"] = write_run_summary(run_dir, metrics, title=f"{metrics['generator']}: {datamodule.data.description}")
        print(f"Generator: {metrics['checkpoint']}\nRun directory: {run_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="synthesize")
def main(cfg: DictConfig) -> Any:
    return run_command(synthesize, cfg)


if __name__ == "__main__":
    main()
