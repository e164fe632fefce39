"""The first stage of latent diffusion: MONAI's AutoencoderKL trained on the datamodule's
images (labels unused) with an L1 reconstruction loss and a small KL term. No perceptual loss
(LPIPS needs downloaded weights) and no adversarial term: reconstructions are somewhat blurrier
than the MONAI tutorial's, which the latent diffusion model inherits."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL

from workbench.generators.base import to_model_range
from workbench.generators.loading import NamesItsClass, load_module
from workbench.models.optim import configure_net_warmup_cosine


class AutoencoderKLModule(NamesItsClass, pl.LightningModule):
    data_task = "pretrain"  # any images

    def __init__(
        self,
        in_channels: int,
        spatial_dims: int = 2,
        num_classes: int = 0,
        channels: tuple[int, ...] = (32, 64),
        attention_levels: tuple[bool, ...] = (False, False),
        latent_channels: int = 3,
        num_res_blocks: int = 1,
        norm_num_groups: int = 32,
        kl_weight: float = 1e-6,
        lr: float = 1e-4,
        warmup_steps: int = 100,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = AutoencoderKL(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=in_channels,
            channels=tuple(channels),
            attention_levels=tuple(attention_levels),
            latent_channels=latent_channels,
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = to_model_range(batch["image"])
        reconstruction, mu, sigma = self.net(x)
        l1 = F.l1_loss(reconstruction.float(), x.float())
        # KL(N(mu, sigma) || N(0, 1)), summed over latent elements, averaged over the batch.
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1).flatten(1).sum(1).mean()
        loss = l1 + self.hparams.kl_weight * kl
        size = len(x)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("train/l1", l1, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/kl", kl, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_net_warmup_cosine(self)


def load_autoencoder(path: str) -> AutoencoderKLModule:
    """A trained autoencoder from its checkpoint or `workbench synthesize` run directory."""
    return load_module(path, AutoencoderKLModule)
