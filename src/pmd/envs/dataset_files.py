"""Reading a dataset task's rows through `datasets`, as valid text, with one line for whatever is wrong.

`datasets` reads the files (`load_dataset`; `load_from_disk` for a `save_to_disk` folder), but three of its habits do
not fit a command that must say exactly one thing about bad input:

* on a file it cannot parse it logs "Failed to load JSON from file ..." on stderr, then raises a
  `DatasetGenerationError` whose message says only "An error occurred while generating the dataset". Its loggers
  (and huggingface_hub's, which reads a folder's README.md) are silenced for the load, and a failure is explained
  instead: for JSON by reading the file ourselves to name the row (`data.read_rows`), else by the root cause (pandas
  names the CSV line);
* a folder is read in its most common format and the other files are dropped without a word (`a.jsonl` beside
  `b.csv` loses the CSV): a folder must hold one format (`folder_format`);
* a path that is a FIFO or a device (`data.jsonl -> /dev/zero`) is read forever: only regular files are data.

Rows must hold valid text: a lone surrogate ("\\ud800", which JSON's escapes can write and Python's json accepts)
is no UTF-8 character, and would fail far later, in the tokenizer or the memory store (`text_problem`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..valid_text import first_lone_surrogate
from .data import read_rows
from .reward_functions import first_line

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DISK_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")  # what save_to_disk writes
QUIET_LOGGERS = ("datasets", "huggingface_hub", "fsspec")


def load_rows(path: Path, split: str, where: str) -> list[dict[str, Any]]:
    """Rows of `path` through `datasets` (files via load_dataset, save_to_disk folders via load_from_disk). The
    `datasets` cache goes to a temporary folder that is removed, so reading writes nothing that stays. Raises
    DatasetError naming `where`, the file and, where it can, the row."""
    import datasets

    if not path.exists():
        raise DatasetError(f"{where}: {path} does not exist")
    if not path.is_dir() and not path.is_file():
        raise DatasetError(f"{where}: {path} is not a regular file (a device, FIFO or socket is never read to its "
                           "end); give a data file or folder")
    disk = path.is_dir() and any((path / f).is_file() for f in DISK_MARKERS)
    if disk:
        how = "load_from_disk"
    else:
        builder = folder_format(path, where) if path.is_dir() else FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetError(f"{where}: {path}: unsupported file type {path.suffix!r} (use "
                               f"{', '.join(FILE_BUILDERS)}, or a save_to_disk folder)")
        how = "load_dataset" if path.is_dir() else f"load_dataset({builder!r})"
    cache = tempfile.mkdtemp(prefix="pmd-datasets-")
    bars = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a few hundred rows: no "Generating train split" bar at every start
    try:
        with quiet(*QUIET_LOGGERS):
            if disk:
                loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
            elif path.is_dir():  # the folder's own name patterns (train*, test*) still give its splits
                loaded = datasets.load_dataset(str(path), cache_dir=cache, keep_in_memory=True)
            else:
                loaded = datasets.load_dataset(builder, data_files=str(path), cache_dir=cache, keep_in_memory=True)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DatasetError(f"{where}: {path} has splits {sorted(loaded)}, not {split!r}; set the task's "
                                       "split / eval_split")
                loaded = loaded[split]
            rows = loaded.to_list()
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed files surface as many exception types inside datasets
        if not disk and builder == "json":
            explain_json(path, where)  # raises, naming the row, where our own reading finds the fault
        raise DatasetError(f"{where}: {path} could not be read by datasets' {how}: {root_cause(exc)}") from None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()
    if not rows:
        raise DatasetError(f"{where}: {path} holds no rows")
    for n, row in enumerate(rows, 1):
        problem = text_problem(row)
        if problem:
            raise DatasetError(f"{where}: {path}: row {n}: {problem}")
    return rows


def data_files(folder: Path) -> list[Path]:
    """The files under `folder` that `datasets` would read: not hidden, not under a hidden or `__` folder."""
    return sorted(p for p in folder.rglob("*") if not any(part.startswith((".", "__"))
                                                           for part in p.relative_to(folder).parts) and not p.is_dir())


def folder_format(folder: Path, where: str) -> str:
    """The one `datasets` builder that reads every data file of `folder`. A folder of two formats is refused (datasets
    would read its most common one and drop the others in silence), as is one with no data file or a data file that
    is not a regular file."""
    found: dict[str, Path] = {}
    for file in data_files(folder):
        builder = FILE_BUILDERS.get(file.suffix.lower())
        if builder is None:
            continue
        if not file.is_file():
            raise DatasetError(f"{where}: {file} is not a regular file; a data folder holds files only")
        found.setdefault(builder, file)
    if not found:
        raise DatasetError(f"{where}: {folder}: no {', '.join(FILE_BUILDERS)} file in this folder")
    if len(found) > 1:
        first, second = sorted(found.values())[:2]
        raise DatasetError(f"{where}: {folder} mixes formats ({first.name} and {second.name}); a folder is read in "
                           "one format: convert the files to one, or give each its own task")
    return next(iter(found))


def explain_json(path: Path, where: str) -> None:
    """Read JSON/JSONL data ourselves and raise DatasetError naming the first bad row (invalid JSON, not an object,
    text that is not UTF-8); return if we find nothing wrong (the caller then reports datasets' own cause)."""
    files = [f for f in data_files(path) if FILE_BUILDERS.get(f.suffix.lower()) == "json"] if path.is_dir() else [path]
    for file in files:
        try:
            for row, row_where in read_rows(file):
                problem = text_problem(row)
                if problem:
                    raise DatasetError(f"{where}: {row_where}: {problem}")
        except DatasetError as exc:
            message = str(exc)
            raise DatasetError(message if message.startswith(where) else f"{where}: {message}") from None


def text_problem(value: Any, column: str | None = None) -> str | None:
    """Why a row's `value` (walked through lists and dicts) holds text that is not valid UTF-8, or None: a lone
    surrogate, which UTF-8 cannot encode, names its column (a top-level key is a column name; a nested one, part of
    its column)."""
    hit = first_lone_surrogate(value, column, lambda col, key: key if col is None else col, lambda col, i: col)
    if hit is None:
        return None
    col, char, at = hit
    what = f"column {col!r}" if col else "a column name"
    return (f"{what} holds a lone surrogate ({char!r}) at character {at}, which is not UTF-8 text; fix the row's "
            "escapes (a \\ud800-\\udfff escape must be half of a pair)")


def root_cause(exc: BaseException) -> str:
    """'Type: message' of the innermost exception that `exc` was raised from: datasets wraps a parser's precise
    error ("Expected 2 fields in line 3, saw 4") in one that says nothing."""
    seen = {id(exc)}
    while (inner := exc.__cause__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    text = first_line(exc, 300)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Silence the loggers `names` and Python warnings for a block: what goes wrong is reported by our one line."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
