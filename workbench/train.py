"""`workbench train`: fit a downstream task (classification or segmentation) on the shared
datamodule, select the model (`selection=val`: the best checkpoint on the in-budget validation
subset; `last`: the weights at the end of the step budget, no selection), test it once on the
test split, and write the run directory. A cross-validation fold run (`data.fold`) also writes
its model's predictions on the held-out fold (`held_out.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from workbench.errors import WorkbenchError
from workbench.evaluation.out_of_fold import held_out_predictions
from workbench.io import write_json_atomic
from workbench.runner import finish_run, fit_on_datamodule, fit_summary, hydra_entry, logged

SELECTIONS = ("val", "last")


def train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    selection = cfg.get("selection", "val")
    if selection not in SELECTIONS:
        raise WorkbenchError(f"selection={selection!r}: expected one of {SELECTIONS}")
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "task")

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None and selection == "val" else ""
    monitor = checkpoint.monitor if checkpoint is not None else None
    if best:
        score = checkpoint.best_model_score
    else:  # the last validation's value: what a sweeper ranks a run without selection by
        score = trainer.callback_metrics.get(monitor) if monitor else None
    metrics: dict[str, Any] = {
        **fit_summary(trainer, run_dir, "train_seconds", seconds),
        "selection": selection,
        "best_checkpoint": best or None,
        "monitor": monitor,
        "best_val_score": float(score) if score is not None else None,
        "labeled_images": len(datamodule.subsets["labeled"]),
        "val_images": len(datamodule.subsets["val"]),
    }
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(logged(trainer, "test/"))
    if trainer.is_global_zero:
        if datamodule.fold is not None:  # the tested model's predictions on its held-out fold
            metrics["held_out"] = str(write_json_atomic(run_dir / "held_out.json", held_out_predictions(model, datamodule)))
        if hasattr(model, "export"):  # classification: the selected model's backbone, for reuse
            metrics["backbone"] = str(model.export(run_dir, data=datamodule.data.description, seed=cfg.seed))
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test/"))
        finish_run(run_dir, metrics, f"{cfg.task_name}: {datamodule.data.description}", shown)
    return metrics


main = hydra_entry(train, "train")

if __name__ == "__main__":
    main()
