"""Mean Teacher for segmentation (2D or 3D): student and EMA teacher see the same unlabeled image
under independent Gaussian noise; their per-voxel class probabilities are pulled together.
Validation and test use the teacher."""

from __future__ import annotations

import torch
import torch.nn as nn

from workbench.models.ema import EMATeacher, ema_decay
from workbench.semi.base import SemiSupervised
from workbench.tasks.segmentation import SegmentationTask


def noisy(x: torch.Tensor, std: float) -> torch.Tensor:
    """x plus clipped Gaussian noise (at most 2 std), the perturbation of the UA-MT paper."""
    return x + torch.clamp(torch.randn_like(x) * std, -2 * std, 2 * std)


class MeanTeacherSegmentation(SemiSupervised, SegmentationTask):
    def __init__(
        self, ema_decay: float = 0.99, noise_std: float = 0.1, unlabeled_weight: float = 0.1, rampup_epochs: float = 5.0, **task
    ) -> None:
        super().__init__(**task)
        self.save_hyperparameters()
        self.teacher = EMATeacher(self.net)

    @property
    def eval_net(self) -> nn.Module:
        return self.teacher

    def semi_losses(self, labeled: dict, unlabeled: dict):
        n = len(labeled["image"])
        u = unlabeled["image"]
        logits = self.net(torch.cat([labeled["image"], noisy(u, self.hparams.noise_std)]))
        supervised = self.loss(logits[:n], labeled["label"])
        consistency, extra = self.consistency(logits[n:], u)
        return supervised, consistency, extra

    def teacher_logits(self, u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(noisy(u, self.hparams.noise_std))

    def consistency(self, student_logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Mean squared difference of the class probabilities over every voxel."""
        return ((student_logits.softmax(1) - self.teacher_logits(u).softmax(1)) ** 2).mean(), {}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.teacher.update(self.net, ema_decay(self.global_step, self.hparams.ema_decay))
