"""Insights by reflection: per problem, turn attempts + verifier feedback into strategies and lessons.

Both sources implement one `Reflector` protocol (attempts by problem + questions in, drafts out), chosen by
`memory.reflector`:
- `FeedbackStatsReflector` (deterministic): reads verdict statistics (format misses, repeated wrong answers,
  what the passing attempts did). For models too small to reflect usefully, e.g. the 135M default.
- `ModelReflector`: a language model (the policy itself by default, or a separate reflector) reads its passing and
  failing attempts and writes `Strategy:` / `Lesson:` lines. Output is parsed strictly and unusable lines are
  dropped; the acceptance rate is reported so a run shows whether reflection is doing anything.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..prompts import reflection_messages
from .store import Experience
from .text import normalize_text, tokenize

MIN_WORDS, MAX_WORDS = 4, 60
COPY_OVERLAP = 0.8  # token-set Jaccard above which a line is considered copied from the problem or an attempt


@dataclass(frozen=True)
class InsightDraft:
    kind: str  # "strategy" | "lesson"
    text: str
    experience_ids: tuple[int, ...]


@dataclass
class ReflectionResult:
    insights: list[InsightDraft] = field(default_factory=list)
    proposed: int = 0  # lines the reflector produced
    accepted: int = 0  # lines that survived parsing and filtering
    rejected_reasons: Counter = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class Reflector(Protocol):
    """Turns each problem's recent attempts into insight drafts. `name` is stored as the insights' source."""

    name: str

    def reflect(self, attempts: Mapping[str, list[Experience]],
                questions: Mapping[str, str] | None = None) -> ReflectionResult:
        """`attempts` and `questions` are keyed by problem uid; a missing question falls back to the stored prompt."""
        ...


# ------------------------------------------------------------------------------------------- deterministic


def _answer_of(exp: Experience) -> str | None:
    m = re.search(r"Extracted answer: '(.*?)'\.", exp.feedback or "")
    return m.group(1) if m else None


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def failure_signature(feedback: str) -> str:
    """The first sentence of verifier feedback (its verdict headline) with quoted values and numbers masked.

    Environments lead their feedback with the failure ("Wrong answer: ...", "No gradable answer: ...", "Wrong answer
    on test 3/5."), so two failures with the same signature failed the same way regardless of the problem, which is
    what makes the resulting lesson recur across problems.
    """
    first = re.split(r"(?<=[.!?])\s", (feedback or "").strip(), maxsplit=1)[0]
    return _NUM.sub("N", _QUOTED.sub("'...'", first)).strip()


class FeedbackStatsReflector:
    """Lessons and strategies from verdict statistics alone (no generation, deterministic).

    Lessons: a failure signature shared by at least half of the failed attempts, and a wrong answer repeated
    twice or more. Strategies: what the passing attempts did (shortest passing answer). The texts are templated,
    so the same behaviour on different problems yields the same sentence and consolidation can see it recur.
    """

    name = "feedback-stats"

    def reflect(self, attempts: Mapping[str, list[Experience]],
                questions: Mapping[str, str] | None = None) -> ReflectionResult:
        """Deterministic: reads only the attempts' verdicts and feedback (`questions` is not needed)."""
        result = ReflectionResult()
        for _, exps in sorted(attempts.items()):
            for draft in self._one(exps):
                result.proposed += 1
                result.accepted += 1
                result.insights.append(draft)
        return result

    def _one(self, exps: list[Experience]) -> list[InsightDraft]:
        drafts: list[InsightDraft] = []
        passed = [e for e in exps if e.passed]
        failed = [e for e in exps if not e.passed]
        ids = lambda es: tuple(e.id for e in es if e.id is not None)  # noqa: E731
        signatures = Counter(failure_signature(e.feedback) for e in failed if e.feedback)
        for signature, count in signatures.most_common(1):
            if signature and count * 2 >= len(failed) and count >= 2:
                drafts.append(InsightDraft(
                    "lesson", f"A recurring failure to avoid: {signature}",
                    ids([e for e in failed if failure_signature(e.feedback) == signature]),
                ))
        wrong = Counter(a for a in (_answer_of(e) for e in failed) if a is not None)
        for answer, count in wrong.most_common(1):
            if count >= 2:
                drafts.append(InsightDraft(
                    "lesson",
                    f"The answer {answer} was given {count} times and is wrong; recheck the computation.",
                    ids([e for e in failed if _answer_of(e) == answer]),
                ))
        if passed:
            # Problem-specific: quotes the shortest passing response (its numbers keep it from merging across problems).
            short = min(passed, key=lambda e: len(e.response))
            text = "A short attempt that passed: " + " ".join(short.response.split())[:160]
            drafts.append(InsightDraft("strategy", text, ids([short])))
            drafts.append(InsightDraft(
                "strategy", "Passing attempts worked the problem out and stated the result in the required format.",
                ids(passed),
            ))
        return drafts


# ------------------------------------------------------------------------------------------- model-written

_LINE = re.compile(r"^\s*[-*\d.)]*\s*\**(strategy|lesson)\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE)


def parse_reflection(text: str, question: str, responses: list[str]) -> tuple[list[tuple[str, str]], Counter]:
    """Strictly parse `Strategy:`/`Lesson:` lines; drop empty, too short/long, or copied lines.

    Returns the accepted (kind, text) pairs and a Counter of rejection reasons (one count per proposed line that
    was dropped, plus "no_lines" when nothing parseable was written).
    """
    accepted: list[tuple[str, str]] = []
    reasons: Counter = Counter()
    matches = [_LINE.match(line) for line in (text or "").splitlines()]
    matches = [m for m in matches if m]
    if not matches:
        reasons["no_lines"] += 1
        return accepted, reasons
    sources = [set(tokenize(question))] + [set(tokenize(r)) for r in responses]
    seen = set()
    for m in matches:
        kind, body = m.group(1).lower(), m.group(2).strip().strip('"').strip()
        words = body.split()
        tokens = set(tokenize(body))
        if len(words) < MIN_WORDS:
            reasons["too_short"] += 1
        elif len(words) > MAX_WORDS:
            reasons["too_long"] += 1
        elif any(tokens and src and len(tokens & src) / len(tokens | src) >= COPY_OVERLAP for src in sources):
            reasons["copied"] += 1
        elif normalize_text(body) in seen:
            reasons["duplicate"] += 1
        else:
            seen.add(normalize_text(body))
            accepted.append(("strategy" if kind == "strategy" else "lesson", body))
    return accepted, reasons


class ModelReflector:
    """Reflection written by a model: the policy itself, or a separate reflector model.

    `generate(list_of_chat_prompts) -> list_of_texts` does the (batched) generation, so this class stays
    independent of how and where the model runs."""

    def __init__(self, generate: Callable[[list[list[dict]]], list[str]], system_prompt: str = "", name: str = "policy"):
        self.generate = generate
        self.system_prompt = system_prompt
        self.name = name

    def prompts(self, attempts: Mapping[str, list[Experience]], questions: Mapping[str, str]) -> list[list[dict]]:
        return [reflection_messages(questions.get(uid, exps[0].prompt), exps, self.system_prompt)
                for uid, exps in sorted(attempts.items())]

    def reflect(self, attempts: Mapping[str, list[Experience]],
                questions: Mapping[str, str] | None = None) -> ReflectionResult:
        questions = questions or {}
        uids = sorted(attempts)
        texts = self.generate(self.prompts(attempts, questions)) if uids else []
        result = ReflectionResult()
        for uid, text in zip(uids, texts, strict=True):
            exps = attempts[uid]
            accepted, reasons = parse_reflection(text, questions.get(uid, exps[0].prompt), [e.response for e in exps])
            proposed = len(accepted) + sum(v for k, v in reasons.items() if k != "no_lines") or 1
            result.proposed += proposed
            result.accepted += len(accepted)
            result.rejected_reasons.update(reasons)
            for kind, body in accepted:
                source = [e for e in exps if e.passed == (kind == "strategy")] or exps
                result.insights.append(InsightDraft(kind, body, tuple(e.id for e in source if e.id is not None)))
        return result
