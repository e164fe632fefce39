"""Cross Pseudo Supervision (Chen et al. 2021): two segmentation networks of the same design but
different initialisations; on unlabeled images each is trained on the other's hard
pseudo-labels. Validation and test use the first network."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.models.segmentation import build_segmentation_net
from workbench.semi.base import SemiSupervised
from workbench.tasks.segmentation import SegmentationTask


def cross_pseudo_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """CE(a, argmax b) + CE(b, argmax a), each per voxel."""
    pseudo_a, pseudo_b = logits_a.detach().argmax(1), logits_b.detach().argmax(1)
    return F.cross_entropy(logits_a, pseudo_b) + F.cross_entropy(logits_b, pseudo_a)


class CrossPseudoSupervision(SemiSupervised, SegmentationTask):
    def __init__(self, unlabeled_weight: float = 1.0, rampup_epochs: float = 0.0, **task) -> None:
        super().__init__(**task)
        self.save_hyperparameters()
        hp = self.hparams
        # A second draw of the initial weights: the two networks start (and stay) different.
        self.net_b = build_segmentation_net(
            hp.net, hp.spatial_dims, hp.in_channels, hp.num_classes, hp.channels, hp.num_res_units, hp.dropout
        )

    def semi_losses(self, labeled: dict, unlabeled: dict):
        n = len(labeled["image"])
        x = torch.cat([labeled["image"], unlabeled["image"]])
        logits_a, logits_b = self.net(x), self.net_b(x)
        supervised = self.loss(logits_a[:n], labeled["label"]) + self.loss(logits_b[:n], labeled["label"])
        return supervised, cross_pseudo_loss(logits_a[n:], logits_b[n:]), {}
