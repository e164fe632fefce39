"""Model selection never returns a network from before it learned anything."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from workbench.callbacks import SelectionCheckpoint
from workbench.errors import WorkbenchError

# The overconfidence case: the first validation (an untrained network near the class prior)
# has the lowest loss, and the loss rises as training becomes overconfident on a few labels.
VAL_LOSS_PER_EPOCH = [0.62, 0.95, 0.81, 0.74, 0.70, 0.69, 0.71, 0.72]


class ScriptedValidation(BoringModel):
    def validation_step(self, batch, batch_idx):
        self.log("val/loss", VAL_LOSS_PER_EPOCH[self.current_epoch])


def selected_epoch(tmp_path, min_fraction: float) -> int:
    checkpoint = SelectionCheckpoint(min_fraction=min_fraction, dirpath=tmp_path, monitor="val/loss", mode="min", filename="{epoch}")
    trainer = pl.Trainer(max_epochs=len(VAL_LOSS_PER_EPOCH), limit_train_batches=4, limit_val_batches=1, callbacks=[checkpoint],
                         logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(ScriptedValidation())
    return torch.load(checkpoint.best_model_path, weights_only=True)["epoch"]


def test_selection_skips_the_first_part_of_the_budget(tmp_path):
    assert selected_epoch(tmp_path / "plain", 0.0) == 0  # what plain lowest-loss selection keeps
    assert selected_epoch(tmp_path / "guarded", 0.25) == 5  # the best of the validations after 8 of 32 steps


def test_a_fraction_outside_0_1_is_refused():
    with pytest.raises(WorkbenchError, match=r"selection_min_fraction=1.0: expected a fraction of the step budget in \[0, 1\)"):
        SelectionCheckpoint(min_fraction=1.0)
