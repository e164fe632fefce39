"""Mean Teacher (Tarvainen & Valpola 2017) for classification: the student's predictions on one
augmented view are pulled towards an EMA teacher's on another view of the same unlabeled image;
validation and test use the teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.models.ema import EMATeacher, ema_decay
from workbench.semi.base import SemiSupervised
from workbench.tasks.classification import ClassificationTask


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between class probabilities, per item and class."""
    return F.mse_loss(student_logits.softmax(1), teacher_logits.detach().softmax(1))


class MeanTeacher(SemiSupervised, ClassificationTask):
    """Unlabeled batches carry two views (data.unlabeled_views: weak_strong with n_weak=2, n_strong=0)."""

    def __init__(self, ema_decay: float = 0.99, unlabeled_weight: float = 10.0, rampup_epochs: float = 5.0, **task) -> None:
        super().__init__(**task)
        self.save_hyperparameters()
        self.teacher = EMATeacher(self.network())

    def semi_losses(self, labeled: dict, unlabeled: dict):
        student_view, teacher_view = unlabeled["views"][:2]
        n = len(labeled["image"])
        logits = self(torch.cat([labeled["image"], student_view]))
        supervised = F.cross_entropy(logits[:n], labeled["label"].long(), label_smoothing=self.hparams.label_smoothing)
        with torch.no_grad():
            teacher_logits = self.teacher(teacher_view)
        return supervised, softmax_mse(logits[n:], teacher_logits), {}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.teacher.update(self.network(), ema_decay(self.global_step, self.hparams.ema_decay))
