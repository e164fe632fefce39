"""An ensemble of trained checkpoints, scored as one network: the members' class probabilities
averaged (MONAI's MeanEnsemble), as nnU-Net averages its folds' softmax outputs."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from monai.transforms import MeanEnsemble

from workbench.models.checkpoints import check_checkpoint_fits


class MeanProbabilityEnsemble(nn.Module):
    """The mean of the members' softmax outputs, returned as log-probabilities: softmax and
    cross-entropy read them as logits, so thresholds, AUC and the val loss see the average."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.mean = MeanEnsemble()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = self.mean([member(x).float().softmax(1) for member in self.members])
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()  # a certain 0 stays finite


def checkpoint_ensemble(task: nn.Module, paths: Sequence[str | Path]) -> MeanProbabilityEnsemble:
    """One copy of `task` per checkpoint (each checked to fit it), ensembled over the network each
    copy evaluates (`evaluated_network()`: an EMA teacher where the method has one)."""
    members = []
    for path in paths:
        member = copy.deepcopy(task)
        member.load_state_dict(check_checkpoint_fits(path, task)["state_dict"])
        members.append(member.evaluated_network())
    return MeanProbabilityEnsemble(members)
