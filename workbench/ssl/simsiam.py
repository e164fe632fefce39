"""SimSiam (Chen & He 2021): BYOL without the momentum encoder; a stop-gradient suffices."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

from workbench.ssl.base import SSLMethod


class SimSiam(SSLMethod):
    method = "simsiam"

    def __init__(self, proj_hidden_dim: int = 512, proj_dim: int = 512, pred_hidden_dim: int = 128, **base) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.projection = SimSiamProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim)
        self.prediction = SimSiamPredictionHead(proj_dim, pred_hidden_dim, proj_dim)
        self.criterion = NegativeCosineSimilarity()

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        z0, z1 = (self.projection(self.backbone(v)) for v in views[:2])
        p0, p1 = self.prediction(z0), self.prediction(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
