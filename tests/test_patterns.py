"""Consolidation: promotion across problems, support updates, no duplicates, retirement, re-activation, max_active."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmd.errors import ConfigError
from pmd.memory.patterns import ConsolidationConfig, ConsolidationReport, consolidate, plan
from pmd.memory.store import MemoryStore

SIGN = "Check the sign of the result before answering."
SIGN_2 = "Check the sign of the final result before answering!"
TAGS = "Put the final answer inside the answer tags."
UNITS = "Convert every quantity to the same units first."


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.db") as s:
        yield s


def lesson(store: MemoryStore, uid: str, text: str, step: int, kind: str = "lesson", family: str = "arith") -> int:
    return store.upsert_insight(uid, family, kind, text, "policy", [], step)  # type: ignore[arg-type]


def test_same_lesson_across_two_problems_becomes_a_pattern(store: MemoryStore) -> None:
    a = lesson(store, "p1", SIGN, 1)
    lesson(store, "p1", SIGN, 2)  # p1's wording is the better supported one
    b = lesson(store, "p2", SIGN_2, 2)
    lesson(store, "p3", TAGS, 2)  # unrelated, one problem only
    report = consolidate(store, step=2)
    assert report == ConsolidationReport(promoted=1, updated=0, retired=0, reactivated=0)
    (p,) = store.patterns()
    assert (p.kind, p.text, p.status, p.support_problems) == ("lesson", SIGN, "active", 2)
    assert p.insight_ids == sorted([a, b])
    assert (p.created_step, p.updated_step) == (2, 2)


def test_one_problem_alone_is_not_a_pattern(store: MemoryStore) -> None:
    for step in range(1, 6):
        lesson(store, "p1", SIGN, step)
    lesson(store, "p1", SIGN_2, 5)  # a near-duplicate on the same problem is still one problem
    assert consolidate(store, step=5) == ConsolidationReport()
    assert store.patterns(None) == []


def test_kinds_and_dissimilar_texts_do_not_merge(store: MemoryStore) -> None:
    lesson(store, "p1", SIGN, 1)
    lesson(store, "p2", SIGN, 1, kind="strategy")
    lesson(store, "p3", UNITS, 1)
    lesson(store, "p4", TAGS, 1)
    assert consolidate(store, step=1).promoted == 0


def test_new_support_updates_the_pattern_without_duplicates(store: MemoryStore) -> None:
    lesson(store, "p1", SIGN, 1)
    lesson(store, "p2", SIGN, 1)
    consolidate(store, step=1)
    (first,) = store.patterns()

    assert consolidate(store, step=2) == ConsolidationReport()  # nothing new: no writes, no duplicates
    assert store.patterns() == [first]

    c = lesson(store, "p3", SIGN_2, 3)
    assert consolidate(store, step=3) == ConsolidationReport(updated=1)
    (p,) = store.patterns(None)
    assert p.id == first.id and p.support_problems == 3 and c in p.insight_ids and p.updated_step == 3
    assert p.text == first.text  # a pattern's text is stable once promoted


def test_stale_pattern_is_retired_and_reactivated_when_evidence_returns(store: MemoryStore) -> None:
    cfg = ConsolidationConfig(stale_after_steps=10)
    lesson(store, "p1", SIGN, 1)
    lesson(store, "p2", SIGN, 1)
    consolidate(store, step=1, config=cfg)
    (p,) = store.patterns()

    assert consolidate(store, step=11, config=cfg) == ConsolidationReport()  # 10 steps old: still fresh
    lesson(store, "p1", SIGN, 11)  # only one problem re-confirms it
    assert consolidate(store, step=12, config=cfg) == ConsolidationReport(retired=1)
    assert store.patterns() == [] and store.patterns("retired")[0].id == p.id

    lesson(store, "p3", SIGN_2, 14)  # a second problem shows the mistake again
    assert consolidate(store, step=14, config=cfg) == ConsolidationReport(reactivated=1)
    (back,) = store.patterns()
    assert back.id == p.id and back.status == "active" and back.support_problems == 3
    assert len(store.patterns(None)) == 1


def test_stale_evidence_is_not_promoted(store: MemoryStore) -> None:
    cfg = ConsolidationConfig(stale_after_steps=5)
    lesson(store, "p1", SIGN, 1)
    lesson(store, "p2", SIGN, 1)
    assert consolidate(store, step=30, config=cfg) == ConsolidationReport()
    assert store.patterns(None) == []


def test_max_active_retires_lowest_support_first(store: MemoryStore) -> None:
    cfg = ConsolidationConfig(max_active=2)
    for uid in ("p1", "p2"):
        lesson(store, uid, UNITS, 1)
    for uid in ("p1", "p2", "p3"):
        lesson(store, uid, SIGN, 1)
    assert consolidate(store, step=1, config=cfg).promoted == 2
    assert {p.text for p in store.patterns()} == {UNITS, SIGN}

    for uid in ("p4", "p5", "p6", "p7"):  # a better-supported behaviour appears
        lesson(store, uid, TAGS, 2)
    assert consolidate(store, step=2, config=cfg) == ConsolidationReport(promoted=1, retired=1)
    assert [p.text for p in store.patterns()] == [TAGS, SIGN]
    assert [p.text for p in store.patterns("retired")] == [UNITS]
    assert consolidate(store, step=2, config=cfg) == ConsolidationReport()  # stable: no churn at the cap


def test_plan_is_deterministic_and_pure(store: MemoryStore) -> None:
    for uid in ("p1", "p2", "p3"):
        lesson(store, uid, SIGN, 1)
        lesson(store, uid, TAGS, 1, kind="strategy")
    ins, pats = store.insights(), store.patterns(None)
    first = plan(ins, pats, step=1)
    assert first == plan(list(reversed(ins)), pats, step=1)
    assert store.patterns(None) == []  # plan wrote nothing
    assert {(a.kind, a.text, a.counted_as) for a in first} == {
        ("lesson", SIGN, "promoted"), ("strategy", TAGS, "promoted")}


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="similarity_threshold"):
        ConsolidationConfig(similarity_threshold=0.0)
    with pytest.raises(ConfigError, match="min_problems"):
        ConsolidationConfig(min_problems=0)
