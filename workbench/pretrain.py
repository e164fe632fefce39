"""`workbench pretrain`: self-supervised pretraining of a backbone on the datamodule's training
images with their labels hidden (plus an unlabeled archive when given), with online kNN and
linear-probe evaluation on the labeled view, ending with `backbone.pt` + `backbone.json` in the
run directory for the downstream tasks (`task.pretrained=<run dir>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from workbench.config_path import config_dir
from workbench.runs import run_command, write_run_summary
from workbench.train import fit_on_datamodule


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer, seconds = fit_on_datamodule(cfg, "ssl")
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
    return run_command(pretrain, cfg)


if __name__ == "__main__":
    main()
