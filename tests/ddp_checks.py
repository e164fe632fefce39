"""Callbacks that check what DDP needs, added to a run's config as
`+callbacks.<name>._target_=tests.ddp_checks.<Callback>`."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch


class EveryParameterLearns(pl.Callback):
    """Fails the run when a backward pass leaves a trainable parameter without a gradient: plain
    DDP (find_unused_parameters=False) stops with an error on exactly that, so a module that
    passes here runs under DDP unchanged. Modules that step their optimizers by hand (the GAN)
    leave parameters out on purpose and get DDP's unused-parameter detection instead."""

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.automatic_optimization:
            return
        missing = [name for name, p in pl_module.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            raise AssertionError(f"{type(pl_module).__name__}: no gradient reached {missing}")


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double() for p in module.parameters()])


class RankWeights(pl.Callback):
    """At the end of fit, gathers every rank's parameters on rank 0, which writes how far the
    ranks drifted apart (DDP keeps them equal) and how far training moved them (so that equality
    is not trivial) to `rank_weights.json` in the run directory."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = flat_parameters(pl_module).clone()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        end = flat_parameters(pl_module)
        every_rank = pl_module.all_gather(end)  # (world_size, n)
        if trainer.is_global_zero:
            report = {
                "world_size": trainer.world_size,
                "max_rank_difference": float((every_rank - every_rank[0]).abs().max()),
                "max_training_change": float((end - self.start).abs().max()),
            }
            Path(trainer.default_root_dir, "rank_weights.json").write_text(json.dumps(report))


class RankPrototypes(pl.Callback):
    """For a prototypical network: records the ids of each rank's training episodes, and at the
    end of validation compares every rank's prototypes with those of the whole labeled view
    embedded on one process. Rank 0 writes `rank_prototypes.json` in the run directory."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.episodes = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.episodes.append(sorted(batch["id"]))

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from torch.utils.data import DataLoader

        from workbench.semi.protonet import class_prototypes

        if trainer.sanity_checking:
            return
        whole_view = DataLoader(trainer.datamodule.dataset("labeled", train=False), batch_size=4)  # not sharded
        features, labels = zip(*[(pl_module.backbone(b["image"].to(pl_module.device)), b["label"]) for b in whole_view])
        expected = class_prototypes(torch.cat(features), torch.cat(labels).to(pl_module.device), len(pl_module.prototypes))
        difference = float((pl_module.prototypes - expected).abs().max())
        differences = pl_module.all_gather(torch.tensor(difference, device=pl_module.device))
        episodes = [None] * trainer.world_size
        torch.distributed.all_gather_object(episodes, self.episodes)
        if trainer.is_global_zero:
            report = {
                "labeled_images": len(trainer.datamodule.subsets["labeled"]),
                "max_difference_from_one_process": float(differences.max()),
                "episodes_per_rank": episodes,
            }
            Path(trainer.default_root_dir, "rank_prototypes.json").write_text(json.dumps(report))
