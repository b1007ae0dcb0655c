"""Where a command may write a file the user named (`pmd eval --out`, `pmd memory export --out`), and how.

One rule for both, because a mistyped `--out` must never cost the user a file: an output may replace only what
the same command wrote before (an earlier export, an earlier evaluation), an empty file, or nothing; never a
SQLite file (a memory store), the config the command was given, the store being exported or its -wal/-shm, nor
any other existing file. Nor may it land in a run directory that a live `pmd train` holds (its lock, see
`rundir.RunDirLock`): that directory has one writer. The decisions (`export_refusal`, `eval_refusal`) are pure
reads, made before the command's work (minutes, for an evaluation) and again just before it writes. The write
itself goes through a temporary file renamed over the target (`write_output`), so a full disk or a kill leaves the
old file whole and no half of a new one; a device or FIFO (`/dev/stdout`) is written in place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from .atomic import atomic_write
from .rundir import held_by_another
from .errors import PMDError

_T = TypeVar("_T")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_EVAL_KEYS = ("overall", "families")  # what every evaluation `pmd eval` writes holds (evaluate.summarise)


def check_out_path(out: str, flag: str = "--out") -> None:
    """An output file we will write later: fail now, before any work, if it cannot be created."""
    path = Path(out)
    if path.is_dir():
        raise PMDError(f"{flag} {out}: is a directory (expected a file path)")
    if not path.parent.is_dir():
        raise PMDError(f"{flag} {out}: directory {path.parent} does not exist")
    if held_by_another(path.parent):
        raise PMDError(f"{flag} {out}: {path.parent} is a run directory a live pmd train is writing (one writer per "
                       "run); choose a path outside it, or wait for the run to end")


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def _first_line(out: Path) -> bytes | str:
    """The first line of `out` (at most 64 KiB), or why it cannot be read."""
    try:
        with open(out, "rb") as fh:
            return fh.readline(1 << 16)
    except OSError as exc:
        return f"cannot read it to check what it is ({exc.strerror})"


def export_refusal(out: Path, source: Path) -> str | None:
    """Why `pmd memory export --out OUT` must not write `out`, or None. Refused: the store being exported (by any
    path: a link, `RUN/./memory.sqlite`, a hard link) and its -wal/-shm/-journal files, and any existing regular
    file that is not an earlier export (overwriting it would destroy it: another store, a config, a checkpoint).
    An earlier export, an empty file, a new path or a device such as /dev/stdout is fine. Reads only."""
    from .memory.dbfile import sidecars

    if any(_same_file(out, own) for own in (source, *sidecars(source))):
        return "is the memory store being exported (choose a new .jsonl path)"
    return _existing_file_refusal(out, _is_export, "a pmd memory export", "exporting onto it would destroy it",
                                  "a new .jsonl")


def _is_export(out: Path, head: bytes) -> bool:
    """Whether the first line of `out` is an export record (a JSON object of a level export writes)."""
    from .memory.store import EXPORT_LEVELS

    try:
        first = json.loads(head)
    except ValueError:
        return False
    return isinstance(first, dict) and first.get("level") in EXPORT_LEVELS


def eval_refusal(out: Path, config: Path | None, memory: Path | None) -> str | None:
    """Why `pmd eval --out OUT` must not write `out`, or None: export's rules for an evaluation. Refused: the config
    file given, the memory store read (`--memory`) and its sidecars, a SQLite file, and any existing regular file
    that is not an earlier evaluation (a JSON object with 'overall' and 'families', as `pmd eval` writes and a run's
    eval_base.json / eval_trained.json hold). Reads only (the whole file, to know whether it is an evaluation)."""
    from .memory.dbfile import sidecars

    if config is not None and _same_file(out, config):
        return "is the config file of this evaluation; writing the result there would destroy it (choose a .json path)"
    if memory is not None and any(_same_file(out, own) for own in (memory, *sidecars(memory))):
        return "is the memory store this evaluation reads (choose a .json path)"
    refusal = _existing_file_refusal(out, _is_evaluation, "an earlier pmd evaluation",
                                     "writing the result there would destroy it", "a .json")
    if refusal is None and writes_samples_beside(out):
        samples = out.with_name(f"{out.stem}.samples.jsonl")  # evaluate.samples_path
        if (why := _existing_file_refusal(samples, _is_samples, "earlier per-sample rows",
                                          "writing the samples there would destroy it", "another")) is not None:
            return f"{samples.name} beside it {why}"
    return refusal


def writes_samples_beside(out: Path) -> bool:
    """Whether `pmd eval --out OUT` also writes OUT's per-sample rows beside it: for a file, not a device such as
    /dev/stdout."""
    return not (out.exists() and not out.is_file())


def _is_samples(out: Path, head: bytes) -> bool:
    """Whether `out` starts with a per-sample evaluation row (evaluate.sample_rows)."""
    try:
        first = json.loads(head)
    except ValueError:
        return False
    return isinstance(first, dict) and {"problem_id", "response"} <= first.keys()


def _is_evaluation(out: Path, head: bytes) -> bool:
    """Whether `out` holds an evaluation (the whole file: a JSON object with 'overall' and 'families')."""
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(earlier, dict) and all(isinstance(earlier.get(k), dict) for k in _EVAL_KEYS)


def _existing_file_refusal(out: Path, is_earlier_output: Callable[[Path, bytes], bool], output: str,
                           destroys: str, new_path: str) -> str | None:
    """The rule export and eval share for a target that exists: a new path, a device or an empty file is fine; an
    unreadable file, a SQLite database, or a regular file that `is_earlier_output` does not recognise (as `output`)
    is refused, saying what writing there would do (`destroys`) and what to choose instead (`new_path`)."""
    if not out.is_file() or out.stat().st_size == 0:
        return None
    head = _first_line(out)
    if isinstance(head, str):
        return head
    if head.startswith(_SQLITE_MAGIC):
        return f"is a SQLite database; {destroys} (choose {new_path} path)"
    if is_earlier_output(out, head):
        return None
    return f"exists and is not {output}; {destroys} (choose a new path or remove it)"


def write_output(out: Path, write: Callable[[IO[str]], _T]) -> _T:
    """Write `out` through a temporary file beside it, renamed over it when complete; a device or FIFO in place."""
    if out.exists() and not out.is_file():
        with open(out, "w", encoding="utf-8") as fh:
            return write(fh)
    return atomic_write(out, write)
