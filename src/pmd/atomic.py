"""Crash-safe files: a reader, a kill mid-write or a full disk sees the old file or the new one, never half of one.

Used for everything pmd writes into a run directory and its checkpoints (rundir.py, checkpoint.py, evaluation and
comparison outputs).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

_T = TypeVar("_T")


def fsync_path(path: Path) -> None:
    """Flush a file (or directory entry list) to disk; directories that cannot be fsynced are skipped."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[str]], _T]) -> _T:
    """Call `write` on a temporary text file beside `path`, then rename it over `path`: a reader (or a process
    killed mid-write, or a full disk) sees the old file or the new one, never half of one, and no temporary is left.
    Returns what `write` returned."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_path(path.parent)
    return result


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a whole text."""
    atomic_write(path, lambda fh: fh.write(text))
