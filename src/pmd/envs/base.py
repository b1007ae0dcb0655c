"""The Environment protocol: where problems come from and how a response is judged.

Every environment yields `Problem`s for a split and turns a response into a `Verdict`: a scalar reward for the
optimiser plus textual feedback a model can learn from (the self-teacher and the memory both read it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Problem:
    """One task instance. `uid` is stable across runs (family + split + seed + index) and keys the memory."""

    uid: str
    family: str
    question: str
    answer: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """How a response fared: `reward` in [0, 1], `feedback` for the model, and structured details for logs/memory.

    `passed` is the strict success bit (format followed and answer correct). `extracted` is what the verifier read
    as the answer (None when nothing could be extracted). `format_ok` says whether the strict answer format was used.
    `failure_kind` says why it failed, one of `pmd.memory.records.FAILURE_KINDS` ("" when passed): memory stores
    it with the experience so reflection and consolidation never re-parse the feedback prose.
    `feedback` starts with a verdict headline that names how the response failed ("Wrong answer: ...") and keeps
    problem-specific values out of that first sentence (or quoted): the reflector keys recurring lessons on it.
    """

    reward: float
    passed: bool
    feedback: str
    extracted: str | None = None
    format_ok: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    failure_kind: str = ""


@runtime_checkable
class Environment(Protocol):
    """Problems by split and a verifier. Implementations must be deterministic given their config."""

    name: str

    def problems(self, split: str) -> list[Problem]:
        """Problems of `split` ("train" or "eval"); train and eval never share a question."""
        ...

    def verify(self, problem: Problem, response: str) -> Verdict:
        """Judge `response` to `problem`. Must never raise on arbitrary model text."""
        ...

    def format_prompt(self, problem: Problem) -> str:
        """The user message the student sees (no memory, no feedback)."""
        ...
