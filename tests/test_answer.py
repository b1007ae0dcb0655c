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
