"""`workbench train`: fit a downstream task (classification or segmentation) on the shared
datamodule, select the best checkpoint on the in-budget validation view, test it once on the
test split, and write the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from workbench.runner import finish_run, fit_on_datamodule, fit_summary, hydra_entry, logged


def train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "task")

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    metrics: dict[str, Any] = {
        **fit_summary(trainer, run_dir, "train_seconds", seconds),
        "best_checkpoint": best or None,
        "monitor": checkpoint.monitor if checkpoint is not None else None,
        "best_val_score": float(checkpoint.best_model_score) if best and checkpoint.best_model_score is not None else None,
        "labeled_images": len(datamodule.subsets["labeled"]),
        "val_images": len(datamodule.subsets["val"]),
    }
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(logged(trainer, "test/"))
    if trainer.is_global_zero:
        if hasattr(model, "export"):  # classification: the selected model's backbone, for reuse
            metrics["backbone"] = str(model.export(run_dir, data=datamodule.data.description, seed=cfg.seed))
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test/"))
        finish_run(run_dir, metrics, f"{cfg.task_name}: {datamodule.data.description}", shown)
    return metrics


main = hydra_entry(train, "train")

if __name__ == "__main__":
    main()
