"""An archive's scan index: each file's size, modification time and header facts (shape, and
for DICOM the series UID, slice position and frames), or why it is unreadable, written once
per archive and reused by later runs and by every process of a run. Only new or changed files
have their headers read, in parallel worker processes when there are many. A POSIX lock on
the index makes the first process build it while the others wait and then read it (every DDP
rank, every job of a sweep), and is released by the system if its holder dies."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.io import write_text_atomic

VERSION = 1
PARALLEL_FROM = 256  # fewer changed files are read in this process: starting workers costs more


def index_path(index_dir: str | Path, root: Path, suffixes: tuple[str, ...]) -> Path:
    """One index per archive root and suffix set, named by their hash."""
    key = hashlib.sha256(f"{root.resolve()}|{','.join(sorted(suffixes))}".encode()).hexdigest()[:16]
    return Path(index_dir) / f"{root.name}-{key}.json"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)  # blocks while another process builds the index
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def header_entry(read_header: Callable[[Path], tuple[tuple[int, ...], dict | None]], path: Path) -> dict[str, Any]:
    """What the index keeps of one file's header: its shape and facts, or the reason it cannot be read."""
    try:
        shape, facts = read_header(path)
        return {"shape": list(shape), "facts": facts}
    except WorkbenchError as e:
        return {"error": str(e)}


def _read_chunk(read_header: Callable, paths: list[str]) -> list[dict[str, Any]]:
    return [header_entry(read_header, Path(p)) for p in paths]


def read_headers(read_header: Callable, paths: list[Path], workers: int | None) -> list[dict[str, Any]]:
    """Header entries of `paths`, in order; in `workers` processes when there are many."""
    workers = workers or os.cpu_count() or 1
    if len(paths) < PARALLEL_FROM or workers < 2:
        return [header_entry(read_header, p) for p in paths]
    chunks = [[str(p) for p in paths[i::workers]] for i in range(workers)]  # interleaved: folders spread evenly
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_read_chunk, [read_header] * workers, chunks))
    entries: list[dict[str, Any]] = [{}] * len(paths)
    for i, chunk in enumerate(results):
        entries[i::workers] = chunk
    return entries


def scanned(
    files: list[Path], root: Path, read_header: Callable, index: Path | None, workers: int | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """Each file's header entry (by path), from the index where its size and mtime still match,
    else read; and how many headers this process read. Without an index every header is read."""
    stats = {str(p): p.stat() for p in files}
    if index is None:
        entries = read_headers(read_header, files, workers)
        return dict(zip(stats, entries)), len(files)
    with locked(index):
        known = {}
        if index.is_file():
            saved = json.loads(index.read_text())
            known = saved.get("files", {}) if saved.get("version") == VERSION else {}
        fresh = {path: entry for path, entry in known.items()
                 if path in stats and entry.get("size") == stats[path].st_size and entry.get("mtime_ns") == stats[path].st_mtime_ns}
        stale = [Path(p) for p in stats if p not in fresh]
        for path, entry in zip(stale, read_headers(read_header, stale, workers)):
            fresh[str(path)] = {**entry, "size": stats[str(path)].st_size, "mtime_ns": stats[str(path)].st_mtime_ns}
        if stale or len(fresh) != len(known):
            # Compact: json's C encoder runs only without indentation (5x faster on 10^4 files).
            write_text_atomic(index, json.dumps({"version": VERSION, "root": str(root), "files": fresh}, separators=(",", ":")))
    return {p: fresh[p] for p in stats}, len(stale)
