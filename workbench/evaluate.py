"""`workbench evaluate ckpt_path=<checkpoint> [same data and task overrides as the training
run]`: score a trained classification or segmentation checkpoint on the validation subset (which
also picks the decision threshold) and once on the test split, on one process or many (DDP:
every rank scores its own share of the images, none twice, and the scores are gathered).

`ckpt_path=[a.ckpt,b.ckpt,...]` scores the checkpoints' ensemble: their class probabilities
averaged (per image for classifiers, per voxel for segmentation), the decision threshold chosen
for the average as for one model.

`run_dir=<run dir>` scores a finished run on the data given here (external validation on another
dataset's test split): a `workbench train` run's selected checkpoint, an evaluated ensemble, or
a pipeline run's finetuned model (a cross-validated one: its fold ensemble), each with the task
config (architecture, decision threshold) it was trained and scored with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from workbench.errors import WorkbenchError
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.models.ensemble import checkpoint_ensemble
from workbench.runner import build, command_line_overrides, finish_run, hydra_entry, logged
from workbench.runs import checkpoint_paths, finished_run, save_config


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("run_dir"):
        paths, scored = finished_run(cfg.run_dir)
        with open_dict(cfg):
            cfg.task, cfg.ckpt_path = scored.task, paths
    paths = checkpoint_paths(cfg.get("ckpt_path"))
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer = build(cfg, "task")
    single = paths[0] if len(paths) == 1 else None
    if single:
        check_checkpoint_fits(single, model)
    elif getattr(model, "scores_ensembles", False):
        model.ensemble = checkpoint_ensemble(model, paths)  # scored instead of the task's own weights
    else:
        raise WorkbenchError(f"ckpt_path: a list of {len(paths)} checkpoints (an ensemble) needs a task scored by its "
                             f"class probabilities (a classifier or a segmentation network); task {type(model).__name__} is not")
    if trainer.is_global_zero:
        save_config(cfg, run_dir, command_line_overrides())
    metrics: dict[str, Any] = {"run_dir": str(run_dir), "checkpoint": single or paths, "world_size": trainer.world_size}
    for stage, run in (("val", trainer.validate), ("test", trainer.test)):
        run(model, datamodule=datamodule, ckpt_path=single, weights_only=True)
        metrics.update(logged(trainer, f"{stage}/"))
    if trainer.is_global_zero:
        title = f"evaluate: {single}" if single else f"evaluate: an ensemble of {len(paths)} checkpoints"
        finish_run(run_dir, metrics, title, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("val/", "test/"))))
    return metrics


main = hydra_entry(evaluate, "evaluate")


if __name__ == "__main__":
    main()
