"""What the benchmark scripts share: running one stage through the commands' own functions
(`workbench.stages.run_stage`, which reuses a finished run of the same configuration) and
mean ± std over seeds."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from workbench.stages import run_stage

__all__ = ["add_threshold_argument", "add_trainer_argument", "mean_sd", "run_stage", "trainer_overrides"]


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
