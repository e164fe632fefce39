"""Feature extractors for 2D and 3D images with any number of input channels.

`resnet18`/`resnet50`: torchvision's in 2D, MONAI's (same block layout) in 3D.
`densenet121`: MONAI's, 2D or 3D. `small_input=True` swaps the stem for a 3x3 stride-1 conv with
no max-pool, the usual choice for 28-64 px images (MedMNIST), which a 7x7/2 stem plus pooling
would shrink to almost nothing.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision
from monai.networks import nets

from workbench.errors import WorkbenchError

BACKBONES = ("resnet18", "resnet50", "densenet121")


def _torchvision_resnet(name: str, in_channels: int, small_input: bool) -> tuple[nn.Module, int]:
    net = getattr(torchvision.models, name)(weights=None)
    if small_input:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _monai_resnet(name: str, in_channels: int, small_input: bool) -> tuple[nn.Module, int]:
    net = getattr(nets, name)(
        spatial_dims=3,
        n_input_channels=in_channels,
        conv1_t_size=3 if small_input else 7,
        conv1_t_stride=1 if small_input else 2,
        no_max_pool=small_input,
        feed_forward=False,
    )
    return net, net.in_planes


def _monai_densenet(spatial_dims: int, in_channels: int, small_input: bool) -> tuple[nn.Module, int]:
    net = nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
    if small_input:
        conv = nets.densenet.Conv[nets.densenet.Conv.CONV, spatial_dims]
        net.features.conv0 = conv(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.features.pool0 = nn.Identity()
    dim = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()
    return net, dim


def build_backbone(name: str, spatial_dims: int, in_channels: int, small_input: bool = True) -> tuple[nn.Module, int]:
    """The backbone and the size of the feature vector it returns for a (B, C, *spatial) batch."""
    if name not in BACKBONES:
        raise WorkbenchError(f"backbone '{name}': expected one of {BACKBONES}")
    if spatial_dims not in (2, 3):
        raise WorkbenchError(f"spatial_dims={spatial_dims}: expected 2 or 3")
    if name == "densenet121":
        return _monai_densenet(spatial_dims, in_channels, small_input)
    if spatial_dims == 2:
        return _torchvision_resnet(name, in_channels, small_input)
    return _monai_resnet(name, in_channels, small_input)
