"""Built-in verifiers for dataset tasks: score a model's extracted answer against a row's reference answer.

A dataset task brings questions and reference answers (strings); one of these verifiers says whether a response
got the answer. Each is a small pure scoring function `score(candidate, reference) -> float in [0, 1]` with typed
params, wrapped in a callable that reads the answer the way reasoning-gym tasks do (`envs.answer.extract_answer`:
strict "Answer:" line / \\boxed{} / "the answer is X" sentence, lenient last number or line) and words its feedback
with the same `answer_verdict` (and its structured `failure_kind`), so the self-teacher and the memory read every
task kind alike.

- `exact`: normalised string equality (NFKC, casefold, collapsed whitespace, no surrounding quotes/$/final period).
- `numeric`: numbers equal within a tolerance ("1,234", "3/4", "2.5e-3", "50%"); text that is not a number scores 0.
- `mcq`: one option letter ("B", "(b)", "Option B", "B. Paris"); naming two different letters scores 0.
- `regex`: the answer must fullmatch a pattern (a param, or each row's reference answer).
- `math`: mathematical equivalence by the math-verify package (the `math` extra: MATH_INSTALL), not a parser of ours.

A row whose reference cannot be graded (empty, not a number, not a choice, an invalid per-row pattern) scores 0
for every reply with a "Not graded: ..." headline instead of raising: one bad row must not stop a training run, and
a group that all scores 0 carries no advantage, so it teaches nothing wrong. `check_reference` lets a loader reject
such rows up front instead.

One concept, five small instances: they share the params base, the answer reading, the verdict wording and the
registry that `make_verifier` builds from, so they stay in one module rather than five of ~100 lines.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

from ..config_fields import _f, build_dataclass
from ..distribution import install_extra
from ..errors import ConfigError
from .answer import WRONG_ANSWER, answer_verdict, extract_answer, normalise_answer, truncate
from .numbers import numbers_close, numeric_score, parse_number  # noqa: F401 (part of this module's surface)
from .base import Verdict

__all__ = [
    "VERIFIERS", "ExactParams", "MathParams", "McqParams", "NumericParams", "RegexParams", "Verifier",
    "VerifierParams", "exact_score", "make_verifier", "mcq_score", "normalise_answer", "numeric_score",
    "parse_number", "read_choice", "regex_score",
]

MATH_INSTALL = install_extra("math")


# ---------------------------------------------------------------------------------------------------- params


@dataclass(frozen=True)
class VerifierParams:
    """What every built-in verifier takes (as a reasoning_gym task does)."""

    lenient_credit: float = _f(0.0, "Reward, in [0, 1], for a correct answer found only by the lenient fallback "
                                    "(format missed).")
    reveal_answer_in_feedback: bool = _f(False, "Name the reference answer after a wrong reply (leaks the label).")

    def __post_init__(self) -> None:
        if not 0.0 <= self.lenient_credit <= 1.0:
            raise ConfigError(f"lenient_credit: expected a value in [0, 1], got {self.lenient_credit!r}")


@dataclass(frozen=True)
class ExactParams(VerifierParams):
    case_sensitive: bool = _f(False, "Compare case too (default: casefolded, so 'Paris' == 'PARIS').")


@dataclass(frozen=True)
class NumericParams(VerifierParams):
    rel_tol: float = _f(1e-6, "Relative tolerance: equal when |a - b| <= max(rel_tol * max(|a|, |b|), abs_tol).")
    abs_tol: float = _f(1e-9, "Absolute tolerance (matters near zero).")
    percent_as_fraction: bool = _f(False, "Read '50%' as 0.5 (default: as 50, i.e. the % sign is ignored).")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("rel_tol", "abs_tol"):
            value = getattr(self, key)
            if not value >= 0.0:  # also rejects NaN
                raise ConfigError(f"{key}: expected a number >= 0, got {value!r}")


@dataclass(frozen=True)
class McqParams(VerifierParams):
    choices: str = _f("ABCD", "The option letters, in order (case-insensitive; stored upper case).")

    def __post_init__(self) -> None:
        super().__post_init__()
        letters = self.choices.upper()
        if not letters or not all("A" <= c <= "Z" for c in letters) or len(set(letters)) != len(letters):
            raise ConfigError(f"choices: expected distinct letters A-Z, e.g. 'ABCD', got {self.choices!r}")
        object.__setattr__(self, "choices", letters)


@dataclass(frozen=True)
class RegexParams(VerifierParams):
    pattern: str = _f("", "Regular expression the whole answer must match ('' = each row's reference answer is "
                          "its pattern).")
    ignore_case: bool = _f(False, "Match case-insensitively (re.IGNORECASE).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pattern:
            error = _compile_error(self.pattern, self.ignore_case)
            if error is not None:
                raise ConfigError(f"pattern: not a valid regular expression ({error})")


@dataclass(frozen=True)
class MathParams(VerifierParams):
    timeout_s: int = _f(5, "Seconds math-verify may spend parsing or comparing one answer (0 = no limit; the limit "
                           "uses SIGALRM, so it applies on the main thread only).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timeout_s < 0:
            raise ConfigError(f"timeout_s: expected an integer >= 0, got {self.timeout_s!r}")


# ---------------------------------------------------------------------------------------------- pure scoring


def exact_score(candidate: str, reference: str, case_sensitive: bool = False) -> float:
    """1.0 when both read the same after `normalise_answer`; an empty candidate never matches."""
    cand = normalise_answer(candidate, case_sensitive)
    return 1.0 if cand and cand == normalise_answer(reference, case_sensitive) else 0.0


_LEAD_WORDS = re.compile(r"^(?:the\s+)?(?:correct\s+|final\s+|right\s+|best\s+)?(?:answer|option|choice)\s*"
                         r"(?:is\s*|would\s+be\s*|:\s*|-\s*)?", re.IGNORECASE)
_BARE_LABEL = re.compile(r"^[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.):]?$")
_LEADING_LABEL = re.compile(r"^(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z])[.):\]]|([A-Z])(?=\s))\s*(.*)$", re.DOTALL)
# After a leading label, another letter counts as a second choice when it is listed ("or C", ", C", "and (C)") or
# written as a label ("C)", "C."): "B. A protein" names only B, "A or B" names two.
_OTHER_LABEL = re.compile(r"(?:\b(?:or|and|vs)\.?\s+|[,/&]\s*)(?:(?i:option|choice)\s*)?[(\[]?([A-Z])(?![A-Za-z0-9'])"
                          r"|(?<![A-Za-z0-9'])[(\[]?([A-Z])[).:\]](?=\s|$)")
_PHRASE = re.compile(r"\b(?:(?i:option|choice)(?:\s+[(\[]?|\s*[(\[])([A-Za-z])"
                     r"|(?i:answer)\s*(?i:is|would\s+be|:)?\s*[(\[]?([A-Z]))(?![A-Za-z0-9'])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'’])([A-Z])(?![A-Za-z0-9'’])")


def read_choice(candidate: str, choices: str = "ABCD") -> str | None:
    """The one option letter (upper case, one of `choices`) that `candidate` names, or None when it names none or
    two different ones. In order: the whole text is a label ("b", "(B)", "B)", "Option B", "The answer is B"); a
    leading label before option text ("B. Paris", "(B) Paris"); "option/choice/answer X" phrases; else the single
    upper-case letter standing alone ("I think B"); outside a leading label, any two different letters are two
    choices ("Both A and C are wrong: D" is None). Lower case counts only where it cannot be the article "a"."""
    choices = choices.upper()
    full = normalise_answer(candidate, case_sensitive=True).strip("*_ ")
    text = _LEAD_WORDS.sub("", full, count=1).strip("*_ ")

    def one(letters: set[str]) -> str | None:
        return next(iter(letters)) if len(letters) == 1 and letters <= set(choices) else None

    bare = _BARE_LABEL.match(text)
    if bare:
        return one({bare.group(1).upper()})
    lead = _LEADING_LABEL.match(text)
    letter = next(g for g in lead.groups()[:4] if g).upper() if lead else None
    if lead and letter in choices:  # else "I think B": a capital that is no option is no label either
        others = {a or b for a, b in _OTHER_LABEL.findall(lead.group(5))} & set(choices)
        return one({letter} | others)
    phrases = {(a or b).upper() for a, b in _PHRASE.findall(full)}
    return one(phrases | (set(_STANDALONE.findall(full)) & set(choices)))


def mcq_score(candidate: str, reference: str, choices: str = "ABCD") -> float:
    """1.0 when the candidate names exactly one letter of `choices` and it is the reference's letter."""
    picked, gold = read_choice(candidate, choices), read_choice(reference, choices)
    return 1.0 if picked is not None and picked == gold else 0.0


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """Per-row patterns repeat across a group's rollouts and epochs: compile each once."""
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


def _compile_error(pattern: str, ignore_case: bool) -> str | None:
    try:
        _compiled(pattern, ignore_case)
    except (re.error, RecursionError, OverflowError) as exc:
        return str(exc)
    return None


def regex_score(candidate: str, pattern: str, ignore_case: bool = False) -> float:
    """1.0 when the whole candidate (as extracted, surrounding whitespace stripped) matches `pattern`; raises
    re.error for an invalid pattern (callers check patterns first: `RegexParams`, `check_reference`)."""
    return 1.0 if _compiled(pattern, ignore_case).fullmatch(candidate.strip()) else 0.0


# ---------------------------------------------------------------------------------------------- verifiers


@runtime_checkable
class Verifier(Protocol):
    """Judges a response against a row's reference answer. Never raises on arbitrary model text."""

    name: str

    def __call__(self, response: str, reference: str) -> Verdict: ...


def _safe(fn: Callable[..., Any], *args: Any, default: Any) -> Any:
    """A scorer must not crash a training run on odd model text (or an odd row): its failure is `default`."""
    try:
        return fn(*args)
    except Exception:
        return default


class _AnswerVerifier:
    """Extract, score strict and lenient readings, word the verdict (`answer_verdict`). Subclasses give `score`
    and may refine `_reference_problem` (why a row cannot be graded), `wrong_headline` and `reveal_text`."""

    name: ClassVar[str] = ""
    wrong: ClassVar[str] = WRONG_ANSWER

    def __init__(self, params: VerifierParams):
        self.params = params

    def score(self, candidate: str, reference: str) -> float:
        raise NotImplementedError

    def uses_reference(self) -> bool:
        """Whether scoring reads the row's reference answer (a fixed regex pattern does not)."""
        return True

    def check_reference(self, reference: str) -> str | None:
        """Why `reference` cannot be graded (a "Not graded: ..." sentence), or None when it can: a dataset loader
        may call this to reject bad rows up front; `__call__` calls it for every reply."""
        if not self.uses_reference():
            return None
        if not reference.strip():
            return "Not graded: this row's reference answer is empty."
        return self._reference_problem(reference)

    def _reference_problem(self, reference: str) -> str | None:
        return None

    def wrong_headline(self, candidate: str) -> str:
        """The first sentence for a formatted but wrong answer: it names the failure for the teacher."""
        return self.wrong

    def reveal_text(self, reference: str) -> str:
        """What "The correct answer is ..." names when the params reveal it."""
        return reference

    def __call__(self, response: str, reference: str) -> Verdict:
        ext = extract_answer(response if isinstance(response, str) else "")
        reference = "" if reference is None else str(reference)
        fault = _safe(self.check_reference, reference, default="Not graded: this row's reference answer could not "
                                                                  "be read.")
        strict = lenient = 0.0
        if fault is None:
            strict = self._score(ext.strict, reference)
            lenient = strict if ext.lenient == ext.strict else self._score(ext.lenient, reference)
        wrong = self.wrong if ext.strict is None else _safe(self.wrong_headline, ext.strict, default=self.wrong)
        return answer_verdict(ext, strict, lenient, _safe(self.reveal_text, reference, default=reference),
                              self.params.reveal_answer_in_feedback, self.params.lenient_credit, wrong=wrong,
                              fault=fault)

    def _score(self, candidate: str | None, reference: str) -> float:
        if candidate is None:
            return 0.0
        value = _safe(self.score, candidate, reference, default=0.0)
        return min(1.0, max(0.0, float(value)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class ExactVerifier(_AnswerVerifier):
    name = "exact"
    params: ExactParams

    def score(self, candidate: str, reference: str) -> float:
        return exact_score(candidate, reference, self.params.case_sensitive)

    def _reference_problem(self, reference: str) -> str | None:
        return None if normalise_answer(reference) else "Not graded: this row's reference answer is empty."


class NumericVerifier(_AnswerVerifier):
    name = "numeric"
    params: NumericParams

    def score(self, candidate: str, reference: str) -> float:
        p = self.params
        return numeric_score(candidate, reference, p.rel_tol, p.abs_tol, p.percent_as_fraction)

    def _reference_problem(self, reference: str) -> str | None:
        if parse_number(reference, self.params.percent_as_fraction) is None:
            return f"Not graded: this row's reference answer {truncate(reference, 80)!r} is not a number."
        return None

    def wrong_headline(self, candidate: str) -> str:
        if parse_number(candidate, self.params.percent_as_fraction) is None:
            return "Wrong answer: the extracted answer is not a number."
        return WRONG_ANSWER


class McqVerifier(_AnswerVerifier):
    name = "mcq"
    params: McqParams
    wrong = "Wrong answer: the extracted choice is incorrect."

    def score(self, candidate: str, reference: str) -> float:
        return mcq_score(candidate, reference, self.params.choices)

    def _reference_problem(self, reference: str) -> str | None:
        if read_choice(reference, self.params.choices) is None:
            return (f"Not graded: this row's reference answer {truncate(reference, 80)!r} is not one of the choices "
                    f"{', '.join(self.params.choices)}.")
        return None

    def wrong_headline(self, candidate: str) -> str:
        if read_choice(candidate, self.params.choices) is None:
            return f"Wrong answer: the extracted answer does not name exactly one of the choices " \
                   f"{', '.join(self.params.choices)}."
        return self.wrong

    def reveal_text(self, reference: str) -> str:
        return read_choice(reference, self.params.choices) or reference


class RegexVerifier(_AnswerVerifier):
    name = "regex"
    params: RegexParams
    wrong = "Wrong answer: the extracted answer does not match the expected pattern."

    def _pattern(self, reference: str) -> str:
        return self.params.pattern or reference

    def score(self, candidate: str, reference: str) -> float:
        return regex_score(candidate, self._pattern(reference), self.params.ignore_case)

    def uses_reference(self) -> bool:
        return not self.params.pattern  # a pattern param was compiled when the config was built

    def _reference_problem(self, reference: str) -> str | None:
        error = _compile_error(reference, self.params.ignore_case)
        if error is not None:
            return f"Not graded: this row's reference answer is not a valid regular expression ({error})."
        return None

    def reveal_text(self, reference: str) -> str:
        return f"any text matching /{self._pattern(reference)}/"


def math_timeout(timeout_s: int, on_main_thread: bool) -> int | None:
    """math-verify's time limit: it uses signal.alarm, which only the main thread may set (elsewhere it raises),
    so off the main thread there is none; 0 also means none. (The alarm replaces any other pending SIGALRM.)"""
    return timeout_s if timeout_s > 0 and on_main_thread else None


class MathVerifier(_AnswerVerifier):
    """Equivalence by math-verify (HuggingFace): both sides parsed as LaTeX (wrapped in $...$, so a bare
    "\\frac{1}{2}" or "x^2+1" is read) or else as a plain expression, then compared symbolically and numerically."""

    name = "math"
    params: MathParams

    def __init__(self, params: MathParams, path: str = "math"):
        super().__init__(params)
        self._mv = _import_math_verify(path)

    def _timeout(self) -> int | None:
        return math_timeout(self.params.timeout_s, threading.current_thread() is threading.main_thread())

    def _parse(self, text: str) -> list[Any]:
        return _math_parse(self._mv, text, self._timeout())

    def score(self, candidate: str, reference: str) -> float:
        gold, pred = self._parse(reference), self._parse(candidate)
        if not gold or not pred:
            return 0.0
        return 1.0 if self._mv.verify(gold, pred, timeout_seconds=self._timeout()) else 0.0

    def _reference_problem(self, reference: str) -> str | None:
        if not self._parse(reference):
            return f"Not graded: this row's reference answer {truncate(reference, 80)!r} could not be read as " \
                   "mathematics."
        return None

    def wrong_headline(self, candidate: str) -> str:
        if not self._parse(candidate):
            return "Wrong answer: the extracted answer could not be read as mathematics."
        return WRONG_ANSWER


@functools.lru_cache(maxsize=4096)
def _math_parse_cached(mv: Any, text: str, timeout: int | None) -> tuple[Any, ...]:
    parsed = mv.parse(f"${text}$", parsing_timeout=timeout)
    return tuple(parsed or mv.parse(text, parsing_timeout=timeout))


def _math_parse(mv: Any, text: str, timeout: int | None) -> list[Any]:
    """math-verify's parse of `text` (cached: a reference is parsed once per row, not once per rollout)."""
    if not text.strip():
        return []
    return list(_math_parse_cached(mv, text, timeout))


def _import_math_verify(path: str) -> Any:
    try:
        return importlib.import_module("math_verify")
    except ImportError:
        raise ConfigError(f"{path}: the math verifier needs the math-verify package: {MATH_INSTALL}") from None


# ---------------------------------------------------------------------------------------------- registry


VERIFIERS: dict[str, type] = {
    "exact": ExactParams,
    "numeric": NumericParams,
    "mcq": McqParams,
    "regex": RegexParams,
    "math": MathParams,
}
_CLASSES: dict[str, type[_AnswerVerifier]] = {
    "exact": ExactVerifier,
    "numeric": NumericVerifier,
    "mcq": McqVerifier,
    "regex": RegexVerifier,
    "math": MathVerifier,
}


def make_verifier(name: str, params: dict[str, Any], path: str) -> Verifier:
    """The built-in verifier `name` with `params` (plain data, as YAML holds it), checked as a config section:
    an unknown name (with the nearest known one), an unknown key, a wrong type or value, or a missing optional
    package raises a one-line ConfigError naming `path` (e.g. "env.tasks[0].params.rewards[1]") or `path.key`."""
    if not isinstance(name, str) or name not in VERIFIERS:
        near = difflib.get_close_matches(name, sorted(VERIFIERS), n=1) if isinstance(name, str) else []
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"{path}: unknown verifier {name!r} ({hint}known: {', '.join(sorted(VERIFIERS))})")
    if params is None:
        params = {}
    if name == "math":
        _import_math_verify(path)  # before the params: installing the package is the first thing to fix
    typed = build_dataclass(VERIFIERS[name], params, path)
    if name == "math":
        return MathVerifier(typed, path)
    return _CLASSES[name](typed)

