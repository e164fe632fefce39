"""Class-conditional GANs for small 2D images, trained with DiffAugment so a few hundred images
suffice.

- Generator: DCGAN-style (Radford et al. 2016): z and a class embedding -> linear -> nearest
  up-sampling + 3x3 conv blocks with batch norm -> tanh. It starts at the image size divided by
  2^k (k <= 4 doublings), so 28 px (7 -> 14 -> 28) and 32 px (4 -> ... -> 32) both work.
- Discriminator `dcgan`: spectral-normalised strided convolutions with a projection head for the
  class (Miyato & Koyama 2018); optionally StyleGAN's minibatch standard-deviation channel
  (`minibatch_std`, a group size; off by default, since in a 5-epoch PneumoniaMNIST run it
  did not help). `patch`: MONAI's PatchDiscriminator, a PatchGAN scoring overlapping patches,
  with the class given as one-hot constant planes beside the image.
- `discriminator_steps` discriminator updates per generator update (SNGAN's n_dis): with one,
  the generator outpaces the spectrally normalised discriminator and its scores stop telling
  real from fake (`train/d_gap` near 0).
- Loss `hinge` or `nonsaturating`; R1 gradient penalty on (augmented) real images every
  `r1_every` steps (lazy regularisation, weighted by `r1_every`, as in StyleGAN2).
Images only (no masks): segmentation pairs come from the diffusion model's joint generation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch.nn.utils import spectral_norm

from workbench.errors import WorkbenchError
from workbench.generators.base import GeneratorModule, to_image_range, to_model_range
from workbench.generators.diffaugment import diff_augment

LOSSES = ("hinge", "nonsaturating")
DISCRIMINATORS = ("dcgan", "patch")


def doublings(shape: tuple[int, ...], most: int = 4) -> int:
    """How many times the generator doubles its start size to reach `shape` (start side >= 3)."""
    k = 0
    while k < most and all(s % 2 ** (k + 1) == 0 and s // 2 ** (k + 1) >= 3 for s in shape):
        k += 1
    return k


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, out_channels: int, image_shape: tuple[int, ...], base_channels: int) -> None:
        super().__init__()
        k = doublings(image_shape)
        self.start = tuple(s // 2**k for s in image_shape)
        self.start_channels = base_channels * 2**k
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.fc = nn.Linear(in_dim, self.start_channels * self.start[0] * self.start[1])
        blocks, ch = [], self.start_channels
        for _ in range(k):
            blocks += [nn.BatchNorm2d(ch), nn.ReLU(True), nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch // 2, 3, padding=1)]
            ch //= 2
        blocks += [nn.BatchNorm2d(ch), nn.ReLU(True), nn.Conv2d(ch, out_channels, 3, padding=1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], 1)
        return self.blocks(self.fc(z).view(len(z), self.start_channels, *self.start))


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of the features over groups of `group_size`
    items, averaged (Karras et al. 2018, kept in StyleGAN2). A per-image discriminator cannot see
    that every sample of a batch is the same image; with this channel it can. Groups shrink to a
    divisor of the batch size."""

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        groups = x.view(g, n // g, c, h, w)  # item i is in group i % (n // g), as in StyleGAN2
        std = (groups.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # one value per group
        return torch.cat([x, std.view(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)], 1)


class ProjectionDiscriminator(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, image_shape: tuple[int, ...], base_channels: int, minibatch_std: int = 0
    ) -> None:
        super().__init__()
        layers, ch = [spectral_norm(nn.Conv2d(in_channels, base_channels, 3, padding=1)), nn.LeakyReLU(0.2, True)], base_channels
        for _ in range(doublings(image_shape)):
            layers += [spectral_norm(nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True)]
            ch *= 2
        if minibatch_std:
            layers += [MinibatchStd(minibatch_std), spectral_norm(nn.Conv2d(ch + 1, ch, 3, padding=1)), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(ch, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, ch)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out


class ConditionalPatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, base_channels: int, num_layers: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = PatchDiscriminator(spatial_dims=2, channels=base_channels, in_channels=in_channels + num_classes, num_layers_d=num_layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            planes = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, planes], 1)
        return self.net(x)[-1].flatten(1)  # one score per patch


def discriminator_loss(loss: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean() if loss == "hinge" else F.softplus(-fake).mean()


class ConditionalGAN(GeneratorModule):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        condition: str = "class",
        image_shape: tuple[int, ...] = (32, 32),
        latent_dim: int = 128,
        generator_channels: int = 64,
        discriminator: str = "dcgan",
        discriminator_channels: int = 64,
        patch_layers: int = 2,
        minibatch_std: int = 0,
        loss: str = "hinge",
        r1_weight: float = 1.0,
        r1_every: int = 4,
        discriminator_steps: int = 4,
        diffaugment: str = "brightness,contrast,translation,cutout",
        lr_generator: float = 2e-4,
        lr_discriminator: float = 2e-4,
        betas: tuple[float, float] = (0.0, 0.99),
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.check_condition()
        if spatial_dims != 2:
            raise WorkbenchError(f"the GAN is 2D (got spatial_dims={spatial_dims}); for volumes use generator=ddpm")
        if condition == "mask":
            raise WorkbenchError("the GAN makes images or image+class, not masks; for segmentation pairs use generator=ddpm condition=mask")
        if loss not in LOSSES:
            raise WorkbenchError(f"generator.loss='{loss}': expected one of {LOSSES}")
        if discriminator not in DISCRIMINATORS:
            raise WorkbenchError(f"generator.discriminator='{discriminator}': expected one of {DISCRIMINATORS}")
        if minibatch_std < 0 or (minibatch_std and discriminator != "dcgan"):
            raise WorkbenchError(f"generator.minibatch_std={minibatch_std}: expected a group size >= 0, used by discriminator=dcgan only")
        if discriminator_steps < 1:
            raise WorkbenchError(f"generator.discriminator_steps={discriminator_steps}: expected discriminator updates per generator update >= 1")
        diff_augment(torch.zeros(1, 1, 4, 4), diffaugment)  # a bad policy fails now, not mid-training
        classes = num_classes if condition == "class" else 0
        shape = tuple(image_shape)
        self.net = DCGANGenerator(latent_dim, classes, in_channels, shape, generator_channels)
        if discriminator == "dcgan":
            self.discriminator = ProjectionDiscriminator(in_channels, classes, shape, discriminator_channels, minibatch_std)
        else:
            self.discriminator = ConditionalPatchDiscriminator(in_channels, classes, discriminator_channels, patch_layers)
        self.automatic_optimization = False
        self.setup_ema()

    def score(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(diff_augment(images, self.hparams.diffaugment), labels)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        real = to_model_range(batch["image"])
        labels = self.condition_of(batch)
        z = torch.randn(len(real), hp.latent_dim, device=self.device)
        update_generator = batch_idx % hp.discriminator_steps == 0
        with torch.set_grad_enabled(update_generator):
            fake = self.net(z, labels)

        # Discriminator step, with the lazy R1 penalty on the augmented reals.
        real_seen = diff_augment(real, hp.diffaugment)
        penalise = hp.r1_weight > 0 and batch_idx % hp.r1_every == 0
        if penalise:
            real_seen = real_seen.detach().requires_grad_(True)
        real_score, fake_score = self.discriminator(real_seen, labels), self.score(fake.detach(), labels)
        d_loss = discriminator_loss(hp.loss, real_score, fake_score)
        if penalise:
            (grad,) = torch.autograd.grad(real_score.sum(), real_seen, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            d_loss = d_loss + 0.5 * hp.r1_weight * hp.r1_every * r1
            self.log("train/r1", r1.detach(), on_step=False, on_epoch=True, batch_size=len(real))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        size = len(real)
        if update_generator:
            g_loss = generator_loss(hp.loss, self.score(fake, labels))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.log("train/g_loss", g_loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        # The score gap says whether the discriminator tells real from fake at all (hinge: ~0 = it does not).
        self.log("train/d_gap", (real_score.mean() - fake_score.mean()).detach(), on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/d_loss", d_loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        betas = tuple(hp.betas)
        return [
            torch.optim.Adam(self.net.parameters(), lr=hp.lr_generator, betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_discriminator, betas=betas),
        ]

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> dict[str, torch.Tensor]:
        labels = self.sampling_labels(n, condition)
        z = torch.randn(n, self.hparams.latent_dim, generator=generator, device=self.device)
        out = {"image": to_image_range(self.sampling_net(z, labels)).cpu()}
        if labels is not None:
            out["label"] = labels.cpu()
        return out
