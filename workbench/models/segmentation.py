"""Segmentation networks from MONAI, 2D or 3D through `spatial_dims`."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from monai.networks.nets import BasicUNet, UNet

from workbench.errors import WorkbenchError

NETS = ("unet", "basic_unet")


def build_segmentation_net(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    num_res_units: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """`unet`: MONAI's residual UNet (stride-2 levels); `basic_unet`: the classic 2-conv UNet
    (MONAI's BasicUNet, which takes exactly six feature sizes)."""
    if name == "unet":
        return UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
            dropout=dropout,
        )
    if name == "basic_unet":
        if len(channels) != 6:
            raise WorkbenchError(f"task.channels={list(channels)}: basic_unet expects six feature sizes")
        return BasicUNet(spatial_dims, in_channels, num_classes, features=tuple(channels), dropout=dropout)
    raise WorkbenchError(f"segmentation net '{name}': expected one of {NETS}")
