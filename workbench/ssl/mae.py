"""MAE (He et al. 2022): a ViT encodes the visible 25% of patches; a light decoder reconstructs
the masked ones. On lightly's masked ViT (torchvision) and MAE decoder; one view per image.
The encoder is the backbone's own ViT, so the exported backbone carries its weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerTorchvision
from lightly.models.modules.masked_autoencoder import MAEDecoder

from workbench.errors import WorkbenchError
from workbench.models.backbones import ViTFeatures
from workbench.ssl.base import SSLMethod


class MAE(SSLMethod):
    method = "mae"

    def __init__(
        self, mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_layers: int = 2, decoder_heads: int = 4, **base
    ) -> None:
        base.setdefault("backbone", "vit_tiny")
        super().__init__(**base)
        self.save_hyperparameters()
        if not isinstance(self.backbone, ViTFeatures):
            raise WorkbenchError(f"ssl.backbone={self.hparams.backbone}: MAE needs a ViT backbone (vit_tiny or vit_small)")
        vit = self.backbone.vit
        self.encoder = MaskedVisionTransformerTorchvision(vit=vit)
        # MAE drops the masked tokens instead of replacing them, so the encoder's mask token never
        # gets a gradient; trainable, it would make DDP fail on an unused parameter.
        self.encoder.mask_token.requires_grad_(False)
        self.patch_size = vit.patch_size
        self.sequence_length = vit.seq_length
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = MAEDecoder(
            seq_length=vit.seq_length,
            num_layers=decoder_layers,
            num_heads=decoder_heads,
            embed_input_dim=vit.hidden_dim,
            hidden_dim=decoder_dim,
            mlp_dim=4 * decoder_dim,
            out_dim=self.patch_size**2 * self.hparams.in_channels,
            dropout=0.0,
            attention_dropout=0.0,
        )

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        images = views[0]
        batch = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch, self.sequence_length), mask_ratio=self.hparams.mask_ratio, device=images.device
        )
        encoded = self.encoder.encode(images=images, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.mask_token, (batch, self.sequence_length))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder.embed(encoded).type_as(tokens))
        predicted = self.decoder.predict(utils.get_at_index(self.decoder.decode(tokens), idx_mask))
        # idx_mask counts the class token at 0; patches do not have one
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
        return F.mse_loss(predicted, target)
