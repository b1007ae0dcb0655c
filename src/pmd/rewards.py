"""Bridge from an Environment to TRL's reward-function interface, and the hand-off of each rollout's verdict.

TRL calls reward functions with the decoded completions plus every dataset column; we look the problem up by
`problem_uid`, verify, and return one float per rollout. The teacher and the memory need more than the float: the
verdict's feedback text and whether it passed. TRL's reward interface returns floats only and its own
`privileged_context` column is per dataset row, so it cannot describe a particular rollout. The verdicts of the
batch just scored are therefore handed over explicitly: the teacher-context builder, which TRL calls right after
the rewards of the same batch (tests/test_trl_contract.py pins that order), calls `take_verdicts` once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .envs import EnvironmentSuite, Problem, Verdict


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


class EnvironmentReward:
    """Callable reward for TRL trainers (this process's rollouts); keeps their verdicts for `take_verdicts`."""

    __name__ = "env_reward"

    def __init__(self, suite: EnvironmentSuite):
        self.suite = suite
        self._pending: list[Judged] | None = None

    def __call__(self, prompts, completions, problem_uid, completion_ids=None, **kwargs) -> list[float]:
        problems = [self.suite.problem(uid) for uid in problem_uid]
        responses = [completion_text(c) for c in completions]
        # TRL's extra reward arguments reach your own reward functions (dataset tasks) unchanged
        trl_kwargs = {k: kwargs[k] for k in TRL_REWARD_KWARGS if k in kwargs}
        verdicts = self.suite.verify_batch(problems, responses, completion_ids, trl_kwargs)
        judged = [Judged(p, r, v) for p, r, v in zip(problems, responses, verdicts, strict=True)]
        self._pending = judged
        return [j.verdict.reward for j in judged]

    def take_verdicts(self, n: int) -> list[Judged]:
        """The verdicts of the batch scored last (this process's `n` rollouts), handed over once. Fails loudly if
        the builder and the reward disagree on the batch, rather than pairing rollouts with the wrong verdicts."""
        judged, self._pending = self._pending, None
        if judged is None or len(judged) != n:
            got = "none" if judged is None else str(len(judged))
            raise RuntimeError(f"expected the verdicts of {n} rollouts just scored, found {got}: TRL's order of "
                               "reward and teacher context changed (see tests/test_trl_contract.py)")
        return judged
