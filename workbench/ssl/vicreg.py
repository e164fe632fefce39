"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on two views."""

from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from workbench.ssl.base import SSLMethod


class VICReg(SSLMethod):
    method = "vicreg"

    def __init__(self, proj_hidden_dim: int = 1024, proj_dim: int = 1024, **base) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.projection = VICRegProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim, num_layers=3)
        self.criterion = VICRegLoss(gather_distributed=self.hparams.gather_distributed)

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        z0, z1 = (self.projection(self.backbone(v)) for v in views[:2])
        return self.criterion(z0, z1)
