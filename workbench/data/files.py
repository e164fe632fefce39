"""Helpers shared by the sources that read files: path checks and probing an image's shape."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError

def existing_dir(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise WorkbenchError(f"{p}: {what} not found (expected a directory)")
    return p


def existing_file(path: str | Path, what: str, expected: str = "a file") -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise WorkbenchError(f"{p}: {what} not found (expected {expected})")
    return p


def inside_root(path: str | Path, root: Path, where: str) -> Path:
    """`path` resolved against `root`; a path that escapes `root` is refused."""
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise WorkbenchError(f"{where}: path '{path}' escapes the data root {root}")
    if not resolved.exists():
        raise WorkbenchError(f"{where}: file '{resolved}' not found")
    return resolved


def probe_channels(path: str | Path | list[str]) -> int:
    """Number of channels of the image at `path` (a list: a DICOM series), as MONAI's loader
    sees it (channel first)."""
    from workbench.data.transforms import load_image

    return int(load_image(path if isinstance(path, list) else str(path)).shape[0])
