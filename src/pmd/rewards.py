"""Bridge from an Environment to TRL's reward-function interface.

TRL calls reward functions with the decoded completions plus every dataset column; we look the problem up by
`problem_uid`, verify, and keep the verdicts of the last call so the teacher-context builder (which runs right
after rewards in TRL's `_prepare_training_batch`) can read per-rollout textual feedback. TRL's own
`privileged_context` column is per dataset row and so cannot carry feedback about a particular rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

from .envs import EnvironmentSuite, Problem, Verdict


@dataclass
class Judged:
    problem: Problem
    response: str
    verdict: Verdict


def completion_text(completion) -> str:
    """TRL passes conversational completions as [{'role': 'assistant', 'content': ...}]; plain ones as str."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


class EnvironmentReward:
    """Callable reward for TRL trainers; `last` holds the judged rollouts of the latest call (local process)."""

    __name__ = "env_reward"

    def __init__(self, suite: EnvironmentSuite):
        self.suite = suite
        self.last: list[Judged] = []

    def __call__(self, prompts, completions, problem_uid, **_) -> list[float]:
        judged = []
        for uid, completion in zip(problem_uid, completions, strict=True):
            problem = self.suite.problem(uid)
            response = completion_text(completion)
            judged.append(Judged(problem, response, self.suite.verify(problem, response)))
        self.last = judged
        return [j.verdict.reward for j in judged]

    def failure_feedback(self) -> list[str | None]:
        """Feedback for each rollout of the last call, None where it passed (SDPO reprompts only on failures)."""
        return [None if j.verdict.passed else j.verdict.feedback for j in self.last]
