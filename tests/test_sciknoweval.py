"""SciKnowEvalEnvironment on small hand-written rows in the released schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pmd.envs.base import Environment
from pmd.envs.sciknoweval import SciKnowEvalEnvironment, extract_choice
from pmd.errors import ConfigError, DatasetError


def _mcq(question: str, texts: list[str], key: str, domain: str = "Biology", level: str = "L1", **extra) -> dict:
    row = {
        "question": question,
        "choices": {"text": texts, "label": list("ABCD"[: len(texts)])},
        "answerKey": key,
        "answer": "",
        "domain": domain,
        "details": {"level": level, "task": "t", "subtask": "s"},
        "type": f"mcq-{len(texts)}-choices",
    }
    row.update(extra)
    return row


ROWS = [
    _mcq("Which organelle produces most ATP?", ["Nucleus", "Mitochondrion", "Ribosome", "Golgi body"], "B"),
    _mcq("Which gas do plants take up for photosynthesis?", ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"], "C"),
    _mcq("What is the SI unit of force?", ["Joule", "Newton", "Watt", "Pascal"], "B", domain="Physics", level="L2"),
    _mcq("Which is a noble gas?", ["Argon", "Sodium"], "A", domain="Chemistry", level="L3"),
    _mcq("Which material is a semiconductor?", ["Copper", "Silicon", "Glass", "Rubber"], "B", domain="Material"),
    {"question": "Is water a polar molecule?", "choices": {"text": [], "label": []}, "answerKey": "", "answer": "Yes",
     "domain": "Chemistry", "details": {"level": "L2"}, "type": "true_or_false"},
    {"question": "Graphite conducts electricity.", "choices": {"text": ["True", "False"], "label": ["A", "B"]},
     "answerKey": "A", "domain": "Material", "details": {"level": "L1"}, "type": "true_or_false"},
    {"question": "Explain osmosis.", "answer": "Water moves...", "domain": "Biology", "type": "open-ended-qa"},
]


def _write(path: Path, rows: list, jsonl: bool = True) -> Path:
    if jsonl:
        path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path) -> SciKnowEvalEnvironment:
    return SciKnowEvalEnvironment(path=_write(tmp_path / "ske.jsonl", ROWS), eval_fraction=0.3, seed=1)


def _all(env: SciKnowEvalEnvironment):
    return env.problems("train") + env.problems("eval")


def _find(env: SciKnowEvalEnvironment, start: str):
    return next(p for p in _all(env) if p.question.startswith(start))


def test_loads_supported_types_and_exposes_domains(env):
    assert isinstance(env, Environment)
    problems = _all(env)
    assert len(problems) == 7 and env.skipped_types == {"open-ended-qa": 1}
    assert {p.metadata["domain"] for p in problems} == {"Biology", "Physics", "Chemistry", "Material"}
    atp = _find(env, "Which organelle")
    assert atp.answer == "B" and atp.metadata["level"] == "L1" and atp.metadata["type"] == "mcq-4-choices"
    prompt = env.format_prompt(atp)
    assert "A. Nucleus" in prompt and "B. Mitochondrion" in prompt and "Answer: X" in prompt
    assert "Mitochondrion" not in prompt.split("Options:")[0]


def test_mcq_strict_answers(env):
    atp = _find(env, "Which organelle")
    for response in ["Reasoning...\nAnswer: B", "**Answer:** (B)", "Final answer: B. Mitochondrion",
                     "So it is \\boxed{B}", "Answer: Mitochondrion", "Answer: b"]:
        verdict = env.verify(atp, response)
        assert verdict.passed and verdict.reward == 1.0 and verdict.format_ok, response
        assert verdict.extracted == "B" and verdict.details["strict"] == "B"
    wrong = env.verify(atp, "Answer: A")
    assert not wrong.passed and wrong.reward == 0.0 and wrong.format_ok and wrong.extracted == "A"
    assert wrong.feedback.startswith("Wrong answer:") and "Format: followed" in wrong.feedback
    assert atp.uid.startswith("sciknoweval/") and atp.family == "sciknoweval"


def test_lenient_reading_is_recorded_but_not_credited(env):
    atp = _find(env, "Which organelle")
    verdict = env.verify(atp, "I believe the answer is (B), because mitochondria make ATP.\nThanks for asking.")
    assert verdict.reward == 0.0 and not verdict.passed and not verdict.format_ok
    assert verdict.details["strict"] is None and verdict.details["lenient"] == "B"
    assert verdict.details["lenient_correct"] is True and verdict.details["strict_correct"] is False
    assert "Format: not followed" in verdict.feedback
    # The shared strict extractor takes the last 'Answer:' line even when an explanation follows it.
    assert env.verify(atp, "Answer: B\nThis is because of the Krebs cycle.").details["strict"] == "B"
    partial = SciKnowEvalEnvironment(path=env.path, eval_fraction=0.3, seed=1, lenient_credit=0.25)
    assert partial.verify(_find(partial, "Which organelle"), "I'd say option B.").reward == 0.25
    assert partial.verify(_find(partial, "Which organelle"), "I'd say option C.").reward == 0.0
    # Only the one option text mentioned.
    assert extract_choice("It has to be the mitochondrion here.", atp) == (None, "B")
    # Lowercase articles are not option letters.
    assert extract_choice("The answer is a protein complex", atp) == (None, None)


def test_true_false_questions(env):
    water = _find(env, "Is water")  # no choices in the row: answered Yes/No
    assert water.answer == "Yes" and "Yes or No" in env.format_prompt(water)
    assert env.verify(water, "Water is bent and polar.\nAnswer: Yes").passed
    assert env.verify(water, "Answer: true").passed  # true/false synonyms resolve
    assert not env.verify(water, "Answer: No").passed
    assert env.verify(water, "hmm, no idea").details["lenient"] is None  # "no idea" is not an answer
    graphite = _find(env, "Graphite")  # True/False listed as A/B
    assert graphite.answer == "A"
    assert env.verify(graphite, "Answer: A").passed and env.verify(graphite, "Answer: True").passed
    assert not env.verify(graphite, "Answer: False").passed


def test_unparseable_and_missing_answers(env):
    atp = _find(env, "Which organelle")
    odd = env.verify(atp, "Answer: the second one")
    assert odd.extracted is None and not odd.format_ok and "not one of the offered options" in odd.feedback
    empty = env.verify(atp, "")
    assert empty.extracted is None and empty.reward == 0.0 and "No answer found" in empty.feedback


def test_verdicts_carry_a_failure_kind(env):
    atp = _find(env, "Which organelle")
    kinds = {response: env.verify(atp, response).failure_kind for response in [
        "Answer: B", "Answer: A", "I believe the answer is (B).\nThanks.", "I believe the answer is (C).\nThanks.",
        "Answer: the second one", ""]}
    assert kinds == {"Answer: B": "", "Answer: A": "wrong_value", "I believe the answer is (B).\nThanks.": "format",
                     "I believe the answer is (C).\nThanks.": "no_answer", "Answer: the second one": "no_answer",
                     "": "no_answer"}


def test_feedback_never_leaks_the_gold_answer(env, tmp_path):
    for problem in _all(env):
        gold_text = problem.metadata["choices"][problem.metadata["labels"].index(problem.answer)]
        wrong = next(label for label in problem.metadata["labels"] if label != problem.answer)
        for response in [f"Answer: {wrong}", "no idea", f"maybe {wrong}?", "Answer: zzz"]:
            feedback = env.verify(problem, response).feedback
            assert gold_text.lower() not in feedback.lower(), (problem.question, response, feedback)
            if len(problem.answer) == 1:
                assert not re.search(rf"\b{problem.answer}\b", feedback), (problem.question, response, feedback)
            assert "correct answer" not in feedback.lower()
    revealing = SciKnowEvalEnvironment(path=tmp_path / "ske.jsonl", eval_fraction=0.3, seed=1,
                                       reveal_answer_in_feedback=True)
    atp = _find(revealing, "Which organelle")
    assert "The correct answer is B: Mitochondrion." in revealing.verify(atp, "Answer: A").feedback


def test_split_is_deterministic_and_disjoint(tmp_path):
    rows = [_mcq(f"Question number {i}?", ["a1", "b2", "c3", "d4"], "ABCD"[i % 4], domain=d)
            for i, d in zip(range(40), ["Biology", "Chemistry", "Material", "Physics"] * 10)]
    rows.append(_mcq("question   NUMBER 5?", ["a1", "b2", "c3", "d4"], "A"))  # duplicate of row 6
    path = _write(tmp_path / "many.json", rows, jsonl=False)
    a = SciKnowEvalEnvironment(path=path, eval_fraction=0.25, seed=3)
    b = SciKnowEvalEnvironment(path=path, eval_fraction=0.25, seed=3)
    assert a.duplicates_dropped == 1
    train, eval_ = a.problems("train"), a.problems("eval")
    assert len(train) == 30 and len(eval_) == 10
    assert not {p.question for p in train} & {p.question for p in eval_}
    assert [p.uid for p in eval_] == [p.uid for p in b.problems("eval")]
    assert [p.question for p in eval_] == [p.question for p in b.problems("eval")]
    assert {p.question for p in SciKnowEvalEnvironment(path=path, eval_fraction=0.25, seed=4).problems("eval")} \
        != {p.question for p in eval_}
    physics = SciKnowEvalEnvironment(path=path, domains=["physics"])
    assert {p.metadata["domain"] for p in _all(physics)} == {"Physics"}


def test_directory_of_files(tmp_path):
    (tmp_path / "Biology").mkdir()
    (tmp_path / "Physics").mkdir()
    _write(tmp_path / "Biology" / "b.jsonl", ROWS[:2])
    _write(tmp_path / "Physics" / "p.json", ROWS[2:3], jsonl=False)
    env = SciKnowEvalEnvironment(path=tmp_path, eval_fraction=0.4)
    assert len(_all(env)) == 3


def test_malformed_rows_name_file_row_and_problem(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = ROWS[0]
    cases = [
        ([good, "{oops"], r"bad\.jsonl: row 2: invalid JSON"),
        ([good, "[1]"], r"row 2: a row must be a JSON object"),
        ([{**good, "question": ""}], r"row 1: missing or empty 'question'"),
        ([{**good, "type": None}], r"row 1: missing 'type'"),
        ([{**good, "domain": None}], r"row 1: missing 'domain'"),
        ([{**good, "answerKey": "E"}], r"row 1: 'answerKey' 'E' matches none of the choices"),
        ([{**good, "answerKey": "", "answer": ""}], r"row 1: missing 'answerKey' / 'answer'"),
        ([{**good, "choices": {"text": ["x", "y"], "label": ["A"]}}], r"row 1: 'choices' has 2 texts but 1 labels"),
        ([{**good, "choices": {"text": ["only"], "label": ["A"]}}], r"row 1: a mcq-4-choices question needs at least"),
        ([{**good, "choices": "A or B"}], r"row 1: 'choices' must be an object"),
        ([ROWS[-1]], r"no multiple-choice or true/false questions found"),
    ]
    for rows, pattern in cases:
        _write(path, rows)
        with pytest.raises(DatasetError, match=pattern):
            SciKnowEvalEnvironment(path=path)
    path.write_bytes(json.dumps(good).encode() + b"\n" + b'{"question": "\xff\xfe"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl: not valid UTF-8 \(byte \d+"):
        SciKnowEvalEnvironment(path=path)
    with pytest.raises(DatasetError, match="does not exist"):
        SciKnowEvalEnvironment(path=tmp_path / "nope.jsonl")


def test_list_choices_and_bad_options(tmp_path):
    path = _write(tmp_path / "list.jsonl", [{**ROWS[0], "choices": ["Nucleus", "Mitochondrion", "Ribosome", "Golgi"]},
                                            ROWS[1]])
    env = SciKnowEvalEnvironment(path=path, eval_fraction=0.5)
    atp = _find(env, "Which organelle")
    assert atp.metadata["labels"] == ["A", "B", "C", "D"] and env.verify(atp, "Answer: B").passed
    for kwargs, pattern in [({"eval_fraction": 1}, "eval_fraction"), ({"seed": 1.5}, "seed"),
                            ({"max_problems": -1}, "max_problems"), ({"domains": "Biology"}, "domains"),
                            ({"domains": ["Astrology"]}, "no questions in domains")]:
        with pytest.raises(ConfigError, match=pattern):
            SciKnowEvalEnvironment(path=path, **kwargs)
    with pytest.raises(ConfigError, match="split"):
        env.problems("validation")
