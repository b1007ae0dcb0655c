"""MemoryStore: round trips, the row mapper, idempotency, rejection of files that are not ours (untouched),
crash safety, backup/restore, and JSONL export."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from pmd.errors import MemoryStoreError
from pmd.memory.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Experience,
    MemoryStore,
    RetrievalRecord,
    _from_row,
)


def exp(uid: str = "p1", step: int = 1, i: int = 0, passed: bool = False, reward: float = 0.0, **kw) -> Experience:
    base = dict(
        problem_uid=uid,
        family=kw.pop("family", "arith"),
        prompt=f"prompt {uid}",
        response=f"response {uid} {step} {i}",
        reward=reward,
        passed=passed,
        feedback=kw.pop("feedback", "wrong answer"),
        step=step,
        sample_index=i,
    )
    base.update(kw)
    return Experience(**base)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.db") as s:
        yield s


# -- round trips -------------------------------------------------------------------------------------------------


def test_creates_file_with_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "memory.db"
    with MemoryStore(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_every_level_round_trips(store: MemoryStore, tmp_path: Path) -> None:
    rows = [exp("p1", 1, 0, passed=True, reward=1.0, feedback=""), exp("p1", 1, 1), exp("p2", 2, 0, family="logic")]
    ids = store.add_experiences(rows)
    assert len(set(ids)) == 3
    got = store.experiences()
    assert [e.id for e in got] == ids
    for original, back in zip(rows, got):
        original.id = back.id
        assert back == original
    assert isinstance(got[0].passed, bool) and got[0].passed

    iid = store.upsert_insight("p1", "arith", "strategy", "Carry the one.", "policy", [ids[0]], step=1)
    (ins,) = store.insights()
    assert (ins.id, ins.problem_uid, ins.family, ins.kind, ins.text, ins.source) == (
        iid, "p1", "arith", "strategy", "Carry the one.", "policy")
    assert (ins.support, ins.experience_ids, ins.created_step, ins.updated_step) == (1, [ids[0]], 1, 1)

    pid = store.add_pattern("lesson", "Check the sign.", [iid], support_problems=2, step=3)
    (pat,) = store.patterns()
    assert (pat.id, pat.kind, pat.text, pat.status, pat.support_problems, pat.insight_ids) == (
        pid, "lesson", "Check the sign.", "active", 2, [iid])
    assert (pat.created_step, pat.updated_step) == (3, 3)
    store.update_pattern(pid, 4, status="retired")
    assert store.patterns() == [] and store.patterns("retired")[0].updated_step == 4
    assert store.patterns(None)[0].text == "Check the sign."
    with pytest.raises(KeyError):
        store.update_pattern(pid + 1, 4, status="active")

    rec = RetrievalRecord(2, "p1", sample_index=3, text="Strategy: x", item_refs=[f"insight:{iid}"], n_tokens=2)
    store.log_retrieval([rec])
    assert store.retrievals() == [rec]
    assert store.retrievals(problem_uid="p2") == [] and store.retrievals(step=2) == [rec]

    store.meta_set("last_reflected_step", 2)
    store.meta_set("info", {"a": [1, 2]})
    assert store.meta_get("last_reflected_step") == 2 and store.meta_get("info") == {"a": [1, 2]}
    assert store.meta_get("missing", 7) == 7

    assert store.counts() == {
        "experiences": 3, "insights": 1, "strategies": 1, "lessons": 0,
        "patterns_active": 0, "patterns_retired": 1, "problems": 2,
    }
    # Survives close and reopen.
    store.close()
    with MemoryStore.open_existing(store.path) as again:
        assert again.experiences() == got
        assert again.insights() == [ins]
        assert again.retrievals() == [rec]
        assert again.meta_get("last_reflected_step") == 2


@dataclass
class _Row:
    flag: bool
    ids: list[int]
    name: str
    score: float | None = None


def test_row_mapper_decodes_by_field_type_and_needs_every_field() -> None:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT 1 AS flag, '[3, 1]' AS ids, 'x' AS name, NULL AS score, 'extra' AS unused").fetchone()
    got = _from_row(_Row, row)
    assert got == _Row(True, [3, 1], "x") and got.flag is True  # 0/1 -> bool, JSON -> list, extra column skipped
    with pytest.raises(IndexError):
        _from_row(_Row, conn.execute("SELECT 0 AS flag, '[]' AS ids, 'x' AS name").fetchone())  # no `score`


def test_experience_queries(store: MemoryStore) -> None:
    store.add_experiences([exp("b", 2, 0)] + [exp("a", s, i) for s in (3, 1, 2) for i in range(2)])
    in_order = [(s, i) for s in (1, 2, 3) for i in range(2)]
    assert [(e.step, e.sample_index) for e in store.experiences("a")] == in_order  # by step, not by insertion
    assert [e.step for e in store.experiences("a", since_step=2)] == [2, 2, 3, 3]
    assert [e.problem_uid for e in store.experiences(since_step=2)] == ["b", "a", "a", "a", "a"]
    assert store.problems_with_experience_since(2) == ["a", "b"]
    assert store.problems_with_experience_since(3) == ["a"]
    assert store.problems_with_experience_since(4) == []


def test_add_experiences_is_idempotent(store: MemoryStore) -> None:
    first = store.add_experiences([exp("p1", 5, 0), exp("p1", 5, 1)])
    replay = store.add_experiences([exp("p1", 5, 1, response="different"), exp("p1", 5, 2), exp("p1", 5, 0)])
    assert replay[0] == first[1] and replay[2] == first[0] and replay[1] not in first
    assert store.counts()["experiences"] == 3
    assert store.experiences()[1].response == "response p1 5 1"  # the first write wins


def test_upsert_counts_support_on_normalised_text(store: MemoryStore) -> None:
    a = store.upsert_insight("p1", "arith", "lesson", "Forgot to carry the one.", "policy", [1, 2], step=1)
    b = store.upsert_insight("p1", "arith", "lesson", "  forgot to CARRY   the one!! ", "policy", [2, 3], step=4)
    c = store.upsert_insight("p1", "arith", "strategy", "Forgot to carry the one.", "policy", [], step=4)
    d = store.upsert_insight("p2", "arith", "lesson", "Forgot to carry the one.", "policy", [], step=4)
    e = store.upsert_insight("p1", "arith", "lesson", "Forgot to carry the two.", "policy", [], step=4)
    assert a == b and len({a, c, d, e}) == 4
    ins = {i.id: i for i in store.insights()}
    assert ins[a].support == 2 and ins[a].experience_ids == [1, 2, 3]
    assert (ins[a].created_step, ins[a].updated_step) == (1, 4)
    assert ins[a].text == "Forgot to carry the one."
    assert [i.id for i in store.insights()][0] == a  # most supported first
    assert {i.id for i in store.insights(problem_uid="p1")} == {a, c, e}
    assert {i.id for i in store.insights(problem_uid="p2")} == {d}
    with pytest.raises(ValueError):
        store.upsert_insight("p1", "arith", "hint", "x", "policy", [], step=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.upsert_insight("p1", "arith", "lesson", " ?! ", "policy", [], step=1)


def test_transaction_groups_writes_and_rolls_back(store: MemoryStore) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_experiences([exp("p1", 1, 0)])
            store.meta_set("last_reflected_step", 1)
            raise RuntimeError("boom")
    assert store.counts()["experiences"] == 0 and store.meta_get("last_reflected_step") is None
    with store.transaction():
        store.add_experiences([exp("p1", 1, 0)])
        store.meta_set("last_reflected_step", 1)
    assert store.counts()["experiences"] == 1 and store.meta_get("last_reflected_step") == 1
    with store.transaction():  # a nested block that fails undoes only its own writes
        store.meta_set("last_reflected_step", 2)
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.add_experiences([exp("p1", 2, 0)])
                raise RuntimeError("inner")
    assert store.counts()["experiences"] == 1 and store.meta_get("last_reflected_step") == 2


# -- files that are not ours ---------------------------------------------------------------------------------------


def _assert_rejected(path: Path, match: str) -> None:
    before, files = sha(path), sorted(path.parent.iterdir())
    with pytest.raises(MemoryStoreError, match=match) as info:
        MemoryStore(path)
    assert str(path) in str(info.value)
    with pytest.raises(MemoryStoreError):
        MemoryStore.open_existing(path)
    assert sha(path) == before
    assert sorted(path.parent.iterdir()) == files  # not even a -wal/-shm left beside it


def test_rejects_non_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 10)
    _assert_rejected(path, "not a SQLite database")
    short = tmp_path / "short.db"
    short.write_bytes(b"SQLite format 3\x00")
    _assert_rejected(short, "not a SQLite database")


def test_rejects_foreign_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE experiences (x)")
    conn.execute("INSERT INTO experiences VALUES (1)")
    conn.commit()
    conn.close()
    _assert_rejected(path, "not ours")


def test_rejects_our_id_with_missing_tables(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE experiences (x)")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.commit()
    conn.close()
    _assert_rejected(path, "missing tables")


def test_rejects_newer_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with MemoryStore(path) as s:
        s.add_experiences([exp()])
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    _assert_rejected(path, f"version {SCHEMA_VERSION + 1} is newer")


def test_rejects_older_schema_version(tmp_path: Path) -> None:
    """A version 1 store (the schema with history tables) gets one clean line, not a traceback or a migration:
    the version is checked before any table is looked at."""
    path = tmp_path / "memory.db"
    MemoryStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    conn.close()
    _assert_rejected(path, f"memory schema version {SCHEMA_VERSION - 1} is not supported; expected a pmd memory store")
    with pytest.raises(MemoryStoreError) as info:
        MemoryStore.check(path)
    assert "\n" not in str(info.value)


def test_rejects_corrupt_database(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with MemoryStore(path) as s:
        s.add_experiences([exp("p", 1, i, response="x" * 500) for i in range(200)])
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[2 * page : 5 * page] = bytes(range(256)) * (3 * page // 256)
    path.write_bytes(bytes(data))
    _assert_rejected(path, "corrupt")


def test_open_existing_requires_a_file(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match="no memory store"):
        MemoryStore.open_existing(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.touch()
    with MemoryStore(path) as s:
        assert s.counts()["experiences"] == 0


# -- crash safety --------------------------------------------------------------------------------------------------


_CRASH_CHILD = textwrap.dedent(
    """
    import sys
    from pmd.memory.store import Experience, MemoryStore

    def row(step, i):
        return Experience("p", "f", "prompt", "r" * 200, 0.5, False, "fb", step, i)

    class Endless(list):
        # add_experiences iterates its rows inside one transaction: yield forever, announce once well inside it.
        def __iter__(self):
            i = 0
            while True:
                if i == 2000:
                    print("INSIDE", flush=True)
                yield row(2, i)
                i += 1

    store = MemoryStore(sys.argv[1])
    store.add_experiences([row(1, i) for i in range(10)])
    store.upsert_insight("p", "f", "lesson", "a committed lesson", "policy", [1], 1)
    print("COMMITTED", flush=True)
    store.add_experiences(Endless())
    """
)


def test_kill_mid_write_leaves_no_partial_rows(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    timer = threading.Timer(60, child.kill)  # never hang the suite if the child misbehaves
    timer.start()
    try:
        assert child.stdout.readline().strip() == "COMMITTED", child.stderr.read()
        assert child.stdout.readline().strip() == "INSIDE", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        timer.cancel()
    assert child.returncode == -signal.SIGKILL
    with MemoryStore.open_existing(path) as s:
        assert s.counts()["experiences"] == 10
        assert {e.step for e in s.experiences()} == {1}
        assert [i.text for i in s.insights()] == ["a committed lesson"]
        s.add_experiences([exp("p", 2, 0)])  # and it is writable again
        assert s.counts()["experiences"] == 11


# -- backup / restore ----------------------------------------------------------------------------------------------


def test_backup_is_consistent_while_open_and_restore_replaces(tmp_path: Path) -> None:
    live = tmp_path / "run" / "memory.db"
    ckpt = tmp_path / "ckpt" / "memory.db"
    with MemoryStore(live) as s:
        s.add_experiences([exp("p1", 1, i) for i in range(5)])
        s.upsert_insight("p1", "arith", "lesson", "check the sign", "policy", [1], 1)
        s.meta_set("last_reflected_step", 1)
        s.backup_to(ckpt)
        assert not ckpt.with_name("memory.db.tmp").exists()
        assert not ckpt.with_name("memory.db-wal").exists()  # a self-contained single file
        s.add_experiences([exp("p1", 2, i) for i in range(5)])  # the run goes on after the checkpoint
        s.backup_to(ckpt)  # overwriting an older snapshot is atomic too
        s.add_experiences([exp("p1", 3, 0)])
        with MemoryStore.open_existing(ckpt) as snap:
            assert snap.counts()["experiences"] == 10
            assert snap.meta_get("last_reflected_step") == 1
    # Resume: the live store is replaced by the checkpoint's copy.
    MemoryStore.restore(ckpt, live)
    with MemoryStore.open_existing(live) as s:
        assert s.counts()["experiences"] == 10 and s.counts()["insights"] == 1
        assert {e.step for e in s.experiences()} == {1, 2}
        assert sqlite3.connect(live).execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_restore_rejects_bad_source_and_keeps_target(tmp_path: Path) -> None:
    live = tmp_path / "memory.db"
    with MemoryStore(live) as s:
        s.add_experiences([exp()])
    before = sha(live)
    bad = tmp_path / "bad.db"
    bad.write_text("garbage" * 100)
    with pytest.raises(MemoryStoreError, match="not a SQLite database"):
        MemoryStore.restore(bad, live)
    with pytest.raises(MemoryStoreError, match="no memory snapshot"):
        MemoryStore.restore(tmp_path / "missing.db", live)
    assert sha(live) == before


def test_restore_ignores_stale_wal_of_target(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.db"
    with MemoryStore(ckpt) as s:
        s.add_experiences([exp("p1", 1, 0)])
    live = tmp_path / "memory.db"
    with MemoryStore(live) as s:
        s.add_experiences([exp("other", 7, i) for i in range(50)])
    live.with_name("memory.db-wal").write_bytes(b"\x00" * 1000)  # leftovers of a crashed run
    MemoryStore.restore(ckpt, live)
    assert not live.with_name("memory.db-wal").exists()
    with MemoryStore.open_existing(live) as s:
        assert [e.problem_uid for e in s.experiences()] == ["p1"]


# -- export --------------------------------------------------------------------------------------------------------


def test_export_jsonl_has_every_level(store: MemoryStore, tmp_path: Path) -> None:
    (eid,) = store.add_experiences([exp("p1", 1, 0)])
    iid = store.upsert_insight("p1", "arith", "lesson", "check the sign", "policy", [eid], step=1)
    store.add_pattern("lesson", "check the sign", [iid], 2, step=1)
    store.log_retrieval([RetrievalRecord(1, "p1", 0, "Lesson: check the sign", [f"insight:{iid}"], 5)])
    store.meta_set("last_reflected_step", 0)
    store.meta_set("last_reflected_step", 1)

    out = tmp_path / "memory.jsonl"
    assert store.export_jsonl(out) == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["level"] for r in rows] == ["experience", "insight", "pattern", "retrieval", "meta"]
    assert rows[0]["response"] == "response p1 1 0" and rows[0]["id"] == eid and rows[0]["passed"] is False
    assert rows[1]["experience_ids"] == [eid] and rows[2]["insight_ids"] == [iid]
    assert rows[3]["item_refs"] == [f"insight:{iid}"] and rows[3]["id"] == 1
    assert rows[4] == {"level": "meta", "key": "last_reflected_step", "value": 1}

    buf = io.StringIO()
    assert store.export_jsonl(buf) == 5
    assert buf.getvalue() == out.read_text()


def test_a_seed_is_rebased_into_the_past_so_this_runs_steps_do_not_collide(store: MemoryStore) -> None:
    """memory.load_from: the seed's steps 0..2 become -3..-1; this run's step-0 rollouts are then new rows."""
    store.add_experiences([exp("p1", step=s, i=0) for s in range(3)])
    iid = store.upsert_insight("p1", "arith", "lesson", "Check the sign before answering.", "test", [1], 2)
    store.log_retrieval([RetrievalRecord(1, "p1", 0, "memory text", ["insight:1"], 3)])
    store.meta_set("last_reflected_step", 2)
    assert store.rebase_steps(meta_step_keys=("last_reflected_step",)) == 3
    assert [e.step for e in store.experiences()] == [-3, -2, -1]
    insight = next(i for i in store.insights() if i.id == iid)
    assert (insight.created_step, insight.updated_step) == (-1, -1)
    assert [r.step for r in store.retrievals()] == [-2]
    assert store.meta_get("last_reflected_step") == -1
    new = store.add_experiences([exp("p1", step=0, i=0)])
    assert len(store.experiences()) == 4 and new[0] not in {e.id for e in store.experiences()[:3]}
    assert store.rebase_steps() == 1  # idempotent in kind: the newest step again ends at -1


def test_rebasing_an_empty_store_changes_nothing(store: MemoryStore) -> None:
    assert store.rebase_steps(meta_step_keys=("last_reflected_step",)) == 0


# -- read-only opens (inspection never writes) ---------------------------------------------------------------------


def _sidecar_names(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name + "-"))


@pytest.mark.parametrize("kind", ["checkpoint_copy", "closed_wal_store"])
def test_read_only_open_changes_no_byte_and_creates_no_sidecar(kind: str, tmp_path: Path) -> None:
    """A checkpoint's copy is in rollback-journal mode (header bytes 18-19 = 1): a read-write open would switch it to
    WAL (= 2). A closed live store is in WAL mode with no -wal beside it: a plain `mode=ro` open would create
    -wal/-shm to read it. Neither happens through `read_only=True`."""
    live = tmp_path / "live" / "memory.db"
    with MemoryStore(live) as s:
        s.add_experiences([exp("p1", 1, i) for i in range(3)])
        s.backup_to(tmp_path / "ckpt" / "memory.db")
    db = tmp_path / "ckpt" / "memory.db" if kind == "checkpoint_copy" else live
    assert db.read_bytes()[18:20] == (b"\x01\x01" if kind == "checkpoint_copy" else b"\x02\x02")
    before, mtime = db.read_bytes(), db.stat().st_mtime_ns
    with MemoryStore.open_existing(db, read_only=True) as s:
        assert s.counts()["experiences"] == 3 and len(s.experiences()) == 3
        s.export_jsonl(io.StringIO())
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            s.add_experiences([exp("p2")])
    assert db.read_bytes() == before and db.stat().st_mtime_ns == mtime
    assert _sidecar_names(db) == []


def test_read_only_open_sees_a_live_writers_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    with MemoryStore(db) as writer:
        writer.add_experiences([exp("p1", 1, 0)])
        writer.add_experiences([exp("p1", 2, 0)])  # committed into the WAL, not yet into the main file
        main_file = db.read_bytes()
        with MemoryStore.open_existing(db, read_only=True) as reader:
            assert reader.counts()["experiences"] == 2
        assert db.read_bytes() == main_file


def test_restore_leaves_a_wal_mode_source_untouched(tmp_path: Path) -> None:
    """`memory.load_from` may name another run's live store (WAL mode): seeding from it writes nothing beside it."""
    src = tmp_path / "other_run" / "memory.db"
    with MemoryStore(src) as s:
        s.add_experiences([exp("p1", 1, 0)])
    before = src.read_bytes()
    MemoryStore.restore(src, tmp_path / "run" / "memory.db")
    assert src.read_bytes() == before and _sidecar_names(src) == []


# -- issue 27: schema objects pmd did not create, values pmd would not write, a WAL without its -shm ----------------


def _seeded(path: Path) -> Path:
    with MemoryStore(path) as s:
        s.add_experiences([exp("p1", 0, 0, passed=False, reward=0.0)])
        s.upsert_insight("p1", "arith", "lesson", "check the sign", "rule", [1], 0)
        s.add_pattern("lesson", "check signs", [1], 2, 0)
        s.log_retrieval([RetrievalRecord(0, "p1", 0, "shown", ["i:1"], 3)])
        s.meta_set("last_reflected_step", 0)
    return path


def _sql(path: Path, script: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")  # a hand edit need not honour them
    conn.executescript(script)
    conn.commit()
    conn.close()


FOREIGN_OBJECTS = {
    "trigger": ("CREATE TRIGGER t AFTER INSERT ON experiences BEGIN "
                "UPDATE experiences SET passed = 1, reward = 1.0; END", "trigger 't'"),
    "view": ("CREATE VIEW v AS SELECT * FROM experiences", "view 'v'"),
    "table": ("CREATE TABLE notes (x)", "table 'notes'"),
    "index": ("CREATE INDEX by_reward ON experiences (reward)", "index 'by_reward'"),
    "column": ("ALTER TABLE experiences ADD COLUMN extra TEXT", "table 'experiences' has columns"),
}


@pytest.mark.parametrize("kind", list(FOREIGN_OBJECTS))
def test_a_schema_object_pmd_did_not_create_is_refused_and_never_copied(kind: str, tmp_path: Path) -> None:
    """Was: `restore` (memory.load_from) copied a trigger, which then rewrote every attempt as passed, reward 1."""
    src = _seeded(tmp_path / "seed.db")
    statement, named = FOREIGN_OBJECTS[kind]
    _sql(src, statement)
    for attempt in (lambda: MemoryStore.check(src), lambda: MemoryStore.open_existing(src, read_only=True),
                    lambda: MemoryStore.restore(src, tmp_path / "run" / "memory.db")):
        with pytest.raises(MemoryStoreError, match="never creates|unlike pmd's") as info:
            attempt()
        assert named in str(info.value) and str(src) in str(info.value)
    assert not (tmp_path / "run").exists()


MALFORMED_VALUES = {
    "reward_text": ("UPDATE experiences SET reward = 'abc'", "experiences.reward of row id 1 is 'abc'"),
    "reward_infinite": ("UPDATE experiences SET reward = 9e999", "experiences.reward of row id 1"),
    "passed_2": ("UPDATE experiences SET passed = 2", "experiences.passed of row id 1"),
    "step_real": ("UPDATE experiences SET step = 1.5", "experiences.step of row id 1 is 1.5"),
    "prompt_blob": ("UPDATE experiences SET prompt = x'00ff'", "experiences.prompt of row id 1"),
    "failure_kind_unknown": ("UPDATE experiences SET failure_kind = 'bad'", "experiences.failure_kind"),
    "insight_ids_not_json": ("UPDATE insights SET experience_ids = '[1,'", "insights.experience_ids of row id 1"),
    "insight_ids_strings": ("UPDATE insights SET experience_ids = '[\"a\"]'", "a JSON list of integers"),
    "pattern_status": ("UPDATE patterns SET status = 'zombie'", "patterns.status of row id 1"),
    "item_refs_not_json": ("UPDATE retrievals SET item_refs = 'not json'", "retrievals.item_refs of row id 1"),
    "item_refs_numbers": ("UPDATE retrievals SET item_refs = '[1, 2]'", "a JSON list of strings"),
    "meta_not_json": ("UPDATE meta SET value = 'abc'", "meta.value of key 'last_reflected_step' is 'abc'"),
    "last_reflected_text": ("UPDATE meta SET value = '\"abc\"'", "a JSON integer (a step)"),
}


@pytest.mark.parametrize("kind", list(MALFORMED_VALUES))
def test_a_value_pmd_would_not_write_is_named_by_table_column_and_row(kind: str, tmp_path: Path) -> None:
    """Was: a traceback in `pmd memory show` (text in reward), `stats` (item_refs not JSON), or deep in training
    (a load_from store whose last_reflected_step is 'abc')."""
    src = _seeded(tmp_path / "seed.db")
    statement, named = MALFORMED_VALUES[kind]
    _sql(src, statement)
    before = sha(src)
    for attempt in (lambda: MemoryStore.check(src), lambda: MemoryStore.open_existing(src, read_only=True),
                    lambda: MemoryStore(src)):
        with pytest.raises(MemoryStoreError, match="changed outside pmd") as info:
            attempt()
        assert named in str(info.value) and str(src) in str(info.value), info.value
    assert sha(src) == before and _sidecar_names(src) == []


def test_every_value_pmd_writes_passes_the_content_check(tmp_path: Path) -> None:
    """The other side of the checks above: a store as pmd writes it, with NULLs where pmd writes them."""
    src = _seeded(tmp_path / "seed.db")
    with MemoryStore(src) as s:
        s.add_experiences([exp("p2", 1, 0, passed=True, reward=1.0, answer=None, failure_kind="")])
        s.retire_insight(1, 1)
        MemoryStore.check(src)


def test_a_wal_without_its_shm_is_read_whole_and_nothing_is_created_beside_it(tmp_path: Path) -> None:
    """Was: `pmd memory stats` created memory.db-shm next to a -wal left without one."""
    live = tmp_path / "live" / "memory.db"
    with MemoryStore(live) as writer:
        writer.add_experiences([exp("p1", 1, 0)])
        writer.add_experiences([exp("p1", 2, 0)])  # committed into the WAL only
        copy = tmp_path / "copy" / "memory.db"
        copy.parent.mkdir()
        for suffix in ("", "-wal"):  # the store and its WAL, copied without the -shm
            copy.with_name(copy.name + suffix).write_bytes(live.with_name(live.name + suffix).read_bytes())
    before = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    leftovers = set(Path(tempfile.gettempdir()).glob("pmd-read-*"))
    with MemoryStore.open_existing(copy, read_only=True) as reader:
        assert reader.counts()["experiences"] == 2  # the WAL's rows too, not the main file alone
    assert {p.name: p.read_bytes() for p in copy.parent.iterdir()} == before
    assert set(Path(tempfile.gettempdir()).glob("pmd-read-*")) == leftovers, "the private copy is removed"


def test_the_meta_steps_checked_are_the_ones_the_memory_loop_keeps() -> None:
    from pmd.memory.integrity import META_STEP_KEYS
    from pmd.memory.loop import LAST_REFLECTED

    assert META_STEP_KEYS == (LAST_REFLECTED,)
