"""Uncertainty-aware Mean Teacher (Yu et al. 2019): the teacher's prediction is the mean of
several noisy passes; the consistency loss keeps only voxels whose predictive entropy is below a
threshold that rises from 0.75 to 1.0 times ln(C) with the ramp-up."""

from __future__ import annotations

import math

import torch

from workbench.semi.seg_mean_teacher import MeanTeacherSegmentation, noisy


def uncertainty_masked_mse(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mask): the mean squared probability difference over classes and over the voxels
    whose entropy is below `threshold` (for two classes, the paper's sum / (2 x voxel count))."""
    entropy = -(teacher_probs * torch.log(teacher_probs + 1e-6)).sum(1, keepdim=True)
    mask = (entropy < threshold).float()
    distance = (student_logits.softmax(1) - teacher_probs) ** 2
    return (mask * distance).sum() / (mask.sum() * distance.shape[1] + 1e-16), mask


class UncertaintyAwareMeanTeacher(MeanTeacherSegmentation):
    def __init__(self, uncertainty_passes: int = 4, **mean_teacher) -> None:
        super().__init__(**mean_teacher)
        self.save_hyperparameters()

    def consistency(self, student_logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            passes = [self.teacher(noisy(u, self.hparams.noise_std)).softmax(1) for _ in range(self.hparams.uncertainty_passes)]
        teacher_probs = torch.stack(passes).mean(0)
        threshold = (0.75 + 0.25 * self.rampup()) * math.log(self.hparams.num_classes)
        loss, mask = uncertainty_masked_mse(student_logits, teacher_probs, threshold)
        return loss, {"certain_fraction": mask.mean()}
