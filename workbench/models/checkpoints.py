"""Loading checkpoints safely: `torch.load(weights_only=True)` only, and a clear error when a
checkpoint was made for another architecture."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.data.files import existing_file
from workbench.errors import WorkbenchError

DESCRIBING_KEYS = ("backbone", "net", "spatial_dims", "in_channels", "num_classes")


def refuse_pickled_objects(path: str | Path, error: Exception, expected: str) -> None:
    """One line for a file that torch's weights-only loader refused because it holds objects
    besides tensors (unpickling them could run code); other load errors pass on."""
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):  # torch names the refused object so
        raise WorkbenchError(f"{path}: refused: it holds pickled objects besides tensors, which could run code when loaded; "
                             f"expected {expected}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, loaded without unpickling arbitrary objects."""
    path = existing_file(path, "checkpoint", "a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        refuse_pickled_objects(path, e, "a .ckpt written by workbench")
        raise WorkbenchError(f"{path}: not a loadable checkpoint ({type(e).__name__}); expected a .ckpt written by workbench") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise WorkbenchError(f"{path}: no 'state_dict' in it (expected a Lightning checkpoint)")
    return checkpoint


def check_checkpoint_fits(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """The checkpoint at `path`, after checking that its tensors fit `model` name for name."""
    checkpoint = load_checkpoint(path)
    state, expected = checkpoint["state_dict"], model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    reshaped = [k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        made = checkpoint.get("hyper_parameters", {})
        was = ", ".join(f"{k}={made[k]}" for k in DESCRIBING_KEYS if k in made) or "unknown settings"
        now = ", ".join(f"{k}={getattr(model, 'hparams', {}).get(k)}" for k in DESCRIBING_KEYS if k in getattr(model, "hparams", {}))
        raise WorkbenchError(
            f"{path}: checkpoint of another architecture ({was}); expected {now or type(model).__name__} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} differently shaped tensors)"
        )
    return checkpoint
