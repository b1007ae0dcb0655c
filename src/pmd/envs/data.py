"""What file-backed environments share: their common params, reading rows, clipping, and the held-out split.

Deduplication comes before the split so that one question can never sit in both splits (a memorised question would
inflate held-out accuracy).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TypeVar

from ..config_fields import _f, build_dataclass
from ..errors import ConfigError, DatasetError

SPLITS = ("train", "eval")
P = TypeVar("P", bound="SplitParams")


@dataclass(frozen=True)
class SplitParams:
    """Params every file-backed environment takes: its name, the seeded held-out split and a size cap.

    Types are checked by the config machinery (`build_dataclass`); the ranges here, because types cannot say them.
    """

    name: str | None = _f(None, "Family name and uid prefix (default: the task's name, else the dataset's).")
    eval_fraction: float = _f(0.2, "Share of the deduplicated problems held out for evaluation, in (0, 1).")
    seed: int = _f(0, "Seed of the train/eval split (a task inherits env.seed).")
    max_problems: int | None = _f(None, "Problems kept per split (null = all).")

    def __post_init__(self) -> None:
        if self.name is not None and not self.name.strip():
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be strictly between 0 and 1, got {self.eval_fraction!r}")
        if self.max_problems is not None and self.max_problems <= 0:
            raise ConfigError(f"max_problems must be a positive integer or None, got {self.max_problems!r}")


def build_params(cls: type[P], params: P | None, options: dict[str, Any], who: str) -> P:
    """An environment's `params` as given, or built from a Python caller's keyword `options`, validated exactly like
    a task's YAML params (errors name `who.<key>`; a Path is taken as the string YAML would hold)."""
    if params is None:
        return build_dataclass(cls, {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}, who)
    if options or not isinstance(params, cls):
        raise TypeError(f"{who}: pass a {cls.__name__} or keyword options, not both")
    return params


def check_split(split: str, who: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"{who}: split must be 'train' or 'eval', got {split!r}")


def dedupe_and_split(records: list[Any], key: Callable[[Any], Hashable], eval_fraction: float,
                     seed: int) -> tuple[dict[str, list[Any]], int]:
    """The train/eval split of `records` after dropping repeats of a `key`; also how many were dropped."""
    kept, dropped = dedupe(records, key)
    return split(kept, eval_fraction, seed), dropped


def dedupe(records: list[Any], key: Callable[[Any], Hashable]) -> tuple[list[Any], int]:
    """Keep the first record of each `key`; returns the kept records and how many were dropped."""
    seen: set[Hashable] = set()
    kept = []
    for record in records:
        k = key(record)
        if k not in seen:
            seen.add(k)
            kept.append(record)
    return kept, len(records) - len(kept)


def split(records: list[Any], eval_fraction: float, seed: int) -> dict[str, list[Any]]:
    """Seeded shuffle of indices, first share to eval; both sides keep file order. Disjoint by construction."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(records) * eval_fraction)
    if len(records) >= 2:
        n_eval = min(max(n_eval, 1), len(records) - 1)
    return {"train": [records[i] for i in sorted(order[n_eval:])], "eval": [records[i] for i in sorted(order[:n_eval])]}


def clip(text: str | None, limit: int = 400, *, count: bool = True) -> str:
    """`text` cut to `limit` characters for feedback, so one runaway output cannot flood the teacher prompt; the
    marker says how much was cut (`count`) or only that something was."""
    text = text or ""
    if len(text) <= limit:
        return text
    return text[:limit] + (f"... [{len(text) - limit} more characters]" if count else "...")


def dataset_files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """`path` itself, or the files under a directory with one of `suffixes` (sorted, so the order is stable)."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in suffixes and p.is_file())
    if not files:
        names = ", ".join(suffixes[:-1]) + " or " + suffixes[-1]
        raise DatasetError(f"{path}: no {names} files in this directory")
    return files


def read_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """Rows of a JSONL, JSON or parquet file, each with a "file: row N" location for error messages.

    A .json file holds a list of rows, or (as some released datasets do) one JSON object per line.
    """
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 (byte {e.start}: {e.reason}); re-save the file as UTF-8") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from e
    text = text.lstrip("\ufeff")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise DatasetError(f"{path}: invalid JSON ({e})") from e
        numbered: Iterator[tuple[int, Any]] = enumerate(rows, 1)
    else:
        numbered = ((n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip())
    for n, item in numbered:
        where = f"{path}: row {n}"
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError as e:
                raise DatasetError(f"{where}: invalid JSON ({e})") from e
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: a row must be a JSON object, got {type(item).__name__}")
        yield item, where


def _parquet_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DatasetError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from e
    for n, row in enumerate(rows, 1):
        yield row, f"{path}: row {n}"
