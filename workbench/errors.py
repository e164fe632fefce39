"""One exception type for bad user input, reported by the commands as a single line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class WorkbenchError(Exception):
    """Bad input: the message names the file or config key and what was expected."""


def find_workbench_error(exc: BaseException) -> WorkbenchError | None:
    """The WorkbenchError behind `exc`, following the chains that Hydra, MONAI and DataLoader add."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, WorkbenchError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a foreign library's error (its type name when it says nothing), to
    quote inside a WorkbenchError."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def one_line(exc: WorkbenchError) -> str:
    """The message on one line; a DataLoader worker re-raises with the remote traceback inside it."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split("WorkbenchError: ", 1)[-1]
    return " ".join(text.split())


@contextmanager
def unwrapped_workbench_errors() -> Iterator[None]:
    """Re-raises a WorkbenchError that MONAI or torch wrapped in another exception, as itself."""
    try:
        yield
    except Exception as e:
        error = find_workbench_error(e)
        if error is None or error is e:
            raise
        raise error from None
