"""What the benchmark scripts share: running one stage through the commands' own functions
(`workbench.stages.run_stage`, which reuses a finished run of the same configuration), mean ±
std over seeds, and a training-throughput meter."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from workbench.stages import run_stage

__all__ = ["ImagesPerSecond", "add_threshold_argument", "add_trainer_argument", "mean_sd", "run_stage", "trainer_overrides"]


def mean_sd(values: Sequence[float]) -> str:
    """'mean ± sample std' (std 0 for a single seed)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def add_trainer_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trainer", default=None, help="trainer config for every run, e.g. gpu (default: the configs' CPU trainer)")


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    # A handful of val images makes Youden's threshold (and so ACC) mostly luck; the labeled class
    # prior matched on thousands of unlabeled training images is in budget and far steadier.
    parser.add_argument("--threshold", default="prior",
                        help="two-class decision threshold (task.threshold): prior (the labeled class prior matched on the "
                             "unlabeled training images), val (Youden's J on the val subset) or a probability")


def trainer_overrides(args: argparse.Namespace) -> list[str]:
    return [f"trainer={args.trainer}"] if args.trainer else []


class ImagesPerSecond(pl.Callback):
    """Training images per second over an epoch (the first view's batch size per step; of the
    unlabeled views in a semi-supervised batch)."""

    def on_train_epoch_start(self, trainer, module) -> None:
        self.images, self.start = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.images += len((batch["unlabeled"] if "unlabeled" in batch else batch)["views"][0])

    def on_train_epoch_end(self, trainer, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self.rate = self.images / (time.perf_counter() - self.start)
