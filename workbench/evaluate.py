"""`workbench evaluate ckpt_path=<checkpoint> [same data and task overrides as the training
run]`: score a trained classification or segmentation checkpoint on the validation view (which
also picks the decision threshold) and once on the test split, on one process or many (DDP:
every rank scores its own share of the images, none twice, and the scores are gathered)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from workbench.config_path import config_dir
from workbench.errors import WorkbenchError
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.runs import run_command, save_config, write_run_summary
from workbench.train import build, command_line_overrides


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("ckpt_path"):
        raise WorkbenchError("ckpt_path: evaluate needs the checkpoint to score (e.g. <train run>/checkpoints/last.ckpt)")
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer = build(cfg, "task")
    check_checkpoint_fits(cfg.ckpt_path, model)
    if trainer.is_global_zero:
        save_config(cfg, run_dir, command_line_overrides())
    metrics: dict[str, Any] = {"run_dir": str(run_dir), "checkpoint": cfg.ckpt_path, "world_size": trainer.world_size}
    for stage, run in (("val", trainer.validate), ("test", trainer.test)):
        run(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")})
    if trainer.is_global_zero:
        metrics["files"] = write_run_summary(run_dir, metrics, title=f"evaluate: {cfg.ckpt_path}")
        print(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("val/", "test/"))))
        print(f"Run directory: {run_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> Any:
    return run_command(evaluate, cfg)


if __name__ == "__main__":
    main()
