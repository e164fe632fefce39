"""Loggers with workbench's guarantees: wandb offline by default and no secrets in its records."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

from workbench.runs import redact_override


@contextmanager
def redacted_argv() -> Iterator[None]:
    """sys.argv with secret-looking overrides redacted, restored afterwards (Lightning's DDP
    launcher re-reads the real command line)."""
    original = list(sys.argv)
    sys.argv[:] = [original[0], *(redact_override(a) for a in original[1:])]
    try:
        yield
    finally:
        sys.argv[:] = original


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger; wandb records the command line when the run starts, so the run
    starts with secret-looking overrides (api_key=..., token=...) redacted."""

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            with redacted_argv():
                return super().experiment
        return super().experiment
