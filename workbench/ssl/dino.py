"""DINO (Caron et al. 2021): a student matches a momentum teacher's centred, sharpened output
across multi-crop views; the teacher sees the global views only. Works with ResNets and ViTs
(a ViT's position embeddings are fixed, so its local crops are resized to the global size)."""

from __future__ import annotations

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad

from workbench.ssl.base import SSLMethod


class DINO(SSLMethod):
    method = "dino"

    def __init__(
        self,
        proj_hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        output_dim: int = 1024,
        n_global: int = 2,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        freeze_last_layer: int = 1,
        **base,
    ) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        def make_head() -> DINOProjectionHead:
            return DINOProjectionHead(self.feature_dim, proj_hidden_dim, bottleneck_dim, output_dim, freeze_last_layer=freeze_last_layer)

        self.head = make_head()
        self.backbone_target = self.frozen_copy(self.backbone)
        # The head's weight-norm layer cannot be deep-copied: build a twin and copy its weights.
        self.head_target = make_head()
        self.head_target.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.head_target)
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
        )

    def momentum_pairs(self):
        return [(self.backbone, self.backbone_target), (self.head, self.head_target)]

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        global_views = views[: self.hparams.n_global]
        with torch.no_grad():
            teacher = [self.head_target(self.backbone_target(v)).detach() for v in global_views]
        student = [self.head(self.backbone(v)) for v in views]
        return self.criterion(teacher, student, epoch=self.current_epoch)

    def on_after_backward(self) -> None:
        # DINO keeps the last layer fixed during the first epoch(s) for stability.
        self.head.cancel_last_layer_gradients(current_epoch=self.current_epoch)
