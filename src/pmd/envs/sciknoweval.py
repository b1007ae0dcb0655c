"""SciKnowEval multiple-choice and true/false questions, loaded from the released JSON/JSONL files.

Strict extraction is the project's shared one (`envs.answer`: the last "Answer: X" line, else the last \\boxed{X}),
and X must name an option. A lenient reading (e.g. "the answer is (B)" in prose) is recorded separately in
`Verdict.details` and earns only `lenient_credit` (default 0): the policy should learn the format. Feedback says
what was read, whether the format was followed and the verdict; it never states the gold answer unless
`reveal_answer_in_feedback=True` (and then only after a wrong answer). Per-domain evaluation groups by
`Problem.metadata["domain"]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_fields import _f
from ..errors import ConfigError, DatasetError
from ..prompts import mcq_question
from .answer import answer_failure_kind, extract_answer
from .base import Problem, Verdict
from .data import SplitParams, build_params, check_split, clip, dataset_files, dedupe_and_split, read_rows

__all__ = ["SciKnowEvalEnvironment", "SciKnowEvalParams", "extract_choice"]

_LABELS = "ABCDEFGHIJ"
_TRUE = {"true", "yes", "correct"}
_FALSE = {"false", "no", "incorrect"}


@dataclass(frozen=True)
class _Options:
    """Option labels and texts of one question; `boolean` marks true/false questions answered by word."""

    labels: tuple[str, ...]
    texts: tuple[str, ...]
    boolean: bool = False

    def resolve(self, value: str) -> str | None:
        """Map an answer string ("B", "(b)", "B. text", "Yes", the option text) to a label, or None."""
        value = _strip_markup(value)
        if not value:
            return None
        upper = {label.upper(): label for label in self.labels}
        if value.upper() in upper:
            return upper[value.upper()]
        letter = re.match(r"^\(?([A-Z])\)?(?:[.):\]]|\s|$)", value)  # uppercase only: "a protein" is not "A"
        if letter and letter.group(1) in upper:
            return upper[letter.group(1)]
        norm = _norm(value)
        for label, text in zip(self.labels, self.texts):
            if norm == _norm(text):
                return label
        polarity = _polarity(norm)
        if polarity is not None:
            for label, text in zip(self.labels, self.texts):
                if _polarity(_norm(text)) == polarity:
                    return label
        return None


@dataclass(frozen=True)
class SciKnowEvalParams(SplitParams):
    """A sciknoweval task's `params` (YAML `env.tasks[i].params`); `path` is required."""

    path: str = _f("", "A SciKnowEval JSON/JSONL file, or a directory of them (searched recursively).")
    domains: list[str] | None = _f(None, "Keep only questions of these domains, e.g. [Biology] (null = all).")
    reveal_answer_in_feedback: bool = _f(False, "Name the gold option after a wrong answer (a task inherits "
                                                "env.reveal_answer_in_feedback).")
    lenient_credit: float = _f(0.0, "Reward, in [0, 1], for a correct choice read only leniently (format missed).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise ConfigError("path is required: a SciKnowEval JSON/JSONL file or directory")
        if not 0 <= self.lenient_credit <= 1:
            raise ConfigError(f"lenient_credit must be in [0, 1], got {self.lenient_credit!r}")


class SciKnowEvalEnvironment:
    """SciKnowEval MCQ and true/false questions from a local file or directory of released JSON/JSONL files.

    Built from `SciKnowEvalParams`, or from their fields as keyword options (validated the same way; `path` may be
    a Path). Rows of other types (open-ended, filling, relation extraction, ...) are skipped and counted in
    `skipped_types`; malformed rows of supported types raise DatasetError naming file, row and problem.
    """

    def __init__(self, params: SciKnowEvalParams | None = None, /, **options: Any) -> None:
        self.params = params = build_params(SciKnowEvalParams, params, options, "sciknoweval")
        self.name = params.name or "sciknoweval"
        self.path = Path(params.path)
        self.skipped_types: dict[str, int] = {}
        records = self._load()
        domains = params.domains
        if domains is not None:
            wanted = {d.lower() for d in domains}
            records = [r for r in records if r["metadata"]["domain"].lower() in wanted]
            if not records:
                raise ConfigError(f"sciknoweval: no questions in domains {domains} under {self.path}")
        self._splits, self.duplicates_dropped = dedupe_and_split(
            records, lambda r: (_norm(r["question"]), tuple(_norm(t) for t in r["metadata"]["choices"])),
            params.eval_fraction, params.seed)

    def problems(self, split: str) -> list[Problem]:
        check_split(split, "sciknoweval")
        return [
            Problem(uid=f"{self.name}/{split}/{self.params.seed}/{i}", family=self.name, question=r["question"],
                    answer=r["answer"], metadata=dict(r["metadata"]))
            for i, r in enumerate(self._splits[split][: self.params.max_problems])
        ]

    def format_prompt(self, problem: Problem) -> str:
        options = _options(problem)
        return mcq_question(problem.question, options.labels, options.texts)

    def verify(self, problem: Problem, response: str) -> Verdict:
        options = _options(problem)
        gold = problem.answer
        strict, lenient, strict_raw, where = _extract(response if isinstance(response, str) else "", options)
        chosen = strict if strict is not None else lenient
        correct = strict is not None and strict == gold
        lenient_correct = chosen is not None and chosen == gold
        reward = 1.0 if correct else self.params.lenient_credit if strict is None and lenient_correct else 0.0
        details = {
            "strict": strict,
            "lenient": lenient,
            "strict_correct": correct,
            "lenient_correct": lenient_correct,
            "domain": problem.metadata.get("domain"),
            "level": problem.metadata.get("level"),
            "type": problem.metadata.get("type"),
        }
        # Verdict first: the teacher reads this first (the memory reads `failure_kind`, not this text).
        if strict is not None:
            head = "Correct." if correct else "Wrong answer: the chosen option is incorrect."
            feedback = f"{head} Your final answer was read as {strict} (from {where}). Format: followed."
        elif strict_raw is not None:
            said = clip(strict_raw, 80, count=False)
            feedback = (f"Not an option: your final answer ({where}) says {said!r}, which is not one of the "
                        "offered options. Format: not followed (give just the option label, e.g. 'Answer: X').")
        elif lenient is not None:
            feedback = (f"No gradable answer: no final 'Answer: X' line or \\boxed{{X}} was found. The text seems to "
                        f"choose {lenient}. Format: not followed.")
        else:
            feedback = ("No answer found: end your response with a final line 'Answer: X' where X is the label of your "
                        "chosen option. Format: not followed.")
        if self.params.reveal_answer_in_feedback and not correct and gold is not None:
            text = options.texts[options.labels.index(gold)]
            feedback += f" The correct answer is {gold}" + (f": {text}." if text != gold else ".")
        # An answer line that names no option is no gradable answer: "format" if the text still chose the right one.
        kind = answer_failure_kind(correct, strict, lenient_correct)
        return Verdict(reward, correct, feedback, extracted=chosen, format_ok=strict is not None, details=details,
                       failure_kind=kind)

    # ---- loading ----

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            raise DatasetError(f"sciknoweval: dataset path {self.path} does not exist")
        records = []
        for file in dataset_files(self.path, (".json", ".jsonl")):
            for row, where in read_rows(file):
                kind = row.get("type")
                if not isinstance(kind, str) or not kind:
                    raise DatasetError(f"{where}: missing 'type' (e.g. mcq-4-choices, true_or_false)")
                if not (kind.startswith("mcq") or kind == "true_or_false"):
                    self.skipped_types[kind] = self.skipped_types.get(kind, 0) + 1
                    continue
                records.append(_record(row, kind, where))
        if not records:
            raise DatasetError(f"{self.path}: no multiple-choice or true/false questions found "
                               f"(skipped types: {self.skipped_types or 'none'})")
        return records


def extract_choice(response: str, problem: Problem) -> tuple[str | None, str | None]:
    """(strict label, lenient label) that `response` picks for `problem`; lenient is None when strict succeeded."""
    strict, lenient, _, _ = _extract(response, _options(problem))
    return strict, lenient


def _extract(response: str, options: _Options) -> tuple[str | None, str | None, str | None, str | None]:
    """(strict label, lenient label, raw strict value, where the strict value came from).

    Strict: `envs.answer.extract_answer` (last "Answer: X" line, else last \\boxed{X}); X must resolve to an option.
    Lenient (only when strict fails): "the answer is (X)" / "option X" phrases, a final bare label, "the answer is
    yes" for true/false, or the one option text the response mentions.
    """
    lines = [line for line in response.strip().splitlines() if line.strip()]
    found = extract_answer(response)
    if found.strict is not None:
        where = "your 'Answer:' line" if found.how == "answer_line" else "\\boxed{}"
        label = options.resolve(found.strict)
        if label is not None:
            return label, None, found.strict, where
        return None, _lenient(response, lines, options), found.strict, where
    return None, _lenient(response, lines, options), None, None


_BOOLEAN_PHRASE = re.compile(
    r"(?i)\b(?:answer|statement|claim|it)\s*(?:is|would be|:)\s*:?[\s*_]*(yes|no|true|false)\b")
_PHRASE = re.compile(r"(?i:answer|option|choice)\s*(?i:is|would be|should be|:)?\s*[:\-]?\s*[\(\[*\s]*([A-Z])\b")


def _lenient(response: str, lines: list[str], options: _Options) -> str | None:
    for match in reversed(list(_PHRASE.finditer(response))):
        letter = match.group(1).upper()
        if letter in options.labels:
            return letter
    if lines and options.resolve(lines[-1]) is not None and len(lines[-1].strip()) <= 40:
        return options.resolve(lines[-1])
    if options.boolean:
        said = _BOOLEAN_PHRASE.findall(response)
        if said:
            return options.resolve(said[-1])
    lowered = _norm(response)
    mentioned = [label for label, text in zip(options.labels, options.texts) if len(_norm(text)) >= 3
                 and re.search(r"\b" + re.escape(_norm(text)) + r"\b", lowered)]
    return mentioned[0] if len(mentioned) == 1 else None


def _strip_markup(value: str) -> str:
    value = re.sub(r"\\text(?:bf)?\{([^{}]*)\}", r"\1", value.strip())
    return value.strip().strip("*_`$ ").strip()


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _polarity(word: str) -> bool | None:
    return True if word in _TRUE else False if word in _FALSE else None


def _options(problem: Problem) -> _Options:
    meta = problem.metadata
    return _Options(tuple(meta["labels"]), tuple(meta["choices"]), bool(meta.get("boolean")))


def _record(row: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: missing or empty 'question'")
    domain = row.get("domain")
    if not isinstance(domain, str) or not domain.strip():
        raise DatasetError(f"{where}: missing 'domain' (Biology, Chemistry, Material or Physics)")
    details = row.get("details") if isinstance(row.get("details"), dict) else {}
    level = details.get("level", row.get("level"))
    options = _parse_choices(row.get("choices"), kind, where)
    gold = _gold(row, options, where)
    return {
        "question": question,
        "answer": gold,
        "metadata": {
            "domain": domain.strip(),
            "level": str(level) if level is not None else None,
            "type": kind,
            "task": details.get("task"),
            "subtask": details.get("subtask"),
            "labels": list(options.labels),
            "choices": list(options.texts),
            "boolean": options.boolean,
            "origin": where,
        },
    }


def _parse_choices(choices: Any, kind: str, where: str) -> _Options:
    """{"text": [...], "label": [...]} or a plain list; true/false rows may come without choices (Yes/No)."""
    if isinstance(choices, dict):
        texts, labels = choices.get("text"), choices.get("label")
        if not isinstance(texts, list) or (labels is not None and not isinstance(labels, list)):
            raise DatasetError(f"{where}: 'choices' must have a 'text' list and a 'label' list")
        labels = labels if labels else list(_LABELS[: len(texts)])
    elif isinstance(choices, list):
        texts, labels = choices, list(_LABELS[: len(choices)])
    elif choices is None:
        texts, labels = [], []
    else:
        raise DatasetError(f"{where}: 'choices' must be an object with text/label lists or a list, "
                           f"got {type(choices).__name__}")
    if not texts and kind == "true_or_false":
        return _Options(("Yes", "No"), ("Yes", "No"), boolean=True)
    if len(texts) < 2:
        raise DatasetError(f"{where}: a {kind} question needs at least 2 choices, got {len(texts)}")
    if len(texts) > len(_LABELS) and labels == list(_LABELS[: len(texts)]):
        raise DatasetError(f"{where}: too many choices ({len(texts)})")
    if len(labels) != len(texts):
        raise DatasetError(f"{where}: 'choices' has {len(texts)} texts but {len(labels)} labels")
    if not all(isinstance(t, str) and t.strip() for t in texts) or not all(isinstance(lb, str) and lb.strip()
                                                                         for lb in labels):
        raise DatasetError(f"{where}: every choice text and label must be a non-empty string")
    labels = [lb.strip() for lb in labels]
    if len(set(lb.upper() for lb in labels)) != len(labels):
        raise DatasetError(f"{where}: duplicate choice labels {labels}")
    boolean = kind == "true_or_false" and all(_polarity(_norm(t)) is not None for t in texts)
    return _Options(tuple(labels), tuple(t.strip() for t in texts), boolean=boolean)


def _gold(row: dict[str, Any], options: _Options, where: str) -> str:
    """answerKey (a label) or answer (a label, an option text or, for true/false, yes/no/true/false)."""
    for field in ("answerKey", "answer"):
        value = row.get(field)
        if isinstance(value, bool):
            value = "Yes" if value else "No"
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise DatasetError(f"{where}: '{field}' must be a string, got {type(value).__name__}")
        label = options.resolve(value)
        if label is None:
            raise DatasetError(f"{where}: '{field}' {value!r} matches none of the choices {list(options.labels)}")
        return label
    raise DatasetError(f"{where}: missing 'answerKey' / 'answer'")

