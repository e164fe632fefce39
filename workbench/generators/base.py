"""What the generators share: the condition they learn (a class, a mask, or nothing), the map
between the datamodule's [0, 1] intensities and the networks' [-1, 1], EMA weights for
sampling, and `sample(...)`, which every generator answers with images in [0, 1] plus the labels
or masks they belong to."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError
from workbench.generators.loading import NamesItsClass
from workbench.models.ema import EMATeacher

CONDITIONS = {"class": "classification", "mask": "segmentation", "none": "pretrain"}


def generator_ema_decay(step: int, decay: float) -> float:
    """min(decay, (1 + step) / (10 + step)): the EMA follows the recent weights from the start
    (0.9 at step 80, 0.99 at step 890), as in diffusers and timm. Mean Teacher's warm start, a
    plain average of all weights until 1 - 1/(step+1) reaches the decay, would keep the random
    initial weights in the average for the first 1/(1 - decay) steps: noise for short runs."""
    return min(decay, (1.0 + step) / (10.0 + step))


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class GeneratorModule(NamesItsClass, pl.LightningModule):
    """Subclasses set `self.net` (what EMA follows), keep `condition`, `num_classes`,
    `in_channels`, `spatial_dims`, `image_size` and `ema_decay` in their hyperparameters, and
    implement `sample`. Sampling expects eval mode (`module.eval()`)."""

    def check_condition(self) -> None:
        hp = self.hparams
        if hp.condition not in CONDITIONS:
            raise WorkbenchError(f"generator.condition='{hp.condition}': expected one of {sorted(CONDITIONS)}")
        if hp.condition != "none" and hp.num_classes < 2:
            raise WorkbenchError(f"generator.condition='{hp.condition}' needs at least 2 classes (got {hp.num_classes})")

    @property
    def data_task(self) -> str:
        """The data this generator needs: labeled classes, image/mask pairs, or any images."""
        return CONDITIONS[self.hparams.condition]

    def setup_ema(self) -> None:
        self.ema = EMATeacher(self.net) if self.hparams.ema_decay else None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net, generator_ema_decay(self.global_step, self.hparams.ema_decay))
            # Batch-norm statistics are copied, not averaged: the EMA copy never runs in training.
            for ema_buffer, buffer in zip(self.ema.model.buffers(), self.net.buffers()):
                ema_buffer.copy_(buffer)

    @property
    def sampling_net(self) -> torch.nn.Module:
        """The EMA weights when kept (smoother samples), else the trained ones."""
        return self.ema.model if self.ema is not None else self.net

    def condition_of(self, batch: dict) -> torch.Tensor | None:
        """Class ids (B,) or masks (B, 1, *spatial) from a batch; None when unconditional."""
        if self.hparams.condition == "none":
            return None
        if "label" not in batch:
            raise WorkbenchError(f"generator.condition='{self.hparams.condition}' needs labeled batches")
        label = batch["label"].long()
        return label.reshape(-1) if self.hparams.condition == "class" else label

    def mask_channels(self, mask: torch.Tensor) -> torch.Tensor:
        """A (B, 1, *spatial) mask as one-hot channels in [-1, 1], to be generated with the image."""
        one_hot = F.one_hot(mask[:, 0], self.hparams.num_classes).movedim(-1, 1).float()
        return to_model_range(one_hot)

    def split_joint(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and mask (argmax of the mask channels) from a joint sample."""
        c = self.hparams.in_channels
        return to_image_range(x[:, :c]), x[:, c:].argmax(1, keepdim=True)

    def default_conditions(self, n_per_class: int) -> torch.Tensor | None:
        """Class ids for a balanced sample, or None (unconditional; `n_per_class` images)."""
        if self.hparams.condition == "class":
            return torch.arange(self.hparams.num_classes).repeat_interleave(n_per_class)
        return None

    def sampling_labels(self, n: int, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The class ids to sample a class-conditional generator with (None otherwise)."""
        if self.hparams.condition != "class":
            return None
        if condition is None or len(condition) != n:
            raise WorkbenchError(f"a class-conditional generator needs {n} class ids to sample {n} images")
        return condition.to(self.device).long()

    def sample(self, n: int, condition: torch.Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> dict[str, torch.Tensor]:
        """{"image": (n, C, *spatial) in [0, 1], and "label": class ids (n,) or masks (n, 1,
        *spatial) where the generator is conditional}, on the CPU wherever the model runs."""
        raise NotImplementedError

    def sample_options(self) -> dict[str, Any]:
        """The sampler settings a manifest records (sampler, steps, guidance, ...)."""
        return {}
