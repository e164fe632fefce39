"""`workbench train`: fit a downstream task (classification or segmentation) on the shared
datamodule, select the best checkpoint on the in-budget validation view, test it once on the
test split, and write the run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from workbench.config_path import config_dir
from workbench.errors import WorkbenchError
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.runs import run_command, save_config, set_environment_defaults, write_run_summary


def command_line_overrides() -> list[str] | None:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def instantiate_all(group: DictConfig | None) -> list:
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


def build(cfg: DictConfig, model_key: str) -> tuple[Any, pl.LightningModule, pl.Trainer]:
    """What every command that trains or evaluates does first: seed, build the datamodule, the
    module `cfg[model_key]` (told the data's channels, classes and dimensions) and the trainer
    with its loggers and callbacks."""
    set_environment_defaults()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    kwargs = datamodule.task_kwargs()
    if "image_shape" in cfg[model_key] and cfg[model_key].image_shape is None:  # generators: the data's size
        kwargs["image_shape"] = datamodule.image_shape()
    # Plain lists and dicts in the hyperparameters, so checkpoints load with weights_only=True.
    model = instantiate(cfg[model_key], _convert_="all", **kwargs)
    if model.data_task not in ("pretrain", datamodule.data.task):  # pretraining takes any images
        raise WorkbenchError(
            f"task={type(model).__name__} needs {model.data_task} data, but data={datamodule.data.description} "
            f"provides {datamodule.data.task} data"
        )
    trainer: pl.Trainer = instantiate(
        cfg.trainer, strategy=ddp_strategy_for(model, cfg.trainer.get("strategy", "auto")),
        logger=instantiate_all(cfg.get("logger")) or False, callbacks=instantiate_all(cfg.get("callbacks")),
    )
    return datamodule, model, trainer


def ddp_strategy_for(model: pl.LightningModule, strategy: Any) -> Any:
    """A module that steps several optimizers by hand (the GAN) leaves some parameters out of
    each backward pass, which plain DDP rejects; its DDP variants detect those parameters."""
    manual_ddp = isinstance(strategy, str) and strategy.startswith("ddp") and "find_unused" not in strategy
    return f"{strategy}_find_unused_parameters_true" if manual_ddp and not model.automatic_optimization else strategy


def fit_on_datamodule(cfg: DictConfig, model_key: str) -> tuple[Any, pl.LightningModule, pl.Trainer, float]:
    """`build`, check a checkpoint to resume from, save the config, fit. Returns the pieces and
    the seconds `fit` took."""
    datamodule, model, trainer = build(cfg, model_key)
    resume = cfg.get("ckpt_path")
    if resume:
        check_checkpoint_fits(resume, model)
    if trainer.is_global_zero:
        save_config(cfg, cfg.paths.output_dir, command_line_overrides())
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    return datamodule, model, trainer, time.perf_counter() - start


def train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "task")

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    metrics: dict[str, Any] = {
        "run_dir": str(run_dir),
        "best_checkpoint": best or None,
        "monitor": checkpoint.monitor if checkpoint is not None else None,
        "best_val_score": float(checkpoint.best_model_score) if best and checkpoint.best_model_score is not None else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "train_seconds": seconds,
        "labeled_images": len(datamodule.views["labeled"]),
        "val_images": len(datamodule.views["val"]),
    }
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if trainer.is_global_zero:
        if hasattr(model, "export"):  # classification: the selected model's backbone, for reuse
            metrics["backbone"] = str(model.export(run_dir, data=datamodule.data.description, seed=cfg.seed))
        metrics["files"] = write_run_summary(run_dir, metrics, title=f"{cfg.task_name}: {datamodule.data.description}")
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test/"))
        print(f"{shown}\nRun directory: {run_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> Any:
    return run_command(train, cfg)


if __name__ == "__main__":
    main()
