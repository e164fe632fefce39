"""Denoising diffusion (DDPM) on MONAI's DiffusionModelUNet and schedulers, in pixel space or in
the latent space of a trained AutoencoderKL (latent diffusion), 2D or 3D.

- `condition="class"`: class-conditional through the UNet's class embedding, with classifier-free
  guidance: labels are dropped to a "null" class with probability `cond_drop_prob` in training,
  and sampling mixes eps_uncond + guidance * (eps_cond - eps_uncond) (guidance 1: plain
  conditional, 0: unconditional).
- `condition="mask"`: joint image + mask generation; the mask's one-hot channels are generated
  beside the image channels, so every sample is a segmentation pair (pixel space only).
- `condition="none"`: unconditional.
Sampling: `sampler="ddpm"` (ancestral, up to `num_train_timesteps` steps) or `"ddim"` (eta 0,
deterministic, few steps), both MONAI schedulers, on the EMA weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from workbench.errors import WorkbenchError
from workbench.generators.autoencoder import AutoencoderKLModule, load_autoencoder
from workbench.generators.base import GeneratorModule, to_image_range, to_model_range
from workbench.models.optim import configure_net_warmup_cosine

SAMPLERS = ("ddpm", "ddim")


class DiffusionModel(GeneratorModule):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        condition: str = "class",
        image_shape: tuple[int, ...] = (32, 32),
        channels: tuple[int, ...] = (64, 128, 128),
        attention_levels: tuple[bool, ...] = (False, True, True),
        num_res_blocks: int = 1,
        num_head_channels: int = 32,
        norm_num_groups: int = 32,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        cond_drop_prob: float = 0.1,
        guidance: float = 2.0,
        sampler: str = "ddim",
        sample_steps: int = 50,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        ema_decay: float = 0.999,
        autoencoder: str | None = None,
        autoencoder_hparams: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.check_condition()
        if sampler not in SAMPLERS:
            raise WorkbenchError(f"generator.sampler='{sampler}': expected one of {SAMPLERS}")
        # Latent diffusion: a trained autoencoder (a path when training; its hyperparameters,
        # kept in this checkpoint, when loading one) encodes images to latents.
        self.autoencoder: AutoencoderKLModule | None = None
        if autoencoder or autoencoder_hparams:
            if condition == "mask":
                raise WorkbenchError("generator.condition='mask' works in pixel space only; unset generator.autoencoder")
            self.autoencoder = load_autoencoder(autoencoder) if autoencoder else AutoencoderKLModule(**autoencoder_hparams)
            self.autoencoder.requires_grad_(False).eval()
            self.hparams.autoencoder_hparams = dict(self.autoencoder.hparams)
            self.hparams.autoencoder = None  # the weights travel inside this checkpoint from now on
            ae = self.hparams.autoencoder_hparams
            if ae["in_channels"] != in_channels or ae["spatial_dims"] != spatial_dims:
                raise WorkbenchError(
                    f"generator.autoencoder takes {ae['spatial_dims']}D images with {ae['in_channels']} channel(s); "
                    f"the data has {spatial_dims}D with {in_channels}"
                )
        # 1 / std of the latents, measured on the first training batch (Rombach et al.).
        self.register_buffer("latent_scale", torch.tensor(1.0 if self.autoencoder is None else 0.0))
        generated = self.autoencoder.hparams.latent_channels if self.autoencoder else in_channels
        if condition == "mask":
            generated += num_classes
        self.generated_channels = generated
        self.net = DiffusionModelUNet(
            spatial_dims=spatial_dims,
            in_channels=generated,
            out_channels=generated,
            channels=tuple(channels),
            attention_levels=tuple(attention_levels),
            num_res_blocks=num_res_blocks,
            num_head_channels=num_head_channels,
            norm_num_groups=norm_num_groups,
            num_class_embeds=num_classes + 1 if condition == "class" else None,  # + the null class
        )
        levels = len(channels) - 1
        if len(image_shape) != spatial_dims or any(s % 2**levels for s in self.latent_shape()[1:]):
            raise WorkbenchError(
                f"generator.image_shape={list(image_shape)}: expected {spatial_dims} sizes that the UNet's {levels} "
                f"down-samplings divide (multiples of {2**levels}{' in latent space' if self.autoencoder else ''}); set data.image_size"
            )
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, schedule=schedule)
        self.setup_ema()

    # ----- the space diffusion runs in ---------------------------------------------------------
    def encode(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.autoencoder is not None:
            with torch.no_grad():
                z = self.autoencoder.net.encode_stage_2_inputs(to_model_range(images))
            if self.latent_scale == 0:  # one value on every rank: the mean of the ranks' stds
                std = self.all_gather(z.float().std()).mean() if self._trainer is not None else z.float().std()
                self.latent_scale.fill_(1.0 / std.clamp_min(1e-6))
            return z * self.latent_scale
        x = to_model_range(images)
        return torch.cat([x, self.mask_channels(mask)], 1) if mask is not None else x

    def decode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.autoencoder is not None:
            with torch.no_grad():
                return {"image": to_image_range(self.autoencoder.net.decode_stage_2_outputs(x / self.latent_scale))}
        if self.hparams.condition == "mask":
            image, mask = self.split_joint(x)
            return {"image": image, "label": mask}
        return {"image": to_image_range(x)}

    def latent_shape(self) -> tuple[int, ...]:
        hp = self.hparams
        factor = 2 ** (len(self.autoencoder.hparams.channels) - 1) if self.autoencoder is not None else 1
        return (self.generated_channels, *(s // factor for s in hp.image_shape))

    # ----- training ----------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        condition = self.condition_of(batch)
        x0 = self.encode(images, condition if self.hparams.condition == "mask" else None)
        class_labels = None
        if self.hparams.condition == "class":
            dropped = torch.rand(len(condition), device=self.device) < self.hparams.cond_drop_prob
            class_labels = torch.where(dropped, torch.full_like(condition, self.hparams.num_classes), condition)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (len(x0),), device=self.device).long()
        noisy = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
        loss = F.mse_loss(self.net(noisy, timesteps=t, class_labels=class_labels).float(), noise.float())
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x0), sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict:
        return configure_net_warmup_cosine(self, self.hparams.weight_decay)

    # ----- sampling ----------------------------------------------------------------------------
    def make_scheduler(self, sampler: str, steps: int) -> DDPMScheduler | DDIMScheduler:
        hp = self.hparams
        if sampler not in SAMPLERS:
            raise WorkbenchError(f"sampler '{sampler}': expected one of {SAMPLERS}")
        if not 1 <= steps <= hp.num_train_timesteps:
            raise WorkbenchError(f"steps={steps}: expected 1 to {hp.num_train_timesteps} (the training timesteps)")
        clip = self.autoencoder is None  # latents are not bounded to [-1, 1]
        kind = DDPMScheduler if sampler == "ddpm" else DDIMScheduler
        scheduler = kind(num_train_timesteps=hp.num_train_timesteps, schedule=hp.schedule, clip_sample=clip)
        scheduler.set_timesteps(steps, device=self.device)
        return scheduler

    def guided_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        net = self.sampling_net
        timesteps = t.expand(len(x)).to(self.device)
        if labels is None:
            return net(x, timesteps=timesteps)
        if guidance == 1.0:
            return net(x, timesteps=timesteps, class_labels=labels)
        null = torch.full_like(labels, self.hparams.num_classes)
        both = net(torch.cat([x, x]), timesteps=torch.cat([timesteps, timesteps]), class_labels=torch.cat([labels, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> dict[str, torch.Tensor]:
        hp = self.hparams
        sampler = sampler or hp.sampler
        steps = steps or (hp.sample_steps if sampler == hp.sampler else hp.num_train_timesteps)
        guidance = hp.guidance if guidance is None else guidance
        labels = self.sampling_labels(n, condition)
        scheduler = self.make_scheduler(sampler, steps)
        x = torch.randn((n, *self.latent_shape()), generator=generator, device=self.device)
        for t in scheduler.timesteps:
            noise = self.guided_noise(x, t, labels, guidance)
            x, _ = scheduler.step(noise, int(t), x, generator=generator) if sampler == "ddpm" else scheduler.step(noise, int(t), x)
        out = self.decode(x)
        if labels is not None:
            out["label"] = labels
        return {k: v.cpu() for k, v in out.items()}

    def sample_options(self) -> dict[str, Any]:
        hp = self.hparams
        return {"sampler": hp.sampler, "steps": hp.sample_steps, "guidance": hp.guidance if hp.condition == "class" else None}

