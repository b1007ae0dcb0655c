"""The shape of a memory store's content: its tables (`SCHEMA`, `SCHEMA_VERSION`, `TABLES`), their rows as
dataclasses, and the one mapper that builds those from SQLite rows.

Split out of `store` (which holds the queries; `connection` the transactions) so that each table sits next to its
dataclass; `store` re-exports the public names, so `from pmd.memory.store import Experience` keeps working. Rows
become dataclasses through `_from_row`, driven by the dataclass fields, so a column added to a table and its
dataclass needs no hand-written conversion. Change `SCHEMA_VERSION` (and `TABLES`) with `SCHEMA`: `dbfile` rejects
a file whose version or tables do not match. This module imports nothing from pmd.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

InsightKind = Literal["strategy", "lesson"]
PatternStatus = Literal["active", "retired"]
KINDS: tuple[str, ...] = ("strategy", "lesson")
STATUSES: tuple[str, ...] = ("active", "retired")

SCHEMA_VERSION = 3  # 3: structured outcomes (experiences.answer, failure_kind); insight tag, status, retired_step
# 2: no history tables (insight_events, pattern_versions), no policy_version, meta is key/value

# Why a rollout failed, as the environment judged it ("" when it passed). Reflection and consolidation key on these
# instead of re-reading feedback prose; see `pmd.envs.base.Verdict.failure_kind`.
FAILURE_KINDS: tuple[str, ...] = (
    "",  # passed
    "wrong_value",  # an answer was extracted and is wrong
    "no_answer",  # nothing could be extracted
    "format",  # the right value without the required format
    "wrong_answer_on_test",  # code: ran, but some test's output differs
    "runtime_error",  # code: raised / non-zero exit
    "compile_error",  # code: does not parse / no code found
    "timeout",  # code: wall or CPU limit
    "other",
)
InsightStatus = Literal["active", "retired"]

SCHEMA = """
CREATE TABLE experiences (
    id INTEGER PRIMARY KEY,
    problem_uid TEXT NOT NULL,
    family TEXT NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    reward REAL NOT NULL,
    passed INTEGER NOT NULL CHECK (passed IN (0, 1)),
    feedback TEXT NOT NULL,
    step INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    answer TEXT,
    failure_kind TEXT NOT NULL DEFAULT '',
    UNIQUE (step, problem_uid, sample_index)
);
CREATE INDEX experiences_by_problem ON experiences (problem_uid, step);

CREATE TABLE insights (
    id INTEGER PRIMARY KEY,
    problem_uid TEXT NOT NULL,
    family TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('strategy', 'lesson')),
    text TEXT NOT NULL,
    norm_text TEXT NOT NULL,
    source TEXT NOT NULL,
    support INTEGER NOT NULL,
    experience_ids TEXT NOT NULL,
    created_step INTEGER NOT NULL,
    updated_step INTEGER NOT NULL,
    tag TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    retired_step INTEGER,
    UNIQUE (problem_uid, kind, norm_text)
);

CREATE TABLE patterns (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('strategy', 'lesson')),
    text TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    support_problems INTEGER NOT NULL,
    insight_ids TEXT NOT NULL,
    created_step INTEGER NOT NULL,
    updated_step INTEGER NOT NULL
);

CREATE TABLE retrievals (
    id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    problem_uid TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    item_refs TEXT NOT NULL,
    n_tokens INTEGER NOT NULL
);
CREATE INDEX retrievals_by_problem ON retrievals (problem_uid, step);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

TABLES = frozenset({"experiences", "insights", "patterns", "retrievals", "meta"})  # those SCHEMA creates


@dataclass
class Experience:
    """One rollout as the policy produced it and the environment judged it. `id` is keyword-only, so a positional
    call written for another field list fails instead of shifting a value into it."""

    problem_uid: str
    family: str
    prompt: str
    response: str
    reward: float
    passed: bool
    feedback: str
    step: int
    sample_index: int
    answer: str | None = None  # what the verifier extracted as the answer (None: nothing extractable)
    failure_kind: str = ""  # one of FAILURE_KINDS; "" when passed
    id: int | None = field(default=None, kw_only=True)


@dataclass
class Insight:
    """A per-problem strategy (what passed) or lesson (a recurring mistake), with how often it was confirmed."""

    problem_uid: str
    family: str
    kind: InsightKind
    text: str
    source: str
    support: int
    experience_ids: list[int]
    created_step: int
    updated_step: int
    tag: str = ""  # behaviour key consolidation groups on: a failure kind for lessons, a strategy key for strategies
    status: InsightStatus = "active"  # retired: contradicted by recent evidence; kept for `pmd memory show`
    retired_step: int | None = None
    id: int | None = field(default=None, kw_only=True)


@dataclass
class Pattern:
    """A behaviour recurring across problems, the insights it generalises, and whether it still holds."""

    kind: InsightKind
    text: str
    status: PatternStatus
    support_problems: int
    insight_ids: list[int]
    created_step: int
    updated_step: int
    id: int | None = None


@dataclass
class RetrievalRecord:
    """What the teacher was shown for one sample, so a run can be inspected afterwards."""

    step: int
    problem_uid: str
    sample_index: int
    text: str
    item_refs: list[str] = field(default_factory=list)
    n_tokens: int = 0


_T = TypeVar("_T")


@functools.cache
def _decoders(cls: type) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """(field name, decoder or None) for each field of dataclass `cls`. SQLite has no lists or booleans: lists are
    stored as JSON text and booleans as 0/1, so those two field types are decoded; the rest come back as stored."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Callable[[Any], Any] | None]] = []
    for f in fields(cls):
        kind = hints[f.name]
        out.append((f.name, json.loads if typing.get_origin(kind) is list else bool if kind is bool else None))
    return tuple(out)


def _from_row(cls: type[_T], row: sqlite3.Row) -> _T:
    """The dataclass `cls` built from a row by field name. Columns without a field (e.g. insights.norm_text) are
    skipped; a field without a column raises IndexError, so schema and dataclass cannot drift apart silently."""
    return cls(**{name: row[name] if decode is None else decode(row[name]) for name, decode in _decoders(cls)})
