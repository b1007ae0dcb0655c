"""A rollout with its verdict, as the step's phases pass it on (step.py's `score` makes them).

TRL calls reward functions with the decoded completions plus every dataset column and keeps one float per rollout.
The teacher and the memory need more than the float: the verdict's feedback text and whether it passed. TRL's own
`privileged_context` column is per dataset row, so it cannot describe a particular rollout: the verdicts travel on
the step's record instead (step.StepRecord), by value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .envs import Problem, Verdict


@dataclass
class Judged:
    """One rollout with its problem and the environment's verdict on it."""

    problem: Problem
    response: str
    verdict: Verdict


def completion_text(completion) -> str:
    """TRL passes conversational completions as [{'role': 'assistant', 'content': ...}]; plain ones as str."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def failure_feedback(judged: list[Judged]) -> list[str | None]:
    """Feedback for each rollout, None where it passed (SDPO reprompts with feedback only on failures)."""
    return [None if j.verdict.passed else j.verdict.feedback for j in judged]


TRL_REWARD_KWARGS = ("trainer_state", "log_extra", "log_metric")
