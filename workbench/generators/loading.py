"""Finding and loading a generator checkpoint: a `.ckpt` file or a run directory (its
checkpoints/last.ckpt). The checkpoint names its own class, so any generator loads by path."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class

from workbench.errors import WorkbenchError
from workbench.models.checkpoints import load_checkpoint

CLASS_KEY = "workbench_class"


def checkpoint_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p / "checkpoints" / "last.ckpt" if p.is_dir() else p


def load_module(path: str | Path, base: type[pl.LightningModule]) -> pl.LightningModule:
    """The module saved at `path` (a subclass of `base`), in eval mode on the CPU."""
    ckpt = checkpoint_path(path)
    name = load_checkpoint(ckpt).get(CLASS_KEY)
    cls = None
    if isinstance(name, str) and name.startswith("workbench."):  # nothing outside the workbench is ever imported
        try:
            cls = get_class(name)
        except Exception:
            cls = None
    if cls is None or not issubclass(cls, base):
        raise WorkbenchError(f"{ckpt}: not a {base.__name__} checkpoint (it names class {name!r}); expected one written by workbench synthesize")
    return cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()


class NamesItsClass:
    """Mixin for LightningModules: checkpoints record the class, so `load_module` finds it."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
