"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from workbench.ssl.base import SSLMethod


class SimCLR(SSLMethod):
    method = "simclr"

    def __init__(self, proj_hidden_dim: int = 512, proj_dim: int = 128, temperature: float = 0.1, **base) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.projection = SimCLRProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=self.hparams.gather_distributed)

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        z0, z1 = (self.projection(self.backbone(v)) for v in views[:2])
        return self.criterion(z0, z1)
