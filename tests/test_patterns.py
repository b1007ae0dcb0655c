"""Consolidation: behaviour-keyed patterns across problems, never one problem's content (issue 12, case 1), the leak
guard, the content-free check, model-written patterns, support updates, retirement, re-activation, max_active.

Only names that existed before issue 12 are imported at module level, so the case-1 regression below can be run
against the old consolidation (it fails there: the two answers merge into a pattern that quotes "12")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pmd.envs.base import Problem
from pmd.errors import ConfigError
from pmd.memory import patterns as pat
from pmd.memory.patterns import ConsolidationConfig, ConsolidationReport, consolidate, plan
from pmd.memory.retrieve import RetrievalConfig, retrieve
from pmd.memory.store import Experience, MemoryStore
from pmd.prompts import LESSON_PATTERNS, STRATEGY_PATTERNS, pattern_template

ANSWER_LINE = STRATEGY_PATTERNS["answer_line"]
WRONG_ARITH = LESSON_PATTERNS["wrong_value"].format(family="arith")


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.db") as s:
        yield s


def insight(store: MemoryStore, uid: str, text: str, step: int, kind: str = "lesson", family: str = "arith",
            tag: str = "wrong_value", ids: list[int] | None = None) -> int:
    return store.upsert_insight(uid, family, kind, text, "test", ids or [], step, tag=tag)  # type: ignore[arg-type]


def solved(store: MemoryStore, uid: str, question: str, answer: str, step: int = 1, family: str = "arith") -> list[int]:
    return store.add_experiences([Experience(uid, family, question, f"The answer is {answer}.", 1.0, True, "Correct.",
                                             step, 0, answer=answer)])


# ------------------------------------------------------------------------------------------- issue 12, case 1


@pytest.mark.parametrize("tag", ["", "answer_line"])
def test_case1_two_problems_answers_never_become_a_pattern(store: MemoryStore, tag: str) -> None:
    """The reproduced leak: two problems' passing answers ("…is 12.", "…is 0.") merged into one pattern, shown for
    "What is 9 - 2?". Untagged they never consolidate; tagged, the pattern states the behaviour only."""
    for uid, question, answer in (("arith-1", "What is 7 + 5?", "12"), ("arith-2", "What is 4 - 4?", "0")):
        ids = solved(store, uid, question, answer)
        store.upsert_insight(uid, "arith", "strategy", f"A short attempt that passed: The answer is {answer}.",
                             "feedback-stats", ids, 1, tag=tag)
    consolidate(store, step=1)
    for p in store.patterns(status=None):
        assert not re.search(r"\b(12|0)\b", p.text), p.text
    shown = retrieve(store, Problem("arith-3", "arith", "What is 9 - 2?"), lambda t: len(t.split()),
                     RetrievalConfig(token_budget=10_000))
    assert not re.search(r"\b(12|0)\b", shown.text), shown.text  # neither as a pattern nor as a similar insight
    lines = [line for line in shown.text.splitlines() if line.startswith("Pattern across problems")]
    if tag:  # the behaviour itself does reach the other problem's teacher
        assert lines == [f"Pattern across problems (2 problems): {ANSWER_LINE}"]
    else:
        assert store.patterns(status=None) == []


# ------------------------------------------------------------------------------------------- deterministic


def test_same_failure_kind_in_one_family_becomes_a_templated_pattern(store: MemoryStore) -> None:
    a = insight(store, "p1", "The answer 12 was given 3 times and is wrong; recheck the computation.", 1)
    insight(store, "p1", "The answer 12 was given 3 times and is wrong; recheck the computation.", 2)
    b = insight(store, "p2", "The answer 7 was given 2 times and is wrong; recheck the computation.", 2)
    insight(store, "p3", "A recurring failure to avoid: No gradable answer.", 2, tag="no_answer")  # one problem
    report = consolidate(store, step=2)
    assert report == ConsolidationReport(promoted=1)
    (p,) = store.patterns()
    assert (p.kind, p.text, p.status, p.support_problems) == ("lesson", WRONG_ARITH, "active", 2)
    assert p.insight_ids == sorted([a, b]) and (p.created_step, p.updated_step) == (2, 2)


def test_lessons_are_per_family_and_strategies_across_families(store: MemoryStore) -> None:
    insight(store, "a1", "wrong value here", 1, family="arith")
    insight(store, "c1", "wrong value there", 1, family="chain")
    insight(store, "a1", "stated the answer line", 1, kind="strategy", family="arith", tag="answer_line")
    insight(store, "c1", "stated the answer line too", 1, kind="strategy", family="chain", tag="answer_line")
    assert consolidate(store, step=1) == ConsolidationReport(promoted=1)
    (p,) = store.patterns()
    assert (p.kind, p.text, p.support_problems) == ("strategy", ANSWER_LINE, 2)


def test_untagged_and_unknown_tags_are_not_consolidated_by_templates(store: MemoryStore) -> None:
    for uid in ("p1", "p2", "p3"):
        insight(store, uid, "Check the sign of the result before answering.", 1, tag="")
        insight(store, uid, "Did something clever that has no template.", 1, kind="strategy", tag="clever_trick")
        insight(store, uid, "Something else went wrong.", 1, tag="other")
    assert consolidate(store, step=1) == ConsolidationReport()
    assert store.patterns(None) == []


def test_new_support_updates_the_pattern_without_duplicates(store: MemoryStore) -> None:
    insight(store, "p1", "x wrong", 1)
    insight(store, "p2", "y wrong", 1)
    consolidate(store, step=1)
    (first,) = store.patterns()
    assert consolidate(store, step=2) == ConsolidationReport()  # nothing new: no writes, no duplicates
    assert store.patterns() == [first]
    c = insight(store, "p3", "z wrong", 3)
    assert consolidate(store, step=3) == ConsolidationReport(updated=1)
    (p,) = store.patterns(None)
    assert p.id == first.id and p.support_problems == 3 and c in p.insight_ids and p.updated_step == 3
    assert p.text == first.text


def test_stale_pattern_is_retired_and_reactivated_when_evidence_returns(store: MemoryStore) -> None:
    cfg = ConsolidationConfig(stale_after_steps=10)
    insight(store, "p1", "x wrong", 1)
    insight(store, "p2", "y wrong", 1)
    consolidate(store, step=1, config=cfg)
    (p,) = store.patterns()
    assert consolidate(store, step=11, config=cfg) == ConsolidationReport()  # 10 steps old: still fresh
    insight(store, "p1", "x wrong", 11)  # only one problem re-confirms it
    assert consolidate(store, step=12, config=cfg) == ConsolidationReport(retired=1)
    assert store.patterns() == [] and store.patterns("retired")[0].id == p.id
    insight(store, "p3", "z wrong", 14)  # a second problem shows the mistake again
    assert consolidate(store, step=14, config=cfg) == ConsolidationReport(reactivated=1)
    (back,) = store.patterns()
    assert back.id == p.id and back.status == "active" and back.support_problems == 3
    assert len(store.patterns(None)) == 1


def test_pattern_retires_when_all_its_insights_retired_and_returns_with_them(store: MemoryStore) -> None:
    a, b = insight(store, "p1", "x wrong", 1), insight(store, "p2", "y wrong", 1)
    consolidate(store, step=1)
    (p,) = store.patterns()
    store.retire_insight(a, 2)
    assert consolidate(store, step=2) == ConsolidationReport(retired=1)  # one fresh problem left: below min
    store.retire_insight(b, 3)
    assert consolidate(store, step=3) == ConsolidationReport()
    (gone,) = store.patterns("retired")
    assert gone.id == p.id and gone.insight_ids == [b]  # its last insights are kept: the behaviour stays readable
    insight(store, "p1", "x wrong", 4)  # re-confirmed: both insights active again
    insight(store, "p2", "y wrong", 4)
    assert consolidate(store, step=4) == ConsolidationReport(reactivated=1)
    assert [q.id for q in store.patterns()] == [p.id]


def test_stale_evidence_is_not_promoted(store: MemoryStore) -> None:
    insight(store, "p1", "x wrong", 1)
    insight(store, "p2", "y wrong", 1)
    assert consolidate(store, step=30, config=ConsolidationConfig(stale_after_steps=5)) == ConsolidationReport()
    assert store.patterns(None) == []


def test_max_active_retires_lowest_support_first(store: MemoryStore) -> None:
    cfg = ConsolidationConfig(max_active=2)
    for uid in ("p1", "p2"):
        insight(store, uid, "format miss", 1, tag="format")
    for uid in ("p1", "p2", "p3"):
        insight(store, uid, "wrong", 1)
    assert consolidate(store, step=1, config=cfg).promoted == 2
    for uid in ("p4", "p5", "p6", "p7"):  # a better-supported behaviour appears
        insight(store, uid, "no answer line", 2, tag="no_answer")
    assert consolidate(store, step=2, config=cfg) == ConsolidationReport(promoted=1, retired=1)
    assert [p.text for p in store.patterns()] == [LESSON_PATTERNS[t].format(family="arith")
                                                  for t in ("no_answer", "wrong_value")]
    assert [p.text for p in store.patterns("retired")] == [LESSON_PATTERNS["format"].format(family="arith")]
    assert consolidate(store, step=2, config=cfg) == ConsolidationReport()  # stable: no churn at the cap


def test_plan_is_deterministic_and_pure(store: MemoryStore) -> None:
    for uid in ("p1", "p2", "p3"):
        insight(store, uid, f"wrong {uid}", 1)
        insight(store, uid, f"answer line {uid}", 1, kind="strategy", tag="answer_line")
    ins, pats = store.insights(status=None), store.patterns(None)
    first, rejected = plan(ins, pats, step=1)
    assert (first, rejected) == plan(list(reversed(ins)), pats, step=1)
    assert store.patterns(None) == []  # plan wrote nothing
    assert {(a.kind, a.text, a.counted_as) for a in first} == {
        ("lesson", WRONG_ARITH, "promoted"), ("strategy", ANSWER_LINE, "promoted")}


def test_a_leaky_pattern_from_before_tags_is_retired(store: MemoryStore) -> None:
    a, b = insight(store, "p1", "A short attempt that passed: 12", 1, tag=""), insight(store, "p2", "… 0", 1, tag="")
    store.add_pattern("strategy", "A short attempt that passed: The answer is 12.", [a, b], 2, step=1)
    assert consolidate(store, step=2) == ConsolidationReport(retired=1)
    assert store.patterns() == []


def test_an_existing_text_that_leaks_a_new_member_is_replaced(store: MemoryStore) -> None:
    """A pattern's text is re-checked against each problem that joins it: a (model-written) text naming a new
    member's answer gives way to the template."""
    a = insight(store, "p1", "x wrong", 1)
    b = insight(store, "p2", "y wrong", 1)
    pid = store.add_pattern("lesson", "Recompute sums of apples and pears before answering.", [a, b], 2, step=1)
    solved(store, "p3", "How many pears?", "pears")
    insight(store, "p3", "z wrong", 2)
    assert consolidate(store, step=2) == ConsolidationReport(updated=1)
    (p,) = store.patterns()
    assert (p.id, p.text, p.support_problems) == (pid, WRONG_ARITH, 3)


# ------------------------------------------------------------------------------------------- leak guard


def test_leak_guard_rejects_digits_quotes_answers_and_copies() -> None:
    src = pat.ProblemContent("p1", frozenset({"Paris", "B", "12"}),
                             ("What is the capital of France?", "I think the capital city of France is Paris."))
    assert pat.leak_reasons("A short attempt that passed: The answer is 12.", [src]) == ["digits", "answer"]
    assert pat.leak_reasons("Reply with 'the capital is Paris' and stop.", [src]) == ["quote", "answer"]
    assert pat.leak_reasons("Remember that the answer is Paris here.", [src]) == ["answer"]
    assert pat.leak_reasons("When unsure, the answer is B for such questions.", [src]) == ["answer"]
    assert pat.leak_reasons("Say: the capital city of France is well known.", [src]) == ["copy"]
    assert pat.leak_reasons("A “quoted” reply is never general.", []) == ["quote"]
    masked = "A recurring failure to avoid: No gradable answer: the reply has no final line '...' and no \\boxed{}."
    assert pat.problem_specific(masked) == []  # the reflector's masked value quotes nothing


def test_leak_guard_accepts_behaviours_placeholders_and_family_names() -> None:
    src = pat.ProblemContent("p1", frozenset({"B", "true"}), ("Is it true? Answer: B",))
    assert pat.leak_reasons(ANSWER_LINE, [src]) == []  # a quoted format with a <placeholder> is not content
    assert pat.leak_reasons("Don't stop before the answer line; a brief check is true to form.", [src]) == []
    fam = LESSON_PATTERNS["wrong_value"].format(family="gsm8k")
    assert pat.leak_reasons(fam, [src], allowed=["gsm8k"]) == []
    assert pat.leak_reasons(fam, [src]) == ["digits"]  # the family name is the only digit, and only it is allowed


@pytest.mark.parametrize("kind,tag", [("lesson", t) for t in LESSON_PATTERNS] + [("strategy", t) for t in
                                                                                STRATEGY_PATTERNS])
def test_every_template_passes_its_own_checks(kind: str, tag: str) -> None:
    text = pattern_template(kind, tag, "basic_arithmetic")
    assert text and pat.leak_reasons(text, [], ["basic_arithmetic"]) == []
    assert not pat.content_free(text, ["basic_arithmetic"])


def test_content_free_lines_are_recognised() -> None:
    assert pat.content_free("The key to solving the problem is to always find the answer to the question.")
    assert pat.content_free("Make sure to solve the problem correctly.")
    assert pat.content_free("In basic_arithmetic problems, always answer correctly.", ["basic_arithmetic"])
    assert not pat.content_free("List the divisors of the smaller number first.")


# ------------------------------------------------------------------------------------------- model-written


def cluster_of_three(store: MemoryStore, tag: str = "wrong_value") -> None:
    for uid, answer in (("p1", "12"), ("p2", "40"), ("p3", "7")):
        solved(store, uid, f"What is {answer} + 0?", answer)
        insight(store, uid, f"The answer {answer} was given 2 times and is wrong; recheck the carry.", 1, tag=tag)


class FakeModel:
    def __init__(self, *replies: str):
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def __call__(self, prompts: list[list[dict]]) -> list[str]:
        self.seen += prompts
        return [self.replies.pop(0) for _ in prompts]


def test_model_writes_a_behaviour_line_from_masked_notes(store: MemoryStore) -> None:
    cluster_of_three(store, tag="carry_error")  # no template: only a model can state it
    model = FakeModel("Pattern: Write the carry above the next column before adding it.")
    report = consolidate(store, step=1, writer=pat.ModelPatternWriter(model))
    assert report == ConsolidationReport(promoted=1)
    assert [p.text for p in store.patterns()] == ["Write the carry above the next column before adding it."]
    (prompt,) = model.seen
    text = prompt[-1]["content"]
    assert "family arith" in text and "recheck the carry" in text
    assert not re.search(r"\d", text.split("\n\n")[1])  # the notes reach the model with their numbers masked


@pytest.mark.parametrize("reply,reason", [
    ("Pattern: The answer is 12, so write 12 on the last line.", "leak"),
    ("Pattern: The key to solving the problem is to always find the answer.", "content-free"),
    ("Pattern: Write 'forty' as the answer.", "leak"),
    ("I am not sure what these notes have in common.", "no pattern line"),
])
def test_model_lines_that_leak_or_say_nothing_fall_back_to_the_template(store: MemoryStore, reply, reason) -> None:
    cluster_of_three(store)
    report = consolidate(store, step=1, writer=pat.ModelPatternWriter(FakeModel(reply)))
    assert report.promoted == 1 and report.rejected == (0 if reason == "no pattern line" else 1)
    assert [p.text for p in store.patterns()] == [WRONG_ARITH]


def test_a_rejected_model_line_without_template_promotes_nothing(store: MemoryStore) -> None:
    cluster_of_three(store, tag="carry_error")
    report = consolidate(store, step=1, writer=pat.ModelPatternWriter(FakeModel("Pattern: The answer is 40 here.")))
    assert report == ConsolidationReport(rejected=1) and store.patterns(None) == []


def test_model_duplicates_of_an_active_pattern_are_not_used(store: MemoryStore) -> None:
    cluster_of_three(store, tag="carry_error")
    consolidate(store, step=1, writer=pat.ModelPatternWriter(FakeModel("Pattern: Write the carry above the column.")))
    for uid in ("p1", "p2"):
        insight(store, uid, "Slipped on the carry again.", 2, tag="carry_slip")
    report = consolidate(store, step=2,
                         writer=pat.ModelPatternWriter(FakeModel("Pattern: Write each carry above the column.")))
    assert report == ConsolidationReport(rejected=1) and len(store.patterns(None)) == 1


def test_parse_pattern_is_strict() -> None:
    assert pat.parse_pattern("Sure!\n**Pattern:** \"List the divisors of the smaller number.\"") == \
        "List the divisors of the smaller number."
    assert pat.parse_pattern("Pattern: too short") is None
    assert pat.parse_pattern("List the divisors of the smaller number.") is None


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="similarity_threshold"):
        ConsolidationConfig(similarity_threshold=0.0)
    with pytest.raises(ConfigError, match="min_problems"):
        ConsolidationConfig(min_problems=0)
    with pytest.raises(ConfigError, match="lesson_stale_after_attempts"):
        ConsolidationConfig(lesson_stale_after_attempts=-1)
    with pytest.raises(ConfigError, match="model_notes"):
        ConsolidationConfig(model_notes=1)


def test_model_mode_needs_a_model_reflector() -> None:
    from pmd.config import load_config

    with pytest.raises(ConfigError, match="memory.reflector"):
        load_config(None, ["memory.consolidation.mode=model"])
    assert load_config(None, ["memory.consolidation.mode=model", "memory.reflector=policy"]).memory.consolidation.mode \
        == "model"
