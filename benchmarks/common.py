"""What the benchmark scripts share: running one stage through the commands' own functions
(`workbench.stages.run_stage`, which reuses a finished run of the same configuration) and
mean ± std over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from workbench.stages import run_stage

__all__ = ["mean_sd", "run_stage"]


def mean_sd(values: Sequence[float]) -> str:
    """'mean ± sample std' (std 0 for a single seed)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"
