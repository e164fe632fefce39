"""A grid of samples every N epochs, as PNG in the run directory and to wandb when it logs, and
once the same grid of real labeled images (samples/real.png), a row per class, to compare with."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torchvision.utils import save_image

from workbench.generators.base import GeneratorModule


def grid_images(sampled: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """(N, C, H, W) tiles: the first channel of each image (the middle slice of a volume), and
    for segmentation pairs the mask beside it."""
    image = sampled["image"]
    if image.ndim == 5:
        image = image[..., image.shape[-1] // 2]
    tiles = image[:, :1]
    label = sampled.get("label")
    if label is not None and label.ndim == sampled["image"].ndim:  # masks
        mask = label if label.ndim == 4 else label[..., label.shape[-1] // 2]
        tiles = torch.cat([tiles, mask.float() / max(1, num_classes - 1)], dim=-1)
    return tiles


class SampleGrid(pl.Callback):
    def __init__(self, every_n_epochs: int = 5, n_per_class: int = 8, seed: int = 0, dirpath: str | None = None) -> None:
        self.every_n_epochs = every_n_epochs
        self.n_per_class = n_per_class
        self.seed = seed
        self.dirpath = dirpath

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
        if not isinstance(pl_module, GeneratorModule) or not trainer.is_global_zero:
            return
        if self.every_n_epochs < 1 or ((trainer.current_epoch + 1) % self.every_n_epochs and not last):
            return
        path = Path(self.dirpath or trainer.default_root_dir) / "samples" / f"epoch{trainer.current_epoch:03d}.png"
        self.write(pl_module, path)
        if trainer.datamodule is not None and not (path.parent / "real.png").exists():
            self.write_real(trainer.datamodule, pl_module.hparams.num_classes, path.parent / "real.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[str(path)], step=trainer.global_step)

    def write_real(self, datamodule: pl.LightningDataModule, num_classes: int, path: Path) -> Path:
        """`n_per_class` labeled training images per class (a class label per image), in the
        sample grid's layout; the first images where labels are masks."""
        images = datamodule.dataset("labeled", train=False)
        rows: dict[int, list[dict]] = {}
        for i in range(len(images)):
            item = images[i]
            label = item.get("label")
            key = int(label) if label is not None and torch.as_tensor(label).numel() == 1 else 0
            if len(rows.setdefault(key, [])) < self.n_per_class:
                rows[key].append(item)
            if len(rows) == num_classes and all(len(r) == self.n_per_class for r in rows.values()):
                break
        blank = {k: torch.zeros_like(torch.as_tensor(v)) for k, v in next(iter(rows.values()))[0].items() if k in ("image", "label")}
        chosen = [item for key in sorted(rows) for item in rows[key] + [blank] * (self.n_per_class - len(rows[key]))]  # a class per row
        batch = {"image": torch.stack([torch.as_tensor(item["image"]) for item in chosen])}
        if all(torch.as_tensor(item.get("label", 0)).numel() > 1 for item in chosen):  # masks beside their images
            batch["label"] = torch.stack([torch.as_tensor(item["label"]) for item in chosen])
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid_images(batch, num_classes), path, nrow=self.n_per_class, padding=1)
        return path

    def write(self, module: GeneratorModule, path: Path) -> Path:
        conditions = module.default_conditions(self.n_per_class)
        n = len(conditions) if conditions is not None else self.n_per_class
        was_training = module.training
        module.eval()
        with torch.random.fork_rng(devices=[]):
            generator = torch.Generator(device=module.device).manual_seed(self.seed)
            sampled = module.sample(n, conditions, generator=generator)
        module.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid_images(sampled, module.hparams.num_classes), path, nrow=self.n_per_class, padding=1)
        return path
