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


def is_success(reward: float, passed: bool, threshold: float) -> bool:
    """Whether a rollout is a success for the teacher and the memory: it reached `train.success_reward_threshold`
    (what makes it a sibling's demonstration in SDPO's rule) or the verifier passed it.

    Why one rule: a reply with the right value but not the required format earns lenient credit (`lenient_credit`),
    which can reach the threshold. SDPO then shows it to a sibling's teacher as a correct solution; if its own
    feedback, its memory label or its retrieval line called it a failure, the teacher would be told both (issue 25:
    "A past attempt that failed (...): 5 + 2 = 7"). The strict `passed` bit stays what accuracy reports."""
    return bool(passed) or float(reward) >= threshold


def failure_feedback(judged: list[Judged], threshold: float) -> list[str | None]:
    """Feedback for each rollout, None where it is a success (`is_success`): SDPO reprompts with feedback only on
    failures, and a rollout good enough to be a sibling's demonstration is not one."""
    return [None if is_success(j.verdict.reward, j.verdict.passed, threshold) else j.verdict.feedback
            for j in judged]


TRL_REWARD_KWARGS = ("trainer_state", "log_extra", "log_metric")
