"""Where the Hydra config tree is: inside the installed wheel, else the repository's configs/."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> str:
    package = Path(__file__).resolve().parent
    shipped = package / "configs"
    return str(shipped if shipped.is_dir() else package.parent / "configs")
