"""The encoder path of the segmentation task's MONAI UNet as a self-supervised backbone
(`ssl.backbone=unet_encoder`), so that pretraining on unlabeled volumes hands the segmentation
network its own first half, as 3D SSL for segmentation does (Models Genesis, SwinUNETR's
pretraining): the down layers, top to bottom, then the bottom layer, globally pooled.

The encoder is built from the very UNet the segmentation task builds (MONAI's `UNet`, strides of
2, `num_res_units` residual units), so its parameters carry the same shapes; `encoder_of(unet)`
gives the same view over a UNet's own modules, into which the pretrained weights then load.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet

# The segmentation task's default channels and residual units (configs/task/segmentation.yaml),
# which `width` scales.
UNET_CHANNELS = (16, 32, 64, 128)
UNET_RES_UNITS = 2


def unet_encoder_channels(width: float) -> list[int]:
    return [max(4, round(c * width)) for c in UNET_CHANNELS]


class UNetEncoder(nn.Module):
    """Features (B, channels[-1]) of the UNet's encoder path for a (B, C, *spatial) batch."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x.flatten(2).mean(2)


def encoder_of(unet: UNet) -> UNetEncoder:
    """The UNet's encoder path, sharing its modules. MONAI nests each level as
    Sequential(down, SkipConnection(next level), up), with the bottom layer innermost."""
    layers, block = [], unet.model
    while True:
        layers.append(block[0])
        inner = block[1].submodule
        if isinstance(inner, nn.Sequential) and len(inner) == 3 and isinstance(inner[1], SkipConnection):
            block = inner
        else:
            layers.append(inner)
            return UNetEncoder(layers)


def build_unet_encoder(spatial_dims: int, in_channels: int, width: float) -> tuple[UNetEncoder, int]:
    """A fresh encoder with the segmentation task's UNet layout at `width` (its decoder is not kept)."""
    channels = unet_encoder_channels(width)
    unet = UNet(spatial_dims, in_channels, out_channels=2, channels=channels, strides=(2,) * (len(channels) - 1),
                num_res_units=UNET_RES_UNITS)
    return encoder_of(unet), channels[-1]
