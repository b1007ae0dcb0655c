"""Built-in verifiers of dataset tasks (pmd.envs.verifiers) and the shared verdict builder (answer.answer_verdict)."""

import sys
import threading

import pytest

from pmd.envs.answer import NO_ANSWER, WRONG_ANSWER, Extraction, answer_verdict, extract_answer
from pmd.envs.reasoning_gym import ReasoningGymEnvironment
from pmd.envs.verifiers import (
    VERIFIERS, Verifier, exact_score, make_verifier, math_timeout, mcq_score, normalise_answer, numeric_score,
    parse_number, read_choice, regex_score,
)
from pmd.errors import ConfigError

PATH = "env.tasks[0].params.rewards[1]"


# ------------------------------------------------------------------------------------------- answer_verdict


def test_verdict_correct_wrong_and_unformatted_feedback():
    formatted = Extraction(strict="42", lenient="42", how="answer_line")
    right = answer_verdict(formatted, 1.0, 1.0, "42", reveal=True, lenient_credit=0.0)
    assert right.passed and right.reward == 1.0 and right.format_ok and right.extracted == "42"
    assert right.feedback == ("Correct. Extracted answer: '42'. "
                              "Format: followed (found the final answer via answer line).")  # nothing revealed

    wrong = answer_verdict(formatted, 0.0, 0.0, "41", reveal=True, lenient_credit=0.0)
    assert not wrong.passed and wrong.reward == 0.0
    assert wrong.feedback == (f"{WRONG_ANSWER} Extracted answer: '42'. "
                              "Format: followed (found the final answer via answer line). The correct answer is 41.")

    loose = Extraction(strict=None, lenient="41", how="last_number")
    unformatted = answer_verdict(loose, 0.0, 1.0, "41", reveal=False, lenient_credit=0.25)
    assert unformatted.reward == 0.25 and not unformatted.passed and not unformatted.format_ok
    assert unformatted.extracted is None and unformatted.details["lenient_correct"] is True
    assert unformatted.feedback == f"{NO_ANSWER} The last value in the reply was '41'."


def test_verdict_partial_strict_score_is_reward_but_not_a_pass():
    v = answer_verdict(Extraction("x", "x", "boxed"), 0.5, 0.5, None, reveal=True, lenient_credit=0.0)
    assert v.reward == 0.5 and not v.passed and v.feedback.startswith(WRONG_ANSWER)
    assert "The correct answer" not in v.feedback  # no reference to reveal


def test_verdict_fault_scores_zero_and_reveals_nothing():
    fault = "Not graded: this row's reference answer is empty."
    v = answer_verdict(Extraction("7", "7", "answer_line"), 1.0, 1.0, "", reveal=True, lenient_credit=1.0,
                       fault=fault)
    assert (v.reward, v.passed, v.details["lenient_correct"], v.details["fault"]) == (0.0, False, False, fault)
    assert v.feedback.startswith(fault + " Extracted answer: '7'.") and "correct answer" not in v.feedback
    unformatted = answer_verdict(Extraction(None, "7", "last_number"), 0.0, 1.0, "", False, 1.0, fault=fault)
    assert unformatted.reward == 0.0 and unformatted.feedback.startswith(fault)


def test_reasoning_gym_feedback_is_unchanged_by_the_refactor():
    """Exact strings the reasoning-gym environment gave before answer_verdict existed (the reflector parses them)."""
    env = ReasoningGymEnvironment("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                       "max_digits": 1, "lenient_credit": 0.5},
                                  train_size=3, eval_size=1, reveal_answer_in_feedback=True)
    p = env.problems("train")[0]
    right = env.verify(p, f"Answer: {p.answer}")
    assert right.feedback == (f"Correct. Extracted answer: '{p.answer}'. "
                              "Format: followed (found the final answer via answer line).")
    wrong = env.verify(p, "\\boxed{99999}")
    assert wrong.feedback == ("Wrong answer: the extracted answer is incorrect. Extracted answer: '99999'. "
                              "Format: followed (found the final answer via boxed). "
                              f"The correct answer is {p.answer}.")
    loose = env.verify(p, f"it is {p.answer}")
    assert loose.feedback == ("No gradable answer: the reply has no final line 'Answer: <answer>' and no \\boxed{}. "
                              f"The last value in the reply was '{p.answer}'. The correct answer is {p.answer}.")
    assert (loose.reward, loose.passed, loose.details) == (
        0.5, False, {"how": "last_number", "lenient": p.answer, "lenient_correct": True})


# ---------------------------------------------------------------------------------------------- exact


@pytest.mark.parametrize("candidate, reference, case_sensitive, score", [
    ("Paris", "paris", False, 1.0),
    ("  New   York ", "new york", False, 1.0),
    ('"Paris".', "Paris", False, 1.0),
    ("\u201cParis\u201d", "Paris", False, 1.0),            # curly quotes
    ("$x+1$", "x+1", False, 1.0),
    ("\uff30\uff41\uff52\uff49\uff53", "Paris", False, 1.0),  # full-width letters (NFKC)
    ("STRASSE", "straße", False, 1.0),                      # casefold, not lower
    ("Paris", "paris", True, 0.0),
    ("Paris", "Paris", True, 1.0),
    ("Paris, France", "Paris", False, 0.0),
    ("Pari", "Paris", False, 0.0),
    ("dogs'", "dogs", False, 0.0),                           # a lone apostrophe is not a quote pair
    ("", "", False, 0.0),                                    # empty never matches
    ('""', "", False, 0.0),
])
def test_exact(candidate, reference, case_sensitive, score):
    assert exact_score(candidate, reference, case_sensitive) == score


def test_normalise_strips_repeatedly():
    assert normalise_answer(' "$Paris$". ') == "paris"


# -------------------------------------------------------------------------------------------- numeric


@pytest.mark.parametrize("text, value, as_fraction", [
    ("42", 42, None), ("-7", -7, None), ("+7", 7, None), ("\u22125", -5, None), ("3.25", 3.25, None),
    (".5", 0.5, None), ("1,234", 1234, None), ("1,234,567.5", 1234567.5, None), ("$1,000.", 1000, None),
    ("3/4", 0.75, None), ("-3 / 4", -0.75, None), ("\\frac{3}{4}", 0.75, None), ("\\dfrac{-1}{2}", -0.5, None),
    ("2.5e-3", 0.0025, None), ("1E6", 1e6, None), ("2.5 \\times 10^{-3}", 0.0025, None), ("3 x 10^2", 300, None),
    ("50%", 50, 0.5), ("12.5\\%", 12.5, 0.125),
])
def test_parse_number(text, value, as_fraction):
    assert float(parse_number(text)) == pytest.approx(value, rel=1e-12)
    if as_fraction is not None:
        assert float(parse_number(text, percent_as_fraction=True)) == pytest.approx(as_fraction, rel=1e-12)


@pytest.mark.parametrize("text", ["", "abc", "seven", "1,23", "0,5", "12 apples", "1/0", "1e99999", "3/4e2", ".",
                                  "1.2.3", "nan", "inf", "--5", "5-"])
def test_parse_number_rejects(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("candidate, reference, kwargs, score", [
    ("1,234", "1234", {}, 1.0),
    ("0.75", "3/4", {}, 1.0),
    ("1e3", "1000.0", {}, 1.0),
    ("0.3333333", "1/3", {}, 1.0),                         # within rel_tol 1e-6
    ("0.333", "1/3", {}, 0.0),
    ("0.333", "1/3", {"rel_tol": 1e-2}, 1.0),
    ("1e-12", "0", {}, 1.0),                              # abs_tol 1e-9 near zero
    ("1e-6", "0", {}, 0.0),
    ("1e-6", "0", {"abs_tol": 1e-5}, 1.0),
    ("50%", "50", {}, 1.0),
    ("50%", "0.5", {"percent_as_fraction": True}, 1.0),
    ("50%", "0.5", {}, 0.0),
    ("-2", "2", {}, 0.0),
    ("two", "2", {}, 0.0),
    ("1" + "0" * 400, "1e400", {}, 1.0),                 # beyond float range: exact arithmetic
])
def test_numeric(candidate, reference, kwargs, score):
    assert numeric_score(candidate, reference, **kwargs) == score


# ------------------------------------------------------------------------------------------------ mcq


@pytest.mark.parametrize("candidate, letter", [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("B)", "B"), ("b.", "B"), ("[C]", "C"), ("**D**", "D"), ('"A"', "A"),
    ("Option B", "B"), ("option (c)", "C"), ("The correct option is (C)", "C"), ("The answer is B", "B"),
    ("B. Paris", "B"), ("(B) Paris", "B"), ("B. A protein", "B"), ("c) a protein", "C"),
    ("I think B", "B"), ("I'm sure it is D", "D"),
    # two different letters: none
    ("A or B", None), ("A, B", None), ("B and C", None), ("(A) and (C)", None), ("A) 5 B) 6", None),
    ("Option A or option C", None), ("option a or option c", None), ("A, option C", None),
    ("Both A and C are wrong; the answer is D", None),
    # no letter of the choices
    ("E", None), ("Paris", None), ("AB", None), ("ab", None), ("", None), ("the choices are many", None),
])
def test_read_choice(candidate, letter):
    assert read_choice(candidate, "ABCD") == letter


@pytest.mark.parametrize("candidate, reference, choices, score", [
    ("(b)", "B", "ABCD", 1.0),
    ("B", "(B) Paris", "ABCD", 1.0),
    ("C", "B", "ABCD", 0.0),
    ("A or B", "B", "ABCD", 0.0),
    ("E", "E", "ABCD", 0.0),      # not an option here
    ("E", "e", "abcde", 1.0),     # choices are case-insensitive
])
def test_mcq(candidate, reference, choices, score):
    assert mcq_score(candidate, reference, choices) == score


# ---------------------------------------------------------------------------------------------- regex


@pytest.mark.parametrize("candidate, pattern, ignore_case, score", [
    ("12345", r"\d+", False, 1.0),
    ("12345 apples", r"\d+", False, 0.0),     # fullmatch, not search
    ("  42 ", r"\d+", False, 1.0),             # surrounding whitespace is not part of the answer
    ("Cat", r"cat|dog", False, 0.0),
    ("Cat", r"cat|dog", True, 1.0),
    ("dog", r"cat|dog", False, 1.0),           # fullmatch covers the whole alternation
])
def test_regex(candidate, pattern, ignore_case, score):
    assert regex_score(candidate, pattern, ignore_case) == score


# ------------------------------------------------------------------------------------------- verifiers


@pytest.mark.parametrize("name, params, reference, right, wrong, headline", [
    ("exact", {}, "Paris", "Answer: paris", "Answer: Lyon", WRONG_ANSWER),
    ("numeric", {}, "1234", "Answer: 1,234", "Answer: 1235", WRONG_ANSWER),
    ("numeric", {}, "1234", "Answer: 1,234", "Answer: many", "Wrong answer: the extracted answer is not a number."),
    ("mcq", {}, "C", "Answer: (C)", "Answer: B", "Wrong answer: the extracted choice is incorrect."),
    ("mcq", {}, "C", "Answer: (C)", "Answer: B or C",
     "Wrong answer: the extracted answer does not name exactly one of the choices A, B, C, D."),
    ("regex", {}, r"\d{3}", "Answer: 123", "Answer: 12",
     "Wrong answer: the extracted answer does not match the expected pattern."),
    ("regex", {"pattern": "[a-z]+", "ignore_case": True}, "ignored", "Answer: Hello", "Answer: hello world",
     "Wrong answer: the extracted answer does not match the expected pattern."),
])
def test_verifier_verdicts(name, params, reference, right, wrong, headline):
    verifier = make_verifier(name, params, PATH)
    assert isinstance(verifier, Verifier) and verifier.name == name
    ok = verifier(f"Some work.\n{right}", reference)
    assert (ok.reward, ok.passed, ok.format_ok, ok.details["lenient_correct"]) == (1.0, True, True, True)
    assert ok.feedback.startswith("Correct. Extracted answer: ")
    bad = verifier(wrong, reference)
    assert (bad.reward, bad.passed, bad.format_ok) == (0.0, False, True)
    assert bad.feedback.startswith(f"{headline} Extracted answer: ")
    # the memory stores the structured outcome: the answer as extracted, and why it failed
    assert (bad.extracted, bad.failure_kind) == (extract_answer(wrong).strict, "wrong_value")
    assert ok.failure_kind == ""


def test_unformatted_reply_earns_only_lenient_credit():
    strict = make_verifier("numeric", {}, PATH)
    lenient = make_verifier("numeric", {"lenient_credit": 0.5}, PATH)
    reply = "I computed 7 * 6 = 42"
    for verifier, reward in ((strict, 0.0), (lenient, 0.5)):
        v = verifier(reply, "42")
        assert (v.reward, v.passed, v.format_ok, v.details["lenient_correct"]) == (reward, False, False, True)
        assert v.feedback.startswith("No gradable answer:") and v.extracted is None


def test_reveal_names_the_reference_only_after_a_miss():
    mcq = make_verifier("mcq", {"reveal_answer_in_feedback": True}, PATH)
    assert mcq("Answer: A", "(C) Paris").feedback.endswith("The correct answer is C.")
    assert "correct answer" not in mcq("Answer: C", "(C) Paris").feedback
    assert "correct answer" not in make_verifier("mcq", {}, PATH)("Answer: A", "C").feedback
    regex = make_verifier("regex", {"reveal_answer_in_feedback": True}, PATH)
    assert regex("Answer: x", r"\d+").feedback.endswith(r"The correct answer is any text matching /\d+/.")


@pytest.mark.parametrize("name, params, reference, fault", [
    ("exact", {}, "  ", "Not graded: this row's reference answer is empty."),
    ("exact", {}, '""', "Not graded: this row's reference answer is empty."),
    ("numeric", {}, "about five", "Not graded: this row's reference answer 'about five' is not a number."),
    ("mcq", {}, "Z", "Not graded: this row's reference answer 'Z' is not one of the choices A, B, C, D."),
    ("regex", {}, "([0-9]", "Not graded: this row's reference answer is not a valid regular expression ("),
    ("regex", {}, "", "Not graded: this row's reference answer is empty."),
])
def test_ungradable_row_scores_zero_with_a_clear_headline(name, params, reference, fault):
    verifier = make_verifier(name, params, PATH)
    v = verifier("Answer: 5", reference)
    assert v.reward == 0.0 and not v.passed and v.feedback.startswith(fault)
    assert verifier.check_reference(reference).startswith(fault)
    assert verifier.check_reference("5" if name != "mcq" else "B") is None


def test_row_patterns_are_not_needed_with_a_pattern_param():
    verifier = make_verifier("regex", {"pattern": r"\d+"}, PATH)
    assert verifier.check_reference("") is None and verifier("Answer: 12", "").passed


@pytest.mark.parametrize("name", ["exact", "numeric", "mcq", "regex"])
@pytest.mark.parametrize("response", [None, "", "\x00\xff", "Answer: " + "9" * 5000, "Answer: 1e99999999",
                                      "Answer: ((((((((a", "\\boxed{" * 50, "Answer: \u2212", 12345])
def test_verifiers_never_raise_on_model_text(name, response):
    v = make_verifier(name, {}, PATH)(response, "5")
    assert 0.0 <= v.reward <= 1.0 and isinstance(v.feedback, str) and v.feedback


def test_failure_kinds_recur_across_rows():
    """Wrong answers to different rows fail the same way (the reflector's lesson key); a missing answer differs."""
    verifier = make_verifier("numeric", {}, PATH)
    a, b = verifier("Answer: 12", "13"), verifier("Answer: 7.5", "8")
    assert a.failure_kind == b.failure_kind == verifier("Answer: many", "8").failure_kind == "wrong_value"
    assert verifier("I think it is 8", "8").failure_kind == "format"
    assert verifier("no idea", "8").failure_kind == "no_answer"
    assert verifier("Answer: 5", "about five").failure_kind == "other"  # an ungradable row is not the reply's fault


# ---------------------------------------------------------------------------------------- configuration


def test_registry_names_params_dataclasses():
    assert sorted(VERIFIERS) == ["exact", "math", "mcq", "numeric", "regex"]
    for cls in VERIFIERS.values():
        assert cls().lenient_credit == 0.0 and cls().reveal_answer_in_feedback is False


@pytest.mark.parametrize("name, hint", [("exakt", "did you mean 'exact'?"), ("numerc", "did you mean 'numeric'?"),
                                        ("Exact", "did you mean 'exact'?"), ("fuzzy", "known: exact, math, mcq")])
def test_unknown_verifier_names_the_nearest(name, hint):
    with pytest.raises(ConfigError) as exc:
        make_verifier(name, {}, PATH)
    assert str(exc.value).startswith(f"{PATH}: unknown verifier {name!r}") and hint in str(exc.value)


@pytest.mark.parametrize("name, params, message", [
    ("numeric", {"reltol": 1e-3}, f"unknown config key {PATH}.reltol (did you mean {PATH}.rel_tol?)"),
    ("numeric", {"rel_tol": -1}, f"{PATH}.rel_tol: expected a number >= 0"),
    ("numeric", {"abs_tol": "tiny"}, f"{PATH}.abs_tol: expected a number"),
    ("exact", {"case_sensitive": "yes"}, f"{PATH}.case_sensitive: expected true/false"),
    ("exact", {"lenient_credit": 1.5}, f"{PATH}.lenient_credit: expected a value in [0, 1]"),
    ("mcq", {"choices": "AAB"}, f"{PATH}.choices: expected distinct letters"),
    ("mcq", {"choices": "A1"}, f"{PATH}.choices: expected distinct letters"),
    ("mcq", {"choices": ""}, f"{PATH}.choices: expected distinct letters"),
    ("regex", {"pattern": "([a-z"}, f"{PATH}.pattern: not a valid regular expression"),
    ("regex", "x+", f"{PATH}: expected a mapping"),
])
def test_bad_params_name_the_dotted_key(name, params, message):
    with pytest.raises(ConfigError) as exc:
        make_verifier(name, params, PATH)
    assert str(exc.value).startswith(message)


def test_mcq_choices_are_stored_upper_case():
    verifier = make_verifier("mcq", {"choices": "abcde"}, PATH)
    assert verifier.params.choices == "ABCDE" and verifier("Answer: e", "E").passed


# ----------------------------------------------------------------------------------------------- math


def test_math_without_the_package_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` raise ImportError
    with pytest.raises(ConfigError) as exc:
        make_verifier("math", {}, PATH)
    assert str(exc.value) == (f"{PATH}: the math verifier needs the math-verify package: "
                              "pip install 'procedural-memory-distillation[math]'")


def test_math_install_hint_names_the_pinned_extra():
    """The hint must name an extra pyproject.toml defines, pinned exactly (as every other install hint)."""
    import re
    import tomllib
    from pathlib import Path

    from pmd.envs.verifiers import MATH_INSTALL

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (extra,) = re.findall(r"distillation\[(\w+)\]", MATH_INSTALL)
    assert extras[extra] == ["math-verify[antlr4_13_2]==0.9.0"]


def test_math_timeout_only_on_the_main_thread():
    assert math_timeout(5, on_main_thread=True) == 5
    assert math_timeout(5, on_main_thread=False) is None
    assert math_timeout(0, on_main_thread=True) is None


@pytest.mark.parametrize("candidate, reference, passed", [
    ("\\frac{1}{2}", "0.5", True),
    ("1/2", "\\frac{1}{2}", True),
    ("(x+1)^2", "x^2+2x+1", True),
    ("\\sqrt{2}", "sqrt(2)", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("(1,2]", "(1,2]", True),
    ("x = 5", "5", True),
    ("2", "3", False),
    ("1/3", "0.333", False),
    ("\\pi", "3.14159", False),
    ("(1,2)", "(1,2]", False),
])
def test_math_equivalence(candidate, reference, passed):
    pytest.importorskip("math_verify")
    verifier = make_verifier("math", {}, PATH)
    v = verifier(f"Answer: {candidate}", reference)
    assert v.passed is passed and v.reward == float(passed)


def test_math_verdicts_and_threads():
    pytest.importorskip("math_verify")
    verifier = make_verifier("math", {"reveal_answer_in_feedback": True}, PATH)
    assert verifier("Answer: 3", "\\frac{1}{2}").feedback.startswith(WRONG_ANSWER + " Extracted answer: '3'.")
    assert verifier("Answer: 3", "   ").feedback.startswith("Not graded: this row's reference answer is empty.")
    assert verifier("I get 1/2", "0.5").details["lenient_correct"] is True
    for garbage in (None, "\\boxed{" * 30, "Answer: }{$$\\frac", "Answer: " + "9" * 5000):
        assert verifier(garbage, "1/2").reward == 0.0
    results = []  # off the main thread math-verify's SIGALRM limit cannot be set: no limit, and no error
    worker = threading.Thread(target=lambda: results.append(verifier("Answer: 2/4", "1/2").passed))
    worker.start()
    worker.join()
    assert results == [True]


@pytest.mark.parametrize("text", ["1/" + "7" * 5000, "1e" + "7" * 5000, "1e-" + "7" * 5000, "7" * 5000 + "/3",
                                  "2 \\times 10^{" + "9" * 5000 + "}"])
def test_parse_number_reads_thousands_of_digits_as_not_a_number(text):
    """Was: ValueError (int_max_str_digits) out of the numeric verifier's reference check, at load."""
    assert parse_number(text) is None
    assert make_verifier("numeric", {}, "x").check_reference(text).startswith("Not graded")
