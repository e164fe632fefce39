"""Loading checkpoints safely: `torch.load(weights_only=True)` only, and a clear error when a
checkpoint was made for another architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.data.files import existing_file
from workbench.errors import WorkbenchError

DESCRIBING_KEYS = ("backbone", "net", "spatial_dims", "in_channels", "num_classes")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, loaded without unpickling arbitrary objects."""
    path = existing_file(path, "checkpoint", "a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
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
