"""`workbench pretrain`: self-supervised pretraining of a backbone on the datamodule's training
images with their labels hidden (plus an unlabeled archive when given), with online kNN and
linear-probe evaluation on the labeled subset, ending with `backbone.pt` + `backbone.json` in
the run directory for the downstream tasks (`task.pretrained=<run dir>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from workbench.runner import finish_run, fit_on_datamodule, fit_summary, hydra_entry, logged


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "ssl")
    metrics: dict[str, Any] = {
        **fit_summary(trainer, run_dir, "pretrain_seconds", seconds),
        "method": model.method,
        "pretrain_images": len(datamodule.subsets["pretrain"]),
        **logged(trainer, "val/"),
    }
    if trainer.is_global_zero:
        weights = model.export(run_dir, data=datamodule.data.description, seed=cfg.seed, pretrain_seconds=seconds)
        metrics["backbone"] = str(weights)
        finish_run(run_dir, metrics, f"{model.method}: {datamodule.data.description}", f"Backbone: {weights}")
    return metrics


main = hydra_entry(pretrain, "pretrain")

if __name__ == "__main__":
    main()
