import pytest

from pmd.memory.reflect import (
    LESSON_TEXTS,
    STRATEGY_TEXTS,
    FeedbackStatsReflector,
    ModelReflector,
    answer_form,
    behaviour_text,
    is_content_free,
    parse_reflection,
)
from pmd.memory.records import FAILURE_KINDS
from pmd.memory.store import Experience

FMT_MISS = "No gradable answer: the reply has no final line 'Answer: <answer>' and no \\boxed{}."


def exp(i, uid, passed, failure_kind="", answer=None, response="work", feedback="(feedback)", step=0):
    return Experience(problem_uid=uid, family="fam", prompt="Calculate 2 + 3.", response=response, reward=float(passed),
                      passed=passed, feedback=feedback, step=step, sample_index=i, answer=answer,
                      failure_kind=failure_kind, id=i)


def wrong(i, uid, ans, response="work\nAnswer: x"):
    return exp(i, uid, False, "wrong_value", ans, response=response)


def drafts_of(result, ids):
    return {(d.kind, d.tag, d.text) for d in result.insights if set(d.experience_ids) <= set(ids)}


# ---------------------------------------------------------------------------------------- feedback statistics


def test_lessons_and_strategies_come_from_structured_outcomes():
    attempts = {
        "p1": [exp(1, "p1", False, "no_answer"), exp(2, "p1", False, "no_answer"), wrong(3, "p1", "6"),
               exp(4, "p1", True, answer="5", response="2 + 3 = 5\nAnswer: 5")],
        "p2": [wrong(5, "p2", "9"), wrong(6, "p2", "9"), exp(7, "p2", False, "no_answer")],
    }
    result = FeedbackStatsReflector().reflect(attempts)
    assert drafts_of(result, {1, 2, 3, 4}) == {
        ("lesson", "no_answer", LESSON_TEXTS["no_answer"]),
        ("strategy", "answer_line", STRATEGY_TEXTS["answer_line"]),
    }
    assert drafts_of(result, {5, 6, 7}) == {
        ("lesson", "wrong_value", LESSON_TEXTS["wrong_value"]),
        ("lesson", "wrong_value", "The answer '9' was given repeatedly and is wrong; recheck the computation."),
    }
    for d in result.insights:  # a strategy cites only passing attempts, a lesson only failing ones
        assert set(d.experience_ids) <= ({4} if d.kind == "strategy" else {1, 2, 3, 5, 6, 7})
    assert result.acceptance_rate == 1.0


def test_an_answer_with_a_quote_is_named():
    """Regression: the answer was re-read from "Extracted answer: '...'." and one containing ' (written by repr in
    double quotes) never matched, so the repeated wrong answer was lost."""
    attempts = {"p": [wrong(1, "p", "it's 7"), wrong(2, "p", "it's 7"), wrong(3, "p", "8")]}
    texts = [d.text for d in FeedbackStatsReflector().reflect(attempts).insights]
    assert 'The answer "it\'s 7" was given repeatedly and is wrong; recheck the computation.' in texts


def test_feedback_prose_is_not_read():
    """Same outcomes, different feedback wording: the same insights."""
    a = [wrong(1, "p", "4"), wrong(2, "p", "4"), exp(3, "p", True, answer="5", response="Answer: 5")]
    b = [Experience(**{**e.__dict__, "feedback": f"Something else entirely {e.id}. 'x'."}) for e in a]
    texts = lambda es: sorted((d.kind, d.tag, d.text) for d in FeedbackStatsReflector().reflect({"p": es}).insights)
    assert texts(a) == texts(b) and texts(a)


def test_minor_failure_kinds_give_no_lesson_and_a_missing_kind_counts_as_other():
    mixed = [exp(1, "p", False, "no_answer"), wrong(2, "p", "4"), exp(3, "p", False, "format")]
    assert FeedbackStatsReflector().reflect({"p": mixed}).insights == []  # no kind recurs, no answer repeats
    unknown = [exp(i, "p", False, "", feedback="Failed check my_rule: it scored 0 of 1.\nMore.") for i in range(3)]
    (lesson,) = FeedbackStatsReflector().reflect({"p": unknown}).insights
    assert lesson.tag == "other" and lesson.text.startswith(LESSON_TEXTS["other"])
    assert lesson.text.endswith("The verifier said: 'Failed check my_rule: it scored 0 of 1.'")


@pytest.mark.parametrize("kind", [k for k in FAILURE_KINDS if k and k != "other"])
def test_each_failure_kind_gives_its_lesson_identically_across_problems(kind):
    attempts = {u: [exp(i * 10 + k, u, False, kind, answer=None) for k in range(3)] for i, u in enumerate("ab")}
    result = FeedbackStatsReflector().reflect(attempts)
    assert [(d.kind, d.tag, d.text) for d in result.insights] == [("lesson", kind, LESSON_TEXTS[kind])] * 2
    assert behaviour_text("lesson", kind) == LESSON_TEXTS[kind]


@pytest.mark.parametrize("response, form", [
    ("2 + 3 = 5\nAnswer: 5", "answer_line"), ("so \\boxed{5}", "boxed"), ("Adding them.\nThe answer is 5.",
                                                                         "final_sentence"),
    ("```python\ndef f():\n    return 5\n```", "code_block"), ("5 it is, I think", "worked_out"),
])
def test_answer_form(response, form):
    assert answer_form(response) == form


def test_strategies_name_a_behaviour_never_the_passing_answer():
    """A passing attempt's text or answer never becomes strategy text (it used to: "A short attempt that passed: ...
    The answer is 12.", which consolidation then showed for other problems)."""
    passing = [exp(1, "p", True, answer="12", response="The answer is 12."),
               exp(2, "p", True, answer="12", response="Adding: 7 + 5 = 12.\nThe answer is 12.")]
    failing = [exp(3, "p", False, "no_answer", response=" ".join(["word"] * 40)),
               exp(4, "p", False, "no_answer", response=" ".join(["word"] * 30))]
    result = FeedbackStatsReflector().reflect({"p": passing + failing})
    strategies = [(d.tag, d.text) for d in result.insights if d.kind == "strategy"]
    assert strategies == [("final_sentence", STRATEGY_TEXTS["final_sentence"]), ("short", STRATEGY_TEXTS["short"])]
    assert not any("12" in d.text for d in result.insights)
    long_passing = [exp(1, "p", True, answer="12", response=" ".join(["word"] * 40) + "\nAnswer: 12")]
    tags = [d.tag for d in FeedbackStatsReflector().reflect({"p": long_passing + failing}).insights]
    assert "short" not in tags  # not shorter than the failures


# ---------------------------------------------------------------------------------------- content-free filter

QUESTION = "Calculate 17 - 9."


@pytest.mark.parametrize("line, reason", [
    # the tautology quoted in issue 12 and its relatives
    ("The key lesson from this problem is to always find the answer to the question.", "tautology"),
    ("The strategy is to solve the problem correctly.", "tautology"),
    ("Make sure the final answer is correct.", "tautology"),
    ("Always give the right answer to the question.", "tautology"),
    # generic advice
    ("Always be careful and pay attention.", "generic"),
    ("Think step by step and avoid mistakes.", "generic"),
    ("Remember to keep trying until you learn.", "generic"),
    # restating the task
    ("Calculate 17 - 9 correctly.", "restates_task"),
    ("The lesson is to calculate 17 - 9 and give the answer.", "restates_task"),
    # values, not an operation (the last three are the 135M policy's own proposals)
    ("The answer to this is 8.", "only_values"),
    ("The answer to the equation 17 - 9 is 12.", "only_values"),
    ("1. 2. 3. 4. 5. 6. 7. 8. 9. 10. 11. 12.", "only_values"),
    ("The final answer to this arithmetic problem is 7.", "only_values"),
    ("The answer is incorrect.", "tautology"),
    # one problem's computation, and a line cut off mid-sentence (both also from the 135M policy)
    ("8 is a positive integer and 0 is positive. So, 8 * 0 = 0.", "worked_example"),
    ("8 is a positive integer and", "unfinished"),
    ("The answer to the problem is to multiply a fraction by a decimal, but since you're", "unfinished"),
])
def test_content_free_lines_are_rejected_with_their_reason(line, reason):
    assert is_content_free(line, QUESTION) == reason


@pytest.mark.parametrize("line", [
    "Subtract the ones digit first and borrow from the tens when needed.",
    "Double-check the sign of the result after subtracting.",
    "Write the result alone on a final line 'Answer: <answer>'.",
    "Count the legs of each animal and add the counts.",
    "Use the remainder, not the quotient, when the question asks what is left over.",
])
def test_lines_that_name_an_operation_check_format_or_quantity_pass(line):
    assert is_content_free(line, QUESTION) is None


def test_parse_accepts_wellformed_lines():
    text = "Strategy: add the numbers one at a time and write the sum.\n- Lesson: do not stop before the final answer line."
    accepted, reasons = parse_reflection(text, "Calculate 2 + 3.", ["2+3=6"])
    assert accepted == [("strategy", "add the numbers one at a time and write the sum."),
                        ("lesson", "do not stop before the final answer line.")]
    assert not reasons


def test_parse_rejects_empty_short_copied_duplicate_content_free_and_answer_stating():
    q = "Calculate the sum of 12 and 30 and report it."
    text = "\n".join([
        "Strategy: ok",  # too short
        f"Lesson: {q}",  # copied from the problem
        "Lesson: always double check the carry digit when adding.",
        "Lesson: Always double-check the carry digit when adding!",  # duplicate after normalisation
        "Strategy: " + "word " * 80,  # too long
        "Strategy: The key is to always find the answer to the question.",  # tautology
        "Strategy: add the tens, then the ones, to get 42.",  # states the passing answer
    ])
    accepted, reasons = parse_reflection(text, q, [], ["42"])
    assert accepted == [("lesson", "always double check the carry digit when adding.")]
    assert reasons == {"too_short": 1, "copied": 1, "duplicate": 1, "too_long": 1, "tautology": 1,
                       "states_answer": 1}
    before, old_reasons = parse_reflection(text, q, [], ["42"], check_content=False)  # the filters before issue 12
    assert len(before) == 3 and "tautology" not in old_reasons
    accepted, reasons = parse_reflection("I think the answer is 42.", q, [])
    assert accepted == [] and reasons == {"no_lines": 1}


def test_an_answer_the_question_contains_is_not_a_leak():
    accepted, _ = parse_reflection("Strategy: subtract 9 from 17 by counting down from 17.", QUESTION, [], ["17"])
    assert len(accepted) == 1


# ---------------------------------------------------------------------------------------- model reflector


def test_model_reflector_batches_filters_tags_and_reports_acceptance():
    seen = []

    def fake_generate(prompts):
        seen.append(prompts)
        return ["Strategy: carry the tens digit before adding the ones.\nLesson: the answer must be correct.",
                "Lesson: check that the final line starts with 'Answer:'.", "nothing useful here"]

    reflector = ModelReflector(fake_generate)
    attempts = {"p1": [exp(1, "p1", True, answer="5", response="Answer: 5")],
                "p2": [exp(2, "p2", False, "format"), exp(3, "p2", False, "format"), wrong(4, "p2", "1")],
                "p3": [exp(5, "p3", False, "no_answer")]}
    result = reflector.reflect(attempts, {"p1": "Calculate 2 + 3.", "p2": "Calculate 4 + 4.", "p3": "Calculate 1."})
    assert len(seen) == 1 and len(seen[0]) == 3  # one batched call
    assert "Attempt 1 (PASSED)" in seen[0][0][-1]["content"]
    assert [(d.kind, d.tag, d.experience_ids) for d in result.insights] == [
        ("strategy", "", (1,)), ("lesson", "format", (2, 3, 4))]
    assert result.rejected_reasons == {"tautology": 1, "no_lines": 1}
    assert result.proposed == 4 and result.accepted == 2 and result.acceptance_rate == 0.5


# ---------------------------------------------------------------------------------------- memory loop


def test_memory_stores_structured_outcomes_and_tagged_insights(tmp_path):
    """The loop records each verdict's extracted answer and failure kind, and writes insights with their tag."""
    from types import SimpleNamespace

    from pmd.config import MemoryConfig
    from pmd.envs import Problem, Verdict
    from pmd.memory.loop import MemoryLoop, failure_kind_of
    from pmd.memory.records import RetrievalRecord
    from pmd.memory.store import MemoryStore
    from pmd.rewards import Judged

    problem = Problem(uid="fam/train/0/0", family="fam", question="What is 2 + 3?", answer="5")
    suite = SimpleNamespace(problem=lambda uid: problem, format_prompt=lambda p: p.question)
    seen = SimpleNamespace(to_record=lambda step, uid, i: RetrievalRecord(step, uid, i, ""))
    verdicts = [Verdict(0.0, False, "Wrong.", extracted="it's 4", failure_kind="wrong_value"),
                Verdict(0.0, False, "Wrong.", extracted="it's 4", failure_kind="wrong_value"),
                Verdict(1.0, True, "Correct.", extracted="5"),
                Verdict(0.0, False, "Odd.")]  # an environment that names no kind
    with MemoryStore(tmp_path / "memory.db") as store:
        loop = MemoryLoop(store, MemoryConfig(reflect_every=1), suite, len, FeedbackStatsReflector())
        responses = ["Answer: it's 4", "Answer: it's 4", "Answer: 5", "hmm"]
        loop.record(0, [Judged(problem, r, v) for r, v in zip(responses, verdicts)], [seen] * 4)
        stored = [(e.answer, e.failure_kind) for e in store.experiences(problem_uid=problem.uid)]
        assert stored == [("it's 4", "wrong_value"), ("it's 4", "wrong_value"), ("5", ""), (None, "other")]
        loop.maybe_reflect(0)
        tags = {(i.kind, i.tag, i.text) for i in store.insights(problem.uid)}
    assert tags == {("lesson", "wrong_value", LESSON_TEXTS["wrong_value"]),
                    ("lesson", "wrong_value", 'The answer "it\'s 4" was given repeatedly and is wrong; recheck the '
                                              "computation."),
                    ("strategy", "answer_line", STRATEGY_TEXTS["answer_line"])}
    assert failure_kind_of(Verdict(1.0, True, "ok", failure_kind="")) == ""
    with MemoryStore(tmp_path / "memory2.db") as store:  # a model reflector: rejections are counted by reason
        tautology = ModelReflector(lambda prompts: ["Strategy: always find the answer to the question."] * len(prompts))
        loop = MemoryLoop(store, MemoryConfig(reflect_every=1), suite, len, tautology)
        loop.record(0, [Judged(problem, r, v) for r, v in zip(responses, verdicts)], [seen] * 4)
        loop.maybe_reflect(0)
        metrics = loop.metrics()
    assert metrics["memory/reflection_rejected_tautology_total"] == 1.0
    assert metrics["memory/reflection_acceptance_rate"] == 0.0
