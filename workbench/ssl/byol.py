"""BYOL (Grill et al. 2020): an online network predicts a momentum target's projection."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from workbench.ssl.base import SSLMethod


class BYOL(SSLMethod):
    method = "byol"

    def __init__(self, proj_hidden_dim: int = 1024, proj_dim: int = 256, **base) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.projection = BYOLProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim)
        self.prediction = BYOLPredictionHead(proj_dim, proj_hidden_dim, proj_dim)
        self.backbone_target = self.frozen_copy(self.backbone)
        self.projection_target = self.frozen_copy(self.projection)
        self.criterion = NegativeCosineSimilarity()

    def momentum_pairs(self):
        return [(self.backbone, self.backbone_target), (self.projection, self.projection_target)]

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        v0, v1 = views[:2]
        p0, p1 = (self.prediction(self.projection(self.backbone(v))) for v in (v0, v1))
        with torch.no_grad():
            t0, t1 = (self.projection_target(self.backbone_target(v)).detach() for v in (v0, v1))
        return 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
