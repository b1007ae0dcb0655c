"""Ageing: lessons whose mistake stopped recurring and strategies that recently failed retire; patterns follow their
insights; the memory loop applies both on the consolidation schedule; `pmd memory show` lists what retired."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmd.cli import main
from pmd.config import ConsolidationConfig, MemoryConfig
from pmd.memory.ageing import AgeingReport, age, lesson_contradicted, retirements, strategy_contradicted
from pmd.memory.loop import MemoryLoop
from pmd.memory.reflect import ModelReflector
from pmd.memory.store import Experience, Insight, MemoryStore
from pmd.prompts import LESSON_PATTERNS


def exp(step: int, i: int, kind: str = "", uid: str = "p1") -> Experience:
    """An attempt that passed (kind '') or failed with failure kind `kind`."""
    return Experience(uid, "arith", "What is 2 + 2?", "work", float(not kind), not kind, "", step, i,
                      failure_kind=kind)


def ins(kind: str, tag: str, updated_step: int = 0, uid: str = "p1", id: int = 1) -> Insight:
    return Insight(uid, "arith", kind, "text", "test", 1, [], 0, updated_step, tag=tag, id=id)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- pure decisions


def test_lesson_retires_after_n_attempts_without_its_failure_kind() -> None:
    lesson = ins("lesson", "wrong_value", updated_step=1)
    before = [exp(1, i, "wrong_value") for i in range(4)]  # the evidence it was confirmed on (not after it)
    assert not lesson_contradicted(lesson, before + [exp(2, i, "no_answer") for i in range(3)], 4)
    later = before + [exp(2, i, "no_answer") for i in range(2)] + [exp(3, 0), exp(3, 1)]
    assert lesson_contradicted(lesson, later, 4)  # 4 attempts since: other failures and passes only
    assert not lesson_contradicted(lesson, later + [exp(4, 0, "wrong_value")], 4)  # it recurred: keep it
    assert not lesson_contradicted(lesson, later, 0)  # 0 = never


def test_untagged_lesson_retires_only_after_n_passes() -> None:
    lesson = ins("lesson", "", updated_step=0)
    assert not lesson_contradicted(lesson, [exp(1, 0), exp(1, 1), exp(1, 2, "format")], 3)
    assert lesson_contradicted(lesson, [exp(1, 0, "format"), exp(2, 0), exp(2, 1), exp(2, 2)], 3)


def test_strategy_retires_when_its_last_k_attempts_all_failed() -> None:
    strategy = ins("strategy", "answer_line", updated_step=1)
    failing = [exp(2, i, "wrong_value") for i in range(3)]
    assert not strategy_contradicted(strategy, failing, 4)  # too few attempts to say
    assert strategy_contradicted(strategy, failing + [exp(3, 0, "no_answer")], 4)
    assert not strategy_contradicted(strategy, failing + [exp(3, 0)], 4)  # the latest attempt passed
    assert not strategy_contradicted(strategy, [exp(1, i, "wrong_value") for i in range(8)], 4)  # before its step


def test_retirements_reads_each_insight_against_its_own_problem() -> None:
    cfg = ConsolidationConfig(lesson_stale_after_attempts=2, strategy_failed_attempts=2)
    insights = [ins("lesson", "wrong_value", uid="p1", id=1), ins("strategy", "answer_line", uid="p2", id=2),
                ins("lesson", "wrong_value", uid="p2", id=3), ins("strategy", "answer_line", uid="p1", id=4)]
    attempts = {"p1": [exp(1, 0, uid="p1"), exp(1, 1, uid="p1")],
                "p2": [exp(1, 0, "wrong_value", uid="p2"), exp(1, 1, "wrong_value", uid="p2")]}
    assert retirements(insights, attempts, cfg) == [1, 2]
    retired = Insight("p1", "arith", "lesson", "t", "test", 1, [], 0, 0, tag="wrong_value", status="retired", id=5)
    assert retirements([retired], attempts, cfg) == []


# ------------------------------------------------------------------------------------------- on a store


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.sqlite") as s:
        yield s


def test_age_retires_in_the_store_and_reconfirmation_brings_it_back(store: MemoryStore) -> None:
    cfg = ConsolidationConfig(lesson_stale_after_attempts=4, strategy_failed_attempts=4)
    store.add_experiences([exp(0, i, "wrong_value") for i in range(4)])
    lesson = store.upsert_insight("p1", "arith", "lesson", "Recheck.", "test", [], 0, tag="wrong_value")
    strategy = store.upsert_insight("p1", "arith", "strategy", "Answer line.", "test", [], 0, tag="answer_line")
    store.add_experiences([exp(1, i, "no_answer") for i in range(4)])
    assert age(store, step=1, since_step=1, config=cfg) == AgeingReport(lessons=1, strategies=1)
    assert store.insights() == []
    assert [(i.id, i.retired_step) for i in store.insights(status="retired")] == [(lesson, 1), (strategy, 1)]
    assert age(store, step=2, since_step=1, config=cfg) == AgeingReport()  # idempotent
    store.upsert_insight("p1", "arith", "lesson", "Recheck.", "test", [], 5, tag="wrong_value")
    assert [i.id for i in store.insights()] == [lesson]
    assert age(store, step=5, since_step=2, config=cfg) == AgeingReport()  # no attempts since: nothing to judge


def test_loop_ages_then_consolidates_on_schedule_and_the_pattern_follows(store: MemoryStore) -> None:
    cfg = MemoryConfig(consolidate_every=2, consolidation=ConsolidationConfig(lesson_stale_after_attempts=4,
                                                                              strategy_failed_attempts=0))
    loop = MemoryLoop(store, cfg, suite=None, count_tokens=len, reflector=None)  # type: ignore[arg-type]
    for uid in ("p1", "p2"):
        store.add_experiences([exp(0, i, "wrong_value", uid=uid) for i in range(4)])
        store.upsert_insight(uid, "arith", "lesson", f"Recheck {uid}.", "test", [], 0, tag="wrong_value")
    assert loop.maybe_consolidate(0) is None  # not its step
    assert loop.maybe_consolidate(1).promoted == 1
    (p,) = store.patterns()
    assert p.text == LESSON_PATTERNS["wrong_value"].format(family="arith")
    for uid in ("p1", "p2"):  # the policy stopped making the mistake on both problems
        store.add_experiences([exp(2, i, uid=uid) for i in range(2)] + [exp(3, i, uid=uid) for i in range(2)])
    report = loop.maybe_consolidate(3)
    assert report.retired == 1 and store.insights() == [] and store.patterns("retired")[0].id == p.id
    assert loop.metrics()["memory/insights_retired_total"] == 2.0


def test_loop_model_mode_writes_with_the_reflectors_generate(store: MemoryStore) -> None:
    seen = []

    def generate(prompts):
        seen.extend(prompts)
        return ["Pattern: Write the carry above the next column before adding."] * len(prompts)

    cfg = MemoryConfig(consolidate_every=1, reflector="policy", consolidation=ConsolidationConfig(mode="model"))
    loop = MemoryLoop(store, cfg, suite=None, count_tokens=len, reflector=ModelReflector(generate))  # type: ignore
    for uid in ("p1", "p2"):
        store.upsert_insight(uid, "arith", "lesson", f"Forgot the carry in {uid}.", "test", [], 0, tag="carry")
    assert loop.maybe_consolidate(0).promoted == 1 and len(seen) == 1
    assert [p.text for p in store.patterns()] == ["Write the carry above the next column before adding."]


def test_memory_show_lists_retired_insights_and_patterns(store: MemoryStore, capsys) -> None:
    a = store.upsert_insight("p1", "arith", "lesson", "Recheck the sum.", "test", [], 0, tag="wrong_value")
    store.upsert_insight("p2", "arith", "strategy", "Answer line.", "test", [], 0, tag="answer_line")
    store.retire_insight(a, 7)
    store.add_pattern("lesson", "An old behaviour.", [a], 2, 3, status="retired")
    assert main(["memory", "show", str(store.path)]) == 0
    out = capsys.readouterr().out
    # stored steps 7 and 3 are metrics.jsonl's steps 8 and 4
    assert "# retired insights\n[lesson x1, retired at step 8] p1: Recheck the sum." in out
    assert "# retired patterns\n[lesson, 2 problems, retired, last changed at step 4] An old behaviour." in out
    assert "# insights\n[strategy x1] p2: Answer line.\n" in out
    assert main(["memory", "show", str(store.path), "--problem", "p1"]) == 0
    assert "[lesson x1, step 1, retired at step 8] Recheck the sum." in capsys.readouterr().out
