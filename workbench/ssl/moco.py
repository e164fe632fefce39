"""MoCo v2 (Chen et al. 2020: momentum encoder, queue of negatives) and MoCo v3 (Chen et al.
2021: momentum encoder, prediction head, symmetric loss on in-batch negatives)."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead

from workbench.errors import WorkbenchError
from workbench.ssl.base import SSLMethod


class MoCo(SSLMethod):
    method = "moco"

    def __init__(
        self,
        version: int = 2,
        proj_hidden_dim: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 4096,
        **base,
    ) -> None:
        if version not in (2, 3):
            raise WorkbenchError(f"ssl.version={version}: MoCo versions 2 and 3 are implemented")
        super().__init__(**base)
        self.save_hyperparameters()
        self.method = f"moco_v{version}"
        if version == 2:
            self.projection = MoCoProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim)
            self.prediction = None
            bank = (queue_size, proj_dim)
        else:
            self.projection = MoCoProjectionHead(self.feature_dim, proj_hidden_dim, proj_dim, num_layers=3, batch_norm=True)
            self.prediction = BYOLPredictionHead(proj_dim, proj_hidden_dim, proj_dim)
            bank = 0
        self.backbone_target = self.frozen_copy(self.backbone)
        self.projection_target = self.frozen_copy(self.projection)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=bank, gather_distributed=self.hparams.gather_distributed)

    def momentum_pairs(self):
        return [(self.backbone, self.backbone_target), (self.projection, self.projection_target)]

    def _key(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.projection_target(self.backbone_target(x)).detach()

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        v0, v1 = views[:2]
        if self.prediction is None:  # v2: one query/key pair against the queue
            return self.criterion(self.projection(self.backbone(v0)), self._key(v1))
        q0, q1 = (self.prediction(self.projection(self.backbone(v))) for v in (v0, v1))
        # v3's symmetric contrastive loss, scaled by 2 * temperature as in the paper
        scale = 2 * self.hparams.temperature
        return scale * 0.5 * (self.criterion(q0, self._key(v1)) + self.criterion(q1, self._key(v0)))
