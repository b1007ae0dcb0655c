import pytest

from pmd.envs.answer import extract_answer


@pytest.mark.parametrize(
    "text, strict, how",
    [
        ("5 - 3 = 2\nAnswer: 2", "2", "answer_line"),
        ("Some work\n**Answer:** 42.", "42", "answer_line"),
        ("answer: -7\nthen more\nAnswer: 8", "8", "answer_line"),
        ("Final answer: \\boxed{3/4}", "3/4", "answer_line"),
        ("so the result is \\boxed{1{0}}", "1{0}", "boxed"),
        ("Answer: $12$", "12", "answer_line"),
    ],
)
def test_strict_extraction(text, strict, how):
    ext = extract_answer(text)
    assert ext.strict == strict and ext.how == how


@pytest.mark.parametrize(
    "text, lenient, how",
    [("so 5 - 3 is 2, I think", "2", "last_number"), ("the word is cat", "the word is cat", "last_line"), ("", None, "none")],
)
def test_lenient_fallback_is_not_strict(text, lenient, how):
    ext = extract_answer(text)
    assert ext.strict is None and ext.lenient == lenient and ext.how == how


def test_answer_word_inside_sentence_is_not_an_answer_line():
    assert extract_answer("The answer is 5 because: reasons\nand more words").strict is None


@pytest.mark.parametrize(
    "text, strict",
    [("5 * 7 = 35\n\nThe final answer is 35.", "35"), ("So the answer is -2", "-2"), ("The answer is: 7.", "7"),
     ("The final answer to the given arithmetic problem is 10.", "10"), ("The result is 4", "4")],
)
def test_final_sentence_on_last_line_is_strict(text, strict):
    ext = extract_answer(text)
    assert ext.strict == strict and ext.how == "final_sentence"


def test_final_sentence_not_on_last_line_is_only_lenient():
    ext = extract_answer("The answer is 35.\nBut wait, maybe 36")
    assert ext.strict is None and ext.lenient == "36"


@pytest.mark.parametrize("passed, strict, lenient_correct, fault, kind", [
    (True, "5", True, False, ""),
    (False, "6", False, False, "wrong_value"),
    (False, "6", True, False, "wrong_value"),  # a strict answer decides: the lenient reading is not the answer
    (False, None, True, False, "format"),
    (False, None, False, False, "no_answer"),
    (False, "5", False, True, "other"),  # the row cannot be graded: not the reply's fault
])
def test_answer_failure_kind(passed, strict, lenient_correct, fault, kind):
    from pmd.envs.answer import answer_failure_kind
    from pmd.memory.records import FAILURE_KINDS

    assert answer_failure_kind(passed, strict, lenient_correct, fault) == kind and kind in FAILURE_KINDS


def test_answer_verdict_carries_the_structured_outcome():
    from pmd.envs.answer import answer_verdict

    wrong = answer_verdict(extract_answer("Answer: it's 6"), 0.0, 0.0, "5", False, 0.0)
    assert (wrong.failure_kind, wrong.extracted) == ("wrong_value", "it's 6")
    loose = answer_verdict(extract_answer("so it is 5"), 0.0, 1.0, "5", False, 0.5)
    assert (loose.failure_kind, loose.extracted, loose.reward) == ("format", None, 0.5)
    right = answer_verdict(extract_answer("Answer: 5"), 1.0, 1.0, "5", False, 0.0)
    assert (right.failure_kind, right.passed) == ("", True)
    broken = answer_verdict(extract_answer("Answer: 5"), 1.0, 1.0, None, False, 0.0, fault="Not graded: bad row.")
    assert (broken.failure_kind, broken.passed) == ("other", False)
