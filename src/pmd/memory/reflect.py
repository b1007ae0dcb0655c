"""Insights by reflection: per problem, turn attempts + verifier feedback into strategies and lessons.

Two sources, chosen by `memory.reflector`:
- `FeedbackStatsReflector` (deterministic): reads verdict statistics (format misses, repeated wrong answers,
  what the passing attempts did). For models too small to reflect usefully, e.g. the 135M default.
- `ModelReflector`: a language model (the policy itself by default, or a separate reflector) reads its passing and
  failing attempts and writes `Strategy:` / `Lesson:` lines. Output is parsed strictly and unusable lines are
  dropped; the acceptance rate is reported so a run shows whether reflection is doing anything.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

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

    def merge(self, other: "ReflectionResult") -> None:
        self.insights += other.insights
        self.proposed += other.proposed
        self.accepted += other.accepted
        self.rejected_reasons.update(other.rejected_reasons)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


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

    def reflect(self, attempts: dict[str, list[Experience]]) -> ReflectionResult:
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

REFLECTION_PROMPT = """You practised the problem below several times. Study what passed and what failed.

Problem:
{question}

{attempts}
Write at most two short lines, each starting with 'Strategy:' (what led to a correct answer) or 'Lesson:' \
(a recurring mistake to avoid). Write general advice, not the answer itself."""


def format_attempts(exps: list[Experience], max_chars: int = 300) -> str:
    lines = []
    for i, e in enumerate(exps, 1):
        verdict = "PASSED" if e.passed else "FAILED"
        response = e.response.strip().replace("\n", " ")
        if len(response) > max_chars:
            response = response[: max_chars - 3] + "..."
        lines.append(f"Attempt {i} ({verdict}): {response}\nFeedback: {e.feedback}\n")
    return "\n".join(lines)


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
    """Reflection written by a model. `generate(list_of_chat_prompts) -> list_of_texts` is batched by the caller."""

    def __init__(self, generate: Callable[[list[list[dict]]], list[str]], system_prompt: str = "", name: str = "policy"):
        self.generate = generate
        self.system_prompt = system_prompt
        self.name = name

    def prompts(self, attempts: dict[str, list[Experience]], questions: dict[str, str]) -> list[list[dict]]:
        out = []
        for uid, exps in sorted(attempts.items()):
            content = REFLECTION_PROMPT.format(question=questions.get(uid, exps[0].prompt), attempts=format_attempts(exps))
            msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            out.append(msgs + [{"role": "user", "content": content}])
        return out

    def reflect(self, attempts: dict[str, list[Experience]], questions: dict[str, str] | None = None) -> ReflectionResult:
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
