"""Feature extractors for 2D and 3D images with any number of input channels.

`resnet18`/`resnet50`: torchvision's in 2D, MONAI's (same block layout) in 3D and for any
`width` other than 1 (MONAI's `widen_factor`; torchvision's basic blocks are fixed at 64 wide).
`densenet121`: MONAI's, 2D or 3D; `width` scales its stem and growth rate.
`unet_encoder`: the encoder path of the segmentation task's MONAI UNet, 2D or 3D, whose
pretrained weights the segmentation task loads (`workbench/models/unet_encoder.py`).
`vit_tiny`/`vit_small`: torchvision's VisionTransformer (2D; patch 4 for images up to 64 px,
else 16), whose class token is the feature.
`width` < 1 gives a narrower network for CPU budgets: 0.5 trains about 3.5x faster at 28 px.
`small_input=True` swaps the stem for a 3x3 stride-1 conv with
no max-pool, the usual choice for 28-64 px images (MedMNIST), which a 7x7/2 stem plus pooling
would shrink to almost nothing.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision
from monai.networks import nets

from workbench.errors import WorkbenchError
from workbench.models.unet_encoder import build_unet_encoder

BACKBONES = ("resnet18", "resnet50", "densenet121", "unet_encoder", "vit_tiny", "vit_small")
VIT_SIZES = {"vit_tiny": (12, 3, 192), "vit_small": (12, 6, 384)}  # layers, heads, width


class ViTFeatures(nn.Module):
    """torchvision's VisionTransformer for `in_channels` channels, returning the class token.
    `vit` stays reachable for lightly's masked-image modules (MAE)."""

    def __init__(self, name: str, in_channels: int, image_size: int) -> None:
        super().__init__()
        layers, heads, width = VIT_SIZES[name]
        patch = 4 if image_size <= 64 else 16
        if image_size % patch:
            raise WorkbenchError(f"image_size={image_size}: a {name} needs a multiple of its patch size {patch}")
        self.vit = torchvision.models.VisionTransformer(
            image_size=image_size, patch_size=patch, num_layers=layers, num_heads=heads, hidden_dim=width, mlp_dim=4 * width
        )
        self.vit.conv_proj = nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch)
        self.vit.heads = nn.Identity()

    def forward(self, x):
        return self.vit(x)


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


def _monai_resnet(name: str, spatial_dims: int, in_channels: int, small_input: bool, width: float) -> tuple[nn.Module, int]:
    net = getattr(nets, name)(
        spatial_dims=spatial_dims,
        widen_factor=width,
        n_input_channels=in_channels,
        conv1_t_size=3 if small_input else 7,
        conv1_t_stride=1 if small_input else 2,
        no_max_pool=small_input,
        feed_forward=False,
    )
    return net, net.in_planes


def _monai_densenet(spatial_dims: int, in_channels: int, small_input: bool, width: float) -> tuple[nn.Module, int]:
    stem = max(8, round(64 * width))
    net = nets.DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, init_features=stem, growth_rate=max(4, round(32 * width))
    )
    if small_input:
        conv = nets.densenet.Conv[nets.densenet.Conv.CONV, spatial_dims]
        net.features.conv0 = conv(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
        net.features.pool0 = nn.Identity()
    dim = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()
    return net, dim


def build_backbone(
    name: str, spatial_dims: int, in_channels: int, small_input: bool = True, image_size: int = 32, width: float = 1.0
) -> tuple[nn.Module, int]:
    """The backbone and the size of the feature vector it returns for a (B, C, *spatial) batch.
    `image_size` matters only to ViTs, whose position embeddings are fixed to it; `width`
    multiplies the channel counts of ResNets and DenseNets."""
    if name not in BACKBONES:
        raise WorkbenchError(f"backbone '{name}': expected one of {BACKBONES}")
    if spatial_dims not in (2, 3):
        raise WorkbenchError(f"spatial_dims={spatial_dims}: expected 2 or 3")
    if not 0.0 < width <= 4.0:
        raise WorkbenchError(f"width={width}: expected a channel multiplier in (0, 4]")
    if name in VIT_SIZES:
        if width != 1.0:
            raise WorkbenchError(f"backbone '{name}' has a fixed width; choose vit_tiny or vit_small instead of width={width}")
        if spatial_dims != 2:
            raise WorkbenchError(f"backbone '{name}' is 2D only; use resnet18/resnet50/densenet121 for volumes")
        return ViTFeatures(name, in_channels, image_size), VIT_SIZES[name][2]
    if name == "unet_encoder":
        return build_unet_encoder(spatial_dims, in_channels, width)
    if name == "densenet121":
        return _monai_densenet(spatial_dims, in_channels, small_input, width)
    if spatial_dims == 2 and width == 1.0:
        return _torchvision_resnet(name, in_channels, small_input)
    return _monai_resnet(name, spatial_dims, in_channels, small_input, width)
