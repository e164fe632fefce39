"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings is pushed
towards the identity."""

from __future__ import annotations

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from workbench.ssl.base import SSLMethod


class BarlowTwins(SSLMethod):
    method = "barlow_twins"

    def __init__(self, proj_hidden_dim: int = 1024, proj_dim: int = 1024, lambda_param: float = 5e-3, **base) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.projection = BarlowTwinsProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=self.hparams.gather_distributed)

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        z0, z1 = (self.projection(self.backbone(v)) for v in views[:2])
        return self.criterion(z0, z1)
