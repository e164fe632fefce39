"""`workbench pretrain`: self-supervised pretraining of a backbone on the datamodule's training
images with their labels hidden (plus an unlabeled archive when given), with online kNN and
linear-probe evaluation on the labeled view, ending with `backbone.pt` + `backbone.json` in the
run directory for the downstream tasks (`task.pretrained=<run dir>`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from workbench.config_path import config_dir
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.runs import run_reporting_errors, save_config, set_environment_defaults, write_run_summary
from workbench.train import command_line_overrides, instantiate_all


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    set_environment_defaults()
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.ssl, **datamodule.task_kwargs())
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=instantiate_all(cfg.get("logger")) or False, callbacks=instantiate_all(cfg.get("callbacks"))
    )
    resume = cfg.get("ckpt_path")
    if resume:
        check_checkpoint_fits(resume, model)
    if trainer.is_global_zero:
        save_config(cfg, run_dir, command_line_overrides())
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {
        "run_dir": str(run_dir),
        "method": model.method,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "pretrain_seconds": seconds,
        "pretrain_images": len(datamodule.views["pretrain"]),
    }
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    if trainer.is_global_zero:
        weights = model.export(run_dir, data=datamodule.data.description, seed=cfg.seed, pretrain_seconds=seconds)
        metrics["backbone"] = str(weights)
        metrics["files"] = write_run_summary(run_dir, metrics, title=f"{model.method}: {datamodule.data.description}")
        print(f"Backbone: {weights}\nRun directory: {run_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pretrain")
def main(cfg: DictConfig) -> Any:
    metrics = run_reporting_errors(pretrain, cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
