"""An exponential moving average of a network's weights: Mean Teacher's and FixMatch's teacher,
and the generators' EMA weights for sampling."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from lightly.models.utils import update_momentum


class EMATeacher(nn.Module):
    """A frozen copy of `student` whose weights follow an exponential moving average of the
    student's: teacher <- decay * teacher + (1 - decay) * student (lightly's update_momentum).
    Batch-norm statistics are the teacher's own, from its forward passes in training mode, unless
    `update` copies the student's."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(student).requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, decay: float, copy_buffers: bool = False) -> None:
        """`copy_buffers`: take the student's batch-norm statistics as they are, for a teacher
        that only evaluates and so never gathers statistics of its own (USB's EMA model)."""
        update_momentum(student, self.model, m=decay)
        if copy_buffers:
            for own, students in zip(self.model.buffers(), student.buffers()):
                own.copy_(students)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def ema_decay(step: int, decay: float) -> float:
    """Mean Teacher's warm start: the plain average of the weights so far until 1 - 1/(step+1)
    exceeds `decay`, so the random initial teacher is forgotten quickly."""
    return min(1.0 - 1.0 / (step + 1), decay)
