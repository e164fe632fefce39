"""Where the Hydra config tree is (inside the installed wheel, else the repository's configs/),
and the resolvers its configs use (run directory names, defaults for null values). Every
command imports this module for its `@hydra.main`, so the resolvers are registered before any
config is composed."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def config_dir() -> str:
    package = Path(__file__).resolve().parent
    shipped = package / "configs"
    return str(shipped if shipped.is_dir() else package.parent / "configs")


def launch_name() -> str:
    """The name of a run directory, the same in every process of one launch. torchrun and srun
    start each rank as its own process, which composes its own config: named by the moment, the
    ranks would name different directories and all but rank 0's would stay empty. They share the
    launch's id instead: torchrun's run id (a fresh one where torchrun makes it: --standalone, or
    one node without --master-port; else --rdzv-id), or the SLURM job and step. Anything else
    (one process, or Lightning's own DDP launcher, which hands its ranks rank 0's directory) is
    named by the moment."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id != "none":
        return f"torchrun-{run_id}"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}"
    if "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun's static rendezvous (several nodes, or a --master-port) without --rdzv-id
        print("warning: torchrun's static rendezvous without --rdzv-id: each rank names its own run directory (all but "
              "rank 0's stay empty); pass every node the same --rdzv-id=<id> or hydra.run.dir=<dir>", file=sys.stderr)
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def or_default(value, default):
    """`${or:${oc.select:data.image_size,null},32}`: the value, or the default where it is null."""
    return default if value is None else value


def backbone_for(task_kind: str) -> str:
    """`${backbone_for:${task_kind}}`: what pretraining trains by default: the segmentation UNet's
    own encoder where the downstream task segments, else a ResNet-18."""
    return "unet_encoder" if task_kind == "segmentation" else "resnet18"


OmegaConf.register_new_resolver("or", or_default, replace=True)
OmegaConf.register_new_resolver("backbone_for", backbone_for, replace=True)
# Cached like Hydra's own `now`: every use in one process names the same directory.
OmegaConf.register_new_resolver("launch_name", launch_name, use_cache=True, replace=True)
