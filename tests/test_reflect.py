from pmd.memory.reflect import FeedbackStatsReflector, ModelReflector, parse_reflection
from pmd.memory.store import Experience

FMT_MISS = "No gradable answer: the reply has no final line 'Answer: <answer>' and no \\boxed{}. The last value in the reply was '4'."


def exp(i, uid, passed, feedback, response="work", step=0):
    return Experience(problem_uid=uid, family="fam", prompt="Calculate 2 + 3.", response=response, reward=float(passed),
                      passed=passed, feedback=feedback, step=step, sample_index=i, id=i)


def wrong(ans):
    return (f"Wrong answer: the extracted answer is incorrect. Extracted answer: '{ans}'. "
            "Format: followed (found the final answer via answer line).")


def test_feedback_stats_lessons_and_strategies():
    attempts = {
        "p1": [exp(1, "p1", False, FMT_MISS), exp(2, "p1", False, FMT_MISS), exp(3, "p1", False, wrong("6")),
               exp(4, "p1", True, "Correct. Extracted answer: '5'. Format: followed (found the final answer via answer line).",
                   response="2 + 3 = 5\nAnswer: 5")],
        "p2": [exp(5, "p2", False, wrong("9")), exp(6, "p2", False, wrong("9")), exp(7, "p2", False, FMT_MISS)],
    }
    result = FeedbackStatsReflector().reflect(attempts)
    texts = {(d.kind, d.text) for d in result.insights}
    kinds_p1 = [d for d in result.insights if set(d.experience_ids) <= {1, 2, 3, 4}]
    assert any(d.kind == "lesson" and d.text.startswith("A recurring failure to avoid: No gradable answer")
               for d in kinds_p1)
    assert any(d.kind == "strategy" and d.text == "A short attempt that passed: 2 + 3 = 5 Answer: 5" for d in kinds_p1)
    assert ("lesson", "The answer 9 was given 2 times and is wrong; recheck the computation.") in texts
    # a strategy cites only passing attempts
    for d in result.insights:
        if d.kind == "strategy":
            assert set(d.experience_ids) <= {4}
    assert result.acceptance_rate == 1.0


def test_failure_signature_masks_values():
    from pmd.memory.reflect import failure_signature

    a = failure_signature("Test 3 failed: input '1 2', expected '3', got '4'. More details here.")
    b = failure_signature("Test 7 failed: input '9', expected '10', got '2'. Other details.")
    assert a == b == "Test N failed: input '...', expected '...', got '...'."


def test_code_style_feedback_gives_lessons_without_answer_lines():
    fb = "Test 2 failed: input '[1]', expected '1', got '0'."
    attempts = {"p": [exp(i, "p", False, fb) for i in range(3)]}
    result = FeedbackStatsReflector().reflect(attempts)
    assert [d.text for d in result.insights] == [
        "A recurring failure to avoid: Test N failed: input '...', expected '...', got '...'."]


def test_same_behaviour_on_two_problems_gives_identical_text():
    attempts = {u: [exp(i * 10 + k, u, False, FMT_MISS) for k in range(3)] for i, u in enumerate(["a", "b"])}
    result = FeedbackStatsReflector().reflect(attempts)
    lessons = [d.text for d in result.insights if d.kind == "lesson"]
    assert len(lessons) == 2 and lessons[0] == lessons[1]


def test_parse_accepts_wellformed_lines():
    text = "Strategy: add the numbers one at a time and write the sum.\n- Lesson: do not stop before the final answer line."
    accepted, reasons = parse_reflection(text, "Calculate 2 + 3.", ["2+3=6"])
    assert accepted == [("strategy", "add the numbers one at a time and write the sum."),
                        ("lesson", "do not stop before the final answer line.")]
    assert not reasons


def test_parse_rejects_empty_short_copied_and_duplicate():
    q = "Calculate the sum of 12 and 30 and report it."
    text = "\n".join([
        "Strategy: ok",  # too short
        f"Lesson: {q}",  # copied from the problem
        "Lesson: always double check the carry digit when adding.",
        "Lesson: Always double-check the carry digit when adding!",  # duplicate after normalisation
        "Strategy: " + "word " * 80,  # too long
    ])
    accepted, reasons = parse_reflection(text, q, [])
    assert accepted == [("lesson", "always double check the carry digit when adding.")]
    assert reasons == {"too_short": 1, "copied": 1, "duplicate": 1, "too_long": 1}
    accepted, reasons = parse_reflection("I think the answer is 42.", q, [])
    assert accepted == [] and reasons == {"no_lines": 1}


def test_model_reflector_batches_and_reports_acceptance():
    seen = []

    def fake_generate(prompts):
        seen.append(prompts)
        return ["Strategy: carry the tens digit before adding the ones.", "nothing useful here"]

    reflector = ModelReflector(fake_generate)
    attempts = {"p1": [exp(1, "p1", True, "ok", response="Answer: 5")], "p2": [exp(2, "p2", False, FMT_MISS)]}
    result = reflector.reflect(attempts, {"p1": "Calculate 2 + 3.", "p2": "Calculate 4 + 4."})
    assert len(seen) == 1 and len(seen[0]) == 2  # one batched call
    assert "Attempt 1 (PASSED)" in seen[0][0][-1]["content"]
    assert [(d.kind, d.experience_ids) for d in result.insights] == [("strategy", (1,))]
    assert result.proposed == 2 and result.accepted == 1 and result.acceptance_rate == 0.5
