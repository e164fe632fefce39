"""Optimizers with linear warm-up then cosine decay, stepped per optimizer step."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from lightly.utils.lars import LARS

from workbench.errors import WorkbenchError

OPTIMIZERS = ("adamw", "sgd", "lars")


def schedule(total_steps: int, warmup_steps: int, start_step: int = 0):
    """The lr factor of a step: 0 before `start_step`, then a linear warm-up and a cosine decay
    over the steps left."""
    total = max(1, total_steps - start_step)
    warmup = min(warmup_steps, total - 1)

    def factor(step: int) -> float:
        step -= start_step
        if step < 0:
            return 0.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


def warmup_cosine(
    params, name: str, lr: float, weight_decay: float, total_steps: int, warmup_steps: int, steps_per_epoch: float = 1.0
) -> dict:
    """`adamw` (robust default), `sgd` (momentum 0.9) or `lars` (lightly's, for large batches).
    `params` are tensors or optimizer groups; a group's `start_epoch` holds it at lr 0 until
    that epoch (`steps_per_epoch` optimizer steps each), then it warms up and decays on its own."""
    params = [dict(p) if isinstance(p, dict) else p for p in params]
    groups = params if params and isinstance(params[0], dict) else [{}]
    starts = [int(g.pop("start_epoch", 0) * steps_per_epoch) for g in groups]
    if name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    elif name == "lars":
        optimizer = LARS(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise WorkbenchError(f"optimizer '{name}': expected one of {OPTIMIZERS}")
    total_steps = max(1, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule(total_steps, warmup_steps, s) for s in starts])
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def configure_warmup_cosine(module: pl.LightningModule, optimizer: str = "adamw") -> dict:
    """For a module whose hyperparameters hold `lr`, `weight_decay` and `warmup_epochs`; its
    `parameter_groups()` (optimizer groups, each may set its own `lr` and `start_epoch`) when it
    has one."""
    trainer = module.trainer
    total = int(trainer.estimated_stepping_batches)  # max_steps, or the epochs' optimizer steps
    # Optimizer steps per epoch, for the settings counted in epochs (warm-up, start_epoch); also
    # right when the budget is given in steps (trainer.max_steps with max_epochs=-1).
    if trainer.train_dataloader is None:  # a budget in steps is known without the loader; epochs are not
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else total / max(1, trainer.max_epochs or 1)
    hp = module.hparams
    groups = module.parameter_groups() if hasattr(module, "parameter_groups") else [p for p in module.parameters() if p.requires_grad]
    return warmup_cosine(
        groups,
        optimizer,
        lr=hp.lr,
        weight_decay=hp.weight_decay,
        total_steps=total,
        warmup_steps=int(hp.warmup_epochs * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
    )


def configure_net_warmup_cosine(module: pl.LightningModule, weight_decay: float = 0.0) -> dict:
    """AdamW on `module.net` with `lr` and `warmup_steps` (in optimizer steps) from its
    hyperparameters, cosine-decayed over the whole run (the generators)."""
    hp = module.hparams
    return warmup_cosine(
        module.net.parameters(), "adamw", lr=hp.lr, weight_decay=weight_decay,
        total_steps=int(module.trainer.estimated_stepping_batches), warmup_steps=hp.warmup_steps,
    )
