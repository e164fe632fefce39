"""Model selection that cannot return a network from before it learned anything.

With a few labels, training often becomes overconfident: the validation loss of an untrained
network that predicts the class prior can be lower than that of every trained checkpoint, so
"lowest val loss" keeps the untrained network (seen on a 546-image ultrasound set: test AUC 0.34
where the network reached 0.73). `SelectionCheckpoint` ranks checkpoints as Lightning's
ModelCheckpoint does, but only validations after `min_fraction` of the step budget.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from workbench.errors import WorkbenchError


class SelectionCheckpoint(ModelCheckpoint):
    def __init__(self, min_fraction: float = 0.0, **kwargs: Any) -> None:
        if not 0.0 <= min_fraction < 1.0:
            raise WorkbenchError(f"selection_min_fraction={min_fraction}: expected a fraction of the step budget in [0, 1)")
        super().__init__(**kwargs)
        self.min_fraction = min_fraction

    def too_early(self, trainer: pl.Trainer) -> bool:
        """Whether this step is within the first `min_fraction` of the budget (a budget of
        unknown length, as with an endless loader, has no early part)."""
        total = trainer.estimated_stepping_batches
        return self.min_fraction > 0 and math.isfinite(total) and trainer.global_step <= self.min_fraction * total

    def _should_skip_saving_checkpoint(self, trainer: pl.Trainer) -> bool:
        return super()._should_skip_saving_checkpoint(trainer) or self.too_early(trainer)
