"""SQLite store of the three memory levels (experience, insight, pattern) plus retrieval logs and run metadata.

The store is the run's state: it is checkpointed next to the weights (`backup_to`) and, on resume, replaced by
the checkpoint's copy (`restore`, called by `checkpoint.restore_run_state`). So it keeps only the current state:
nothing needs to roll it back to an earlier step. Design choices, and why:

- `MemoryStore` is split by concept across four modules. Here: the content, every write and read of each level
  and the operations over all of it (rebase, counts, export). `connection`: opening and checking the file (WAL,
  a foreign or corrupt file rejected untouched, read-only opens), transactions and the crash-safe whole-file
  copies (`backup_to`, `restore`). `queries`: retrieval's indexed reads. `records`: the tables and their rows.
- `meta` is a plain key/value table: its reader (the memory loop's "last reflected step") needs only the latest
  value.
- The tables (`SCHEMA`, `SCHEMA_VERSION`) and their rows as dataclasses (Experience, Insight, Pattern,
  RetrievalRecord, re-exported here) live in `records`. Rows become dataclasses through one mapper
  (`records._from_row`) driven by the dataclass fields, so a column added to a table and its dataclass needs no
  hand-written conversion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from pmd.memory.connection import StoreConnection
from pmd.memory.dbfile import APPLICATION_ID  # re-exported with the records below
from pmd.memory.records import (  # re-exported: `from pmd.memory.store import Experience` is the usual import
    FAILURE_KINDS,
    KINDS,
    SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    Experience,
    Insight,
    InsightKind,
    Pattern,
    PatternStatus,
    RetrievalRecord,
    _from_row,
)
from pmd.memory.queries import SUCCESS_SQL, RetrievalQueries
from pmd.memory.text import normalize_text


def _failure_kind(kind: str) -> str:
    if kind not in FAILURE_KINDS:
        raise ValueError(f"failure_kind must be one of {FAILURE_KINDS}, got {kind!r}")
    return kind


def _id_list(ids: Sequence[int]) -> str:
    """Ids as stored: sorted, unique, JSON."""
    return json.dumps(sorted({int(i) for i in ids}))


class MemoryStore(StoreConnection, RetrievalQueries):
    """The memory of one run in one SQLite file (opened, checked and copied by `StoreConnection`). Not thread-safe:
    use it from the process's main thread only."""

    # -- experience ------------------------------------------------------------------------------------------

    def add_experiences(self, rows: Sequence[Experience]) -> list[int]:
        """Record rollouts; returns their ids in order. Idempotent on (step, problem_uid, sample_index): replaying
        a step after a resume returns the existing rows' ids and writes nothing new for them."""
        conn = self._db
        ids: list[int] = []
        with self.transaction():
            self._touched = True
            for r in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO experiences (problem_uid, family, prompt, response, reward, passed, "
                    "feedback, step, sample_index, answer, failure_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.problem_uid, r.family, r.prompt, r.response, float(r.reward), int(bool(r.passed)),
                     r.feedback, int(r.step), int(r.sample_index), r.answer, _failure_kind(r.failure_kind)),
                )
                if cur.rowcount == 1:
                    ids.append(int(cur.lastrowid))
                else:
                    row = conn.execute(
                        "SELECT id FROM experiences WHERE step = ? AND problem_uid = ? AND sample_index = ?",
                        (int(r.step), r.problem_uid, int(r.sample_index)),
                    ).fetchone()
                    ids.append(int(row[0]))
        return ids

    def experiences(self, problem_uid: str | None = None, since_step: int | None = None) -> list[Experience]:
        """Rollouts in (step, id) order, optionally of one problem and/or with step >= `since_step` (inclusive)."""
        rows = self._db.execute(
            "SELECT * FROM experiences WHERE (?1 IS NULL OR problem_uid = ?1) AND (?2 IS NULL OR step >= ?2) "
            "ORDER BY step, id",
            (problem_uid, since_step),
        )
        return [_from_row(Experience, r) for r in rows]

    def problems_with_experience_since(self, step: int) -> list[str]:
        """Problem uids with at least one rollout at step >= `step` (inclusive), sorted."""
        rows = self._db.execute(
            "SELECT DISTINCT problem_uid FROM experiences WHERE step >= ? ORDER BY problem_uid", (int(step),)
        )
        return [r[0] for r in rows]

    def latest_failure_with_feedback(self, problem_uid: str, exclude_step: int | None = None,
                                     success_threshold: float = 1.0) -> Experience | None:
        """This problem's most recent failed rollout whose feedback says something (the most useful failure).
        Failed: not a success as `pmd.rewards.is_success` decides with `success_threshold` (the run's
        train.success_reward_threshold), so a right value without the format that earned the threshold is not one."""
        row = self._db.execute(
            f"SELECT * FROM experiences WHERE problem_uid = ?1 AND NOT {SUCCESS_SQL.format(t='?3')} "
            "AND TRIM(feedback) != '' AND (?2 IS NULL OR step != ?2) ORDER BY step DESC, id DESC LIMIT 1",
            (problem_uid, exclude_step, float(success_threshold)),
        ).fetchone()
        return _from_row(Experience, row) if row else None

    # -- insights --------------------------------------------------------------------------------------------

    def upsert_insight(self, problem_uid: str, family: str, kind: InsightKind, text: str, source: str,
                       experience_ids: Sequence[int], step: int, tag: str = "") -> int:
        """Record a strategy/lesson for a problem. The same normalised text for the same problem+kind is a
        re-confirmation: support += 1, experience ids merged, updated_step advanced, and a retired insight becomes
        active again (the evidence came back). `tag` is the behaviour key consolidation groups on (kept from the
        first write). Returns the insight id."""
        if kind not in KINDS:
            raise ValueError(f"insight kind must be one of {KINDS}, got {kind!r}")
        norm = normalize_text(text)
        if not norm:
            raise ValueError(f"insight text for {problem_uid!r} is empty after normalisation: {text!r}")
        conn = self._db
        with self.transaction():
            self._touched = True
            row = conn.execute(
                "SELECT id, experience_ids FROM insights WHERE problem_uid = ? AND kind = ? AND norm_text = ?",
                (problem_uid, kind, norm),
            ).fetchone()
            if row is None:
                return int(
                    conn.execute(
                        "INSERT INTO insights (problem_uid, family, kind, text, norm_text, source, support, "
                        "experience_ids, created_step, updated_step, tag) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                        (problem_uid, family, kind, text.strip(), norm, source, _id_list(experience_ids), step, step,
                         tag),
                    ).lastrowid
                )
            conn.execute(
                "UPDATE insights SET support = support + 1, experience_ids = ?, "
                "updated_step = MAX(updated_step, ?), status = 'active', retired_step = NULL WHERE id = ?",
                (_id_list([*json.loads(row["experience_ids"]), *experience_ids]), int(step), row["id"]),
            )
            return int(row["id"])

    def insights(self, problem_uid: str | None = None, status: str | None = "active") -> list[Insight]:
        """Insights (optionally of one problem) with `status` (None = all), most supported first, then most recently
        confirmed, then oldest. Retrieval and consolidation read the active ones; `pmd memory show` reads all."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"insight status must be one of {STATUSES} or None, got {status!r}")
        rows = self._db.execute(
            "SELECT * FROM insights WHERE (?1 IS NULL OR problem_uid = ?1) AND (?2 IS NULL OR status = ?2) "
            "ORDER BY support DESC, updated_step DESC, id ASC",
            (problem_uid, status),
        )
        return [_from_row(Insight, r) for r in rows]

    def retire_insight(self, insight_id: int, step: int) -> None:
        """Mark an insight retired at `step` (recent evidence contradicts it). It stays in the store, visible to
        `pmd memory show`, and becomes active again if `upsert_insight` re-confirms it."""
        with self.transaction():
            self._touched = True
            cur = self._db.execute(
                "UPDATE insights SET status = 'retired', retired_step = ? WHERE id = ? AND status = 'active'",
                (int(step), int(insight_id)),
            )
            if cur.rowcount == 0 and self._db.execute("SELECT 1 FROM insights WHERE id = ?",
                                                      (int(insight_id),)).fetchone() is None:
                raise KeyError(f"{self.path}: no insight with id {insight_id}")

    # -- patterns --------------------------------------------------------------------------------------------

    def add_pattern(self, kind: InsightKind, text: str, insight_ids: Sequence[int], support_problems: int, step: int,
                    status: PatternStatus = "active") -> int:
        """Create a pattern (normally via `patterns.consolidate`). Returns its id."""
        if kind not in KINDS:
            raise ValueError(f"pattern kind must be one of {KINDS}, got {kind!r}")
        if status not in STATUSES:
            raise ValueError(f"pattern status must be one of {STATUSES}, got {status!r}")
        with self.transaction():
            self._touched = True
            return int(
                self._db.execute(
                    "INSERT INTO patterns (kind, text, status, support_problems, insight_ids, created_step, "
                    "updated_step) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind, text.strip(), status, int(support_problems), _id_list(insight_ids), int(step), int(step)),
                ).lastrowid
            )

    def update_pattern(self, pattern_id: int, step: int, *, text: str | None = None,
                       status: PatternStatus | None = None, support_problems: int | None = None,
                       insight_ids: Sequence[int] | None = None) -> None:
        """Change a pattern's fields (None = keep); updated_step becomes `step`."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"pattern status must be one of {STATUSES}, got {status!r}")
        with self.transaction():
            self._touched = True
            cur = self._db.execute(
                "UPDATE patterns SET text = COALESCE(?, text), status = COALESCE(?, status), "
                "support_problems = COALESCE(?, support_problems), insight_ids = COALESCE(?, insight_ids), "
                "updated_step = ? WHERE id = ?",
                (None if text is None else text.strip(), status,
                 None if support_problems is None else int(support_problems),
                 None if insight_ids is None else _id_list(insight_ids), int(step), int(pattern_id)),
            )
            if cur.rowcount == 0:
                raise KeyError(f"{self.path}: no pattern with id {pattern_id}")

    def patterns(self, status: str | None = "active") -> list[Pattern]:
        """Patterns with `status` (None = all), most supported first, then most recently updated, then id."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"pattern status must be one of {STATUSES} or None, got {status!r}")
        rows = self._db.execute(
            "SELECT * FROM patterns WHERE (?1 IS NULL OR status = ?1) "
            "ORDER BY support_problems DESC, updated_step DESC, id ASC",
            (status,),
        )
        return [_from_row(Pattern, r) for r in rows]

    # -- retrieval log ---------------------------------------------------------------------------------------

    def log_retrieval(self, records: Sequence[RetrievalRecord]) -> None:
        """Record what the teacher was shown (one row per teacher call)."""
        with self.transaction():
            self._db.executemany(
                "INSERT INTO retrievals (step, problem_uid, sample_index, text, item_refs, n_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.step, r.problem_uid, r.sample_index, r.text, json.dumps(list(r.item_refs)), r.n_tokens)
                 for r in records],
            )

    def retrievals(self, problem_uid: str | None = None, step: int | None = None) -> list[RetrievalRecord]:
        """Logged retrievals in the order they were recorded."""
        rows = self._db.execute(
            "SELECT * FROM retrievals WHERE (?1 IS NULL OR problem_uid = ?1) AND (?2 IS NULL OR step = ?2) "
            "ORDER BY id",
            (problem_uid, step),
        )
        return [_from_row(RetrievalRecord, r) for r in rows]

    # -- metadata --------------------------------------------------------------------------------------------

    def meta_get(self, key: str, default: Any = None) -> Any:
        """The value set for `key` (JSON-decoded), or `default`."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def meta_set(self, key: str, value: Any) -> None:
        """Set `key` to a JSON-serialisable value (e.g. "last_reflected_step"), replacing any earlier one."""
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- whole-store operations ------------------------------------------------------------------------------

    # Every column that holds a training step (table -> columns).
    _STEP_COLUMNS = {"experiences": ("step",), "insights": ("created_step", "updated_step"),
                     "patterns": ("created_step", "updated_step"), "retrievals": ("step",)}

    def rebase_steps(self, meta_step_keys: Sequence[str] = ()) -> int:
        """Shift every step so that this store's history ends at step -1; returns the shift.

        A store seeded from another run (`memory.load_from`) holds steps 0..N of *that* run. Left as they are, this
        run's step-0 rollouts would collide with the seed's (experiences are unique per step, problem and sample,
        so they would be dropped), the teacher's "not this step" rule would hide the seed's step-0 attempts, and
        ageing would treat old evidence as fresh. After the shift the seed is simply the past: steps -N-1..-1.
        `meta_step_keys` name meta values that are steps too (e.g. the last reflected step)."""
        conn = self._db
        highest = max(conn.execute(f"SELECT COALESCE(MAX({c}), -1) FROM {t}").fetchone()[0]  # noqa: S608 - fixed
                      for t, cols in self._STEP_COLUMNS.items() for c in cols)
        for key in meta_step_keys:
            value = self.meta_get(key)
            if isinstance(value, int):
                highest = max(highest, value)
        shift = highest + 1
        if shift <= 0:
            return 0
        with self.transaction():
            self._touched = True
            for table, cols in self._STEP_COLUMNS.items():
                conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = {c} - ?' for c in cols)}",  # noqa: S608
                             (shift,) * len(cols))
            for key in meta_step_keys:
                value = self.meta_get(key)
                if isinstance(value, int):
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 (key, json.dumps(value - shift)))
        return shift


    def counts(self) -> dict[str, int]:
        """Sizes of every level (one consistent snapshot)."""
        with self._snapshot() as conn:
            row = conn.execute(
                "SELECT (SELECT COUNT(*) FROM experiences), (SELECT COUNT(*) FROM insights), "
                "(SELECT COUNT(*) FROM insights WHERE kind = 'strategy'), "
                "(SELECT COUNT(*) FROM insights WHERE kind = 'lesson'), "
                "(SELECT COUNT(*) FROM patterns WHERE status = 'active'), "
                "(SELECT COUNT(*) FROM patterns WHERE status = 'retired'), "
                "(SELECT COUNT(*) FROM (SELECT problem_uid FROM experiences UNION SELECT problem_uid FROM insights))"
            ).fetchone()
        keys = ("experiences", "insights", "strategies", "lessons", "patterns_active", "patterns_retired", "problems")
        return {k: int(v) for k, v in zip(keys, row)}

    def export_jsonl(self, path_or_file: str | Path | IO[str], limit: int | None = None) -> int:
        """Dump every level for `pmd memory export`, one JSON object per line with a "level" field (experience,
        insight, pattern, retrieval, meta), from one consistent snapshot. Returns the number of lines written.
        `limit`: at most this many rows (the first, by id) of each of experience, insight, pattern and retrieval;
        the meta rows (a handful describing the store) always all."""
        if isinstance(path_or_file, (str, Path)):
            with open(path_or_file, "w", encoding="utf-8") as f:
                return self.export_jsonl(f, limit)
        n = 0
        with self._snapshot() as conn:
            for level, cls in _EXPORT_ROWS:
                rows = conn.execute(f"SELECT * FROM {level}s ORDER BY id LIMIT ?", (-1 if limit is None else limit,))
                for r in rows:
                    path_or_file.write(_jsonl(level, {"id": r["id"], **asdict(_from_row(cls, r))}))
                    n += 1
            for key, value in conn.execute("SELECT key, value FROM meta ORDER BY key"):
                path_or_file.write(_jsonl("meta", {"key": key, "value": json.loads(value)}))
                n += 1
        return n


# What `export_jsonl` writes, level by level (table = level + "s"), then the meta rows. `pmd memory export` reads
# EXPORT_LEVELS to recognise an earlier export it may overwrite.
_EXPORT_ROWS: tuple[tuple[str, type], ...] = (
    ("experience", Experience), ("insight", Insight), ("pattern", Pattern), ("retrieval", RetrievalRecord))
EXPORT_LEVELS: tuple[str, ...] = (*(level for level, _ in _EXPORT_ROWS), "meta")


def _jsonl(level: str, obj: dict[str, Any]) -> str:
    return json.dumps({"level": level, **obj}, ensure_ascii=False) + "\n"
