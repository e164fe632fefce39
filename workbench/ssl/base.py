"""What every self-supervised method shares: backbone, optimizer with warm-up and cosine decay,
momentum (EMA) targets with a cosine momentum schedule, online kNN and linear-probe evaluation,
and the export of the backbone with its provenance.

A method subclasses `SSLMethod`, builds its heads and loss (from lightly) in `__init__`, and
implements `ssl_loss(views)`, where `views` is the list of augmented batches of one step.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torchmetrics.utilities.distributed import gather_all_tensors

from workbench.models.backbones import build_backbone
from workbench.models.optim import configure_warmup_cosine
from workbench.models.pretrained import backbone_provenance, export_backbone
from workbench.ssl.online_eval import online_metrics


class SSLMethod(pl.LightningModule):
    data_task = "pretrain"
    method = "base"

    def __init__(
        self,
        in_channels: int,
        spatial_dims: int = 2,
        num_classes: int = 0,
        backbone: str = "resnet18",
        small_input: bool = True,
        image_size: int = 32,
        width: float = 1.0,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        momentum_start: float = 0.99,
        knn_k: int = 20,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone, self.feature_dim = build_backbone(backbone, spatial_dims, in_channels, small_input, image_size, width)
        self._features: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._max_steps = 1

    # ----- what a method provides --------------------------------------------------------------
    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs updated by EMA before each step; none by default."""
        return []

    # ----- helpers for methods -----------------------------------------------------------------
    @staticmethod
    def frozen_copy(module: nn.Module) -> nn.Module:
        target = copy.deepcopy(module)
        deactivate_requires_grad(target)
        return target

    def current_momentum(self) -> float:
        return cosine_schedule(self.global_step, self._max_steps, self.hparams.momentum_start, 1.0)

    # ----- training ----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._max_steps = max(1, int(self.trainer.estimated_stepping_batches))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pairs = self.momentum_pairs()
        if pairs:
            m = self.current_momentum()
            for online, target in pairs:
                update_momentum(online, target, m=m)
        views = batch["views"]
        loss = self.ssl_loss(views)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(views[0]), sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_warmup_cosine(self, self.hparams.optimizer)

    # ----- online evaluation: loader 0 = labeled subset (bank), loader 1 = val subset --------------
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        with torch.no_grad():
            features = self.backbone(batch["image"]).float()
        self._features.setdefault(dataloader_idx, []).append((features, batch["label"]))

    def _gathered(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = self._features.get(idx, [])  # a rank may get no image of a tiny view
        feats = torch.cat([f for f, _ in pairs]) if pairs else torch.zeros(0, self.feature_dim, device=self.device)
        labels = torch.cat([y for _, y in pairs]) if pairs else torch.zeros(0, dtype=torch.long, device=self.device)
        if self.trainer.world_size > 1:
            # The ranks hold different numbers of images (the evaluation sampler does not pad with
            # repeats), which a plain all_gather cannot take; torchmetrics pads and trims.
            feats, labels = torch.cat(gather_all_tensors(feats)), torch.cat(gather_all_tensors(labels))
        return feats.cpu(), labels.cpu()

    def on_validation_epoch_end(self) -> None:
        loaders = self.trainer.val_dataloaders  # decided alike on every rank, unlike the features each holds
        if isinstance(loaders, (list, tuple)) and len(loaders) == 2 and self.hparams.num_classes >= 2:
            (bank, bank_y), (query, query_y) = self._gathered(0), self._gathered(1)
            metrics = online_metrics(bank, bank_y, query, query_y, self.hparams.num_classes, self.hparams.knn_k)
            for name, value in metrics.items():
                self.log(f"val/{name}", value, prog_bar=name.endswith("auc"))
        self._features = {}

    # ----- the artifact ------------------------------------------------------------------------
    def provenance(self, **extra: Any) -> dict[str, Any]:
        return backbone_provenance(
            self.hparams, self.method, feature_dim=self.feature_dim, epochs=self.current_epoch, steps=self.global_step, **extra
        )

    def export(self, directory: str | Path, **extra: Any) -> Path:
        return export_backbone(self.backbone, directory, self.provenance(**extra))
