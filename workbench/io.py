"""Writing files so that a crash never leaves one half-written: write aside, then rename."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def written_aside(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write to: renamed to `path` when the block completes,
    removed when it fails, so `path` is either its old whole self or the new whole file. The
    temporary name keeps `path`'s suffix (matplotlib reads the format from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with written_aside(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, content: Any) -> Path:
    return write_text_atomic(path, json.dumps(content, indent=2, sort_keys=False, default=str) + "\n")
