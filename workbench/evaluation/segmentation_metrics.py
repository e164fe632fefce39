"""Per-image segmentation metrics per foreground class, as MONAI and nnU-Net report them: Dice,
the 95th-percentile Hausdorff distance (HD95) and the normalised surface Dice (NSD) at a
tolerance. Distances are in `spacing` units (mm where the data's voxel spacing is given), else in
voxels of the network's grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice


def one_hot_pair(logits: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax prediction and the label as one-hot (B, C, *spatial) tensors."""
    pred = F.one_hot(logits.argmax(1), num_classes).movedim(-1, 1)
    truth = F.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1)
    return pred, truth


def surface_metrics(
    logits: torch.Tensor, label: torch.Tensor, num_classes: int, spacing: Sequence[float] | None = None, tolerance: float = 1.0
) -> dict[str, torch.Tensor]:
    """(B, C-1) per image and foreground class: `dice`, `hd95` and `surface_dice` (at
    `tolerance`). A class absent from both prediction and label scores Dice 1 and NaN
    distances (nothing to measure); absent from one of them, HD95 is infinite and NSD 0."""
    pred, truth = one_hot_pair(logits, label, num_classes)
    pred, truth = pred.cpu(), truth.cpu()  # MONAI's distance transforms run on the CPU here
    spacing = list(spacing) if spacing is not None else None
    return {
        "dice": compute_dice(pred, truth, include_background=False, ignore_empty=False),
        "hd95": compute_hausdorff_distance(pred, truth, include_background=False, percentile=95, spacing=spacing),
        "surface_dice": compute_surface_dice(pred, truth, [tolerance] * (num_classes - 1), include_background=False, spacing=spacing),
    }
