"""Issue 25, finding 2: a rollout at or above `train.success_reward_threshold` is a sibling's demonstration in SDPO's
rule, so it is never labelled, fed back or retrieved as a failure (`pmd.rewards.is_success`, one rule everywhere);
the strict `passed` bit stays what accuracy reports. The case that showed it: chain_sum/train/0/2 (5 + 2), whose
teacher was shown "A past attempt that failed (... The last value in the reply was '7'.): 5 + 2 = 7".
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from pmd.envs.answer import answer_verdict, extract_answer
from pmd.envs.base import Problem
from pmd.memory.reflect import LESSON_TEXTS, FeedbackStatsReflector
from pmd.memory.retrieve import RetrievalConfig, retrieve
from pmd.memory.store import Experience, MemoryStore
from pmd.prompts import FAILED_ATTEMPT, LESSON_PATTERNS, PASSED_ATTEMPT, UNFORMATTED_ATTEMPT, format_attempts
from pmd.rewards import Judged, failure_feedback, is_success

PROBLEM = Problem(uid="chain_sum/train/0/2", family="chain_sum", question="5 + 2", answer="7")
BIG = RetrievalConfig(token_budget=10_000)


def verdict(reply: str, lenient_credit: float = 0.5):
    """The text environments' verdict on `reply` for 5 + 2 (reference 7)."""
    ext = extract_answer(reply)
    strict = float(ext.strict == "7") if ext.strict is not None else 0.0
    return answer_verdict(ext, strict, float(ext.lenient == "7"), "7", False, lenient_credit)


def test_the_verdicts_this_is_about():
    """An unformatted right value earns lenient credit, does not pass, and its failure kind is "format"."""
    lenient = verdict("5 + 2 = 7")
    assert (lenient.reward, lenient.passed, lenient.failure_kind) == (0.5, False, "format")
    assert "The last value in the reply was '7'" in lenient.feedback
    assert verdict("5 + 2 = 7\nAnswer: 7").passed and verdict("5 + 2 = 7\nAnswer: 7").reward == 1.0


@pytest.mark.parametrize("reward, passed, threshold, expected", [
    (0.5, False, 0.5, True),  # lenient credit at the threshold: a demonstration, so a success
    (0.49, False, 0.5, False),
    (0.5, False, 1.0, False),  # the same rollout under a stricter threshold is a failure
    (1.0, True, 1.0, True),
    (0.3, True, 0.5, True),  # the verifier passed it: never a failure, whatever the threshold
    (-1.0, False, -2.5, True),  # rewards of any scale (dataset tasks)
])
def test_is_success(reward, passed, threshold, expected):
    assert is_success(reward, passed, threshold) is expected


def test_a_success_gets_no_failure_feedback():
    judged = [Judged(PROBLEM, r, verdict(r)) for r in ("5 + 2 = 7", "5 + 2 = 8", "Answer: 7")]
    assert failure_feedback(judged, 0.5) == [None, judged[1].verdict.feedback, None]
    # above the lenient credit, the unformatted reply is a failure again, and fed back as one
    assert failure_feedback(judged, 1.0) == [judged[0].verdict.feedback, judged[1].verdict.feedback, None]


def _exp(step: int, i: int, response: str, lenient_credit: float = 0.5) -> Experience:
    v = verdict(response, lenient_credit)
    return Experience(PROBLEM.uid, PROBLEM.family, "Solve: 5 + 2", response, v.reward, v.passed, v.feedback, step, i,
                      answer=v.extracted, failure_kind=v.failure_kind)


@pytest.fixture
def store(tmp_path):
    with MemoryStore(tmp_path / "memory.db") as s:
        yield s


def test_the_sql_successes_are_is_success(store):
    """The store's queries (passing_attempts, latest_failure_with_feedback) file every row as `is_success` does."""
    grid = list(itertools.product((0.0, 0.25, 0.5, 1.0), (False, True)))
    store.add_experiences([Experience("p", "f", "q", "r", reward, passed, "fb", step, 0)
                           for step, (reward, passed) in enumerate(grid)])
    for threshold in (0.0, 0.25, 0.5, 0.75, 1.0, 2.0):
        successes = {step for step, (reward, passed) in enumerate(grid) if is_success(reward, passed, threshold)}
        got = {step for _, _, step in store.passing_attempts("p", success_threshold=threshold)}
        assert got == successes, threshold
        latest_failure = store.latest_failure_with_feedback("p", success_threshold=threshold)
        failures = set(range(len(grid))) - successes
        assert (latest_failure.step if latest_failure else None) == (max(failures) if failures else None), threshold


def test_a_right_value_without_format_is_never_retrieved_as_a_failure(store):
    """The issue's case: "5 + 2 = 7" earned 0.5 at threshold 0.5. Before, retrieval showed it as a failure with its
    feedback; now it is shown as a success with the right value and no format, and no failure line exists."""
    store.add_experiences([_exp(0, 0, "5 + 2 = 7")])
    text = retrieve(store, PROBLEM, lambda t: len(t.split()), BIG, success_threshold=0.5).text
    assert text == UNFORMATTED_ATTEMPT + "5 + 2 = 7"
    assert "failed" not in text
    # under a threshold above its reward it is a failure, and shown as one (with the verifier's words)
    text = retrieve(store, PROBLEM, lambda t: len(t.split()), BIG, success_threshold=1.0).text
    assert text.startswith(FAILED_ATTEMPT.split("{")[0]) and "The last value in the reply was '7'" in text


def test_a_strict_pass_is_shown_before_a_right_value_without_format(store):
    """A verifier's pass is the attempt shown where there is one (the lenient one is newer and, with lenient credit
    1.0, scores the same); the failure shown is a real one."""
    store.add_experiences([_exp(0, 0, "5 + 2 = 7\nAnswer: 7", 1.0), _exp(1, 0, "5 + 2 = 8", 1.0),
                           _exp(2, 0, "5 + 2 = 7", 1.0)])
    text = retrieve(store, PROBLEM, lambda t: len(t.split()), BIG, success_threshold=1.0).text
    assert text.startswith(PASSED_ATTEMPT + "5 + 2 = 7\nAnswer: 7")
    assert UNFORMATTED_ATTEMPT not in text
    assert "5 + 2 = 8" in text and text.count("failed") == 1


def test_lessons_tell_a_right_value_without_format_from_wrong_values():
    """Two unformatted right values (successes at 0.5) and two wrong values: the failures' lesson is about wrong
    values, and the right values get their own lesson, which says the value was right and never calls them failed.
    Before, the four counted as four failures and only one lesson (the commonest kind) was written."""
    exps = [_exp(0, i, r) for i, r in enumerate(("5 + 2 = 7", "It is 7", "Answer: 8", "Answer: 9"))]
    exps = [Experience(**{**e.__dict__, "id": i + 1}) for i, e in enumerate(exps)]
    result = FeedbackStatsReflector(success_threshold=0.5).reflect({PROBLEM.uid: exps})
    lessons = {d.tag: d for d in result.insights if d.kind == "lesson"}
    assert set(lessons) == {"wrong_value", "format"}
    assert set(lessons["format"].experience_ids) == {1, 2} and set(lessons["wrong_value"].experience_ids) == {3, 4}
    assert lessons["format"].text == LESSON_TEXTS["format"]
    assert "value was right" in LESSON_TEXTS["format"] and "fail" not in LESSON_TEXTS["format"]
    assert "fail" not in LESSON_PATTERNS["format"]  # nor the pattern consolidation writes from such lessons
    assert not any(d.kind == "strategy" for d in result.insights)  # strategies describe strict passes only
    # at threshold 1.0 the same four are four failures (0.5 < 1.0): one lesson, of the commonest kind (a tie, the
    # first met), and the wrong values go without one, as every run went before this fix
    strict = FeedbackStatsReflector(success_threshold=1.0).reflect({PROBLEM.uid: exps})
    assert [d.tag for d in strict.insights if d.kind == "lesson"] == ["format"]


def test_the_model_reflector_is_shown_a_right_value_without_format_as_such():
    attempts = [SimpleNamespace(passed=False, response="5 + 2 = 7", feedback="No gradable answer.",
                                failure_kind="format"),
                SimpleNamespace(passed=False, response="8", feedback="Wrong answer.", failure_kind="wrong_value"),
                SimpleNamespace(passed=True, response="Answer: 7", feedback="Correct.", failure_kind="")]
    text = format_attempts(attempts)
    assert "Attempt 1 (RIGHT VALUE, FORMAT MISSING)" in text
    assert "Attempt 2 (FAILED)" in text and "Attempt 3 (PASSED)" in text
