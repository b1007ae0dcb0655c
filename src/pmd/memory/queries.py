"""The read-only queries retrieval needs, mixed into `MemoryStore`.

Kept apart from `store` (writes, whole-store operations) and `connection` (transactions) because they exist for
one reader, the retrieval index (`memory/index.py`) and `retrieve`, and share one rule: at a paper-scale store
(~10^6 rollouts) each is either served by an index (per problem: `experiences_by_problem`, the insights'
(problem_uid, kind, norm_text) unique index) or bounded by what changed since a row id (rowid ranges), never a scan
of a whole table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence

from pmd.memory.records import Experience, Insight, _from_row

# `pmd.rewards.is_success` over the experiences table ({t}: the threshold's parameter): passed, or a reward at or
# above the run's success threshold. tests/test_success_labels.py checks the two agree. Decided when read, not
# stored: every row keeps its reward, so no column (and no schema version, which would refuse every existing store
# and seed) is needed, and a store seeded into a run with another threshold is read by that run's threshold.
# `passed` stays the verifier's strict bit.
SUCCESS_SQL = "(passed = 1 OR reward >= {t})"


class RetrievalQueries:
    """Mixin: needs `self._db` (an open sqlite3 connection with `sqlite3.Row` rows)."""

    _db: sqlite3.Connection

    def max_ids(self) -> tuple[int, int]:
        """(largest experience id, largest insight id), 0 when empty: what an incremental index has caught up to."""
        row = self._db.execute("SELECT (SELECT COALESCE(MAX(id), 0) FROM experiences), "
                               "(SELECT COALESCE(MAX(id), 0) FROM insights)").fetchone()
        return int(row[0]), int(row[1])

    def first_prompts_after(self, experience_id: int) -> list[tuple[int, str, str, str]]:
        """(id, problem_uid, family, prompt) of the first rollout of each problem among rollouts with id >
        `experience_id`, in id order: the documents similar-problem search indexes."""
        rows = self._db.execute(
            # "+problem_uid": group the rowid range in a temp b-tree, not by scanning the whole per-problem index
            "SELECT MIN(id), problem_uid, family, prompt FROM experiences WHERE id > ? GROUP BY +problem_uid "
            "ORDER BY 1", (int(experience_id),))
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def insights_without_experience_after(self, insight_id: int) -> list[tuple[int, str, str, str]]:
        """(id, problem_uid, family, text) of insights with id > `insight_id` whose problem has no rollout (a seeded
        or hand-made store): their texts stand in for the missing prompt."""
        rows = self._db.execute(
            "SELECT id, problem_uid, family, text FROM insights AS i WHERE id > ? AND NOT EXISTS "
            "(SELECT 1 FROM experiences AS e WHERE e.problem_uid = i.problem_uid) ORDER BY id", (int(insight_id),))
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def active_insights_of(self, problem_uids: Sequence[str]) -> dict[str, list[Insight]]:
        """Active insights of each of `problem_uids` (one query over the (problem_uid, ...) index), each problem's in
        `insights()` order; problems without any are absent."""
        uids = list(dict.fromkeys(problem_uids))
        out: dict[str, list[Insight]] = {}
        for start in range(0, len(uids), 500):  # SQLite's bound-parameter limit
            chunk = uids[start:start + 500]
            rows = self._db.execute(
                f"SELECT * FROM insights WHERE problem_uid IN ({', '.join('?' * len(chunk))}) AND status = 'active' "
                "ORDER BY support DESC, updated_step DESC, id ASC", chunk)
            for r in rows:
                ins = _from_row(Insight, r)
                out.setdefault(ins.problem_uid, []).append(ins)
        return out

    def insight_families(self, insight_ids: Sequence[int]) -> dict[int, str]:
        """insight id -> family, for the given ids (patterns rank by the families of the insights they generalise)."""
        ids = sorted({int(i) for i in insight_ids})
        out: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = self._db.execute(f"SELECT id, family FROM insights WHERE id IN ({', '.join('?' * len(chunk))})",
                                    chunk)
            out.update({int(r[0]): r[1] for r in rows})
        return out

    def passing_attempts(self, problem_uid: str, exclude_step: int | None = None,
                         success_threshold: float = 1.0) -> list[tuple[int, float, int]]:
        """(id, reward, step) of this problem's successful rollouts (not from `exclude_step`), over the per-problem
        index: retrieval weighs reward by age to pick the best one. Successful as `pmd.rewards.is_success` decides
        (passed, or reward >= `success_threshold`, the run's train.success_reward_threshold), in SQL: a rollout
        good enough to be a sibling's demonstration is never filed with the failures."""
        rows = self._db.execute(
            f"SELECT id, reward, step FROM experiences WHERE problem_uid = ?1 AND {SUCCESS_SQL.format(t='?3')} "
            "AND (?2 IS NULL OR step != ?2) ORDER BY step, id", (problem_uid, exclude_step, float(success_threshold)))
        return [(int(r[0]), float(r[1]), int(r[2])) for r in rows]

    def experience(self, experience_id: int) -> Experience | None:
        """One rollout by id."""
        row = self._db.execute("SELECT * FROM experiences WHERE id = ?", (int(experience_id),)).fetchone()
        return _from_row(Experience, row) if row else None

    def newest_step(self) -> int | None:
        """The latest step memory holds a rollout from (else the latest insight confirmation); None when empty.
        Retrieval measures an item's age from it when the caller names no current step."""
        row = self._db.execute("SELECT MAX(step) FROM experiences").fetchone()
        if row[0] is None:
            row = self._db.execute("SELECT MAX(updated_step) FROM insights").fetchone()
        return None if row[0] is None else int(row[0])

    def retrieval_item_refs(self) -> Iterator[tuple[int, list[str]]]:
        """(step, item refs) of every logged teacher call, in order (`pmd memory stats` counts levels from them)."""
        for step, refs in self._db.execute("SELECT step, item_refs FROM retrievals ORDER BY id"):
            yield int(step), json.loads(refs)
