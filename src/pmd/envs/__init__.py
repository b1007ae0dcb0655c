"""Environments: problems by split and verifiers with textual feedback. `EnvironmentSuite` joins task families."""

from __future__ import annotations

from ..config import EnvConfig, TaskConfig
from ..errors import ConfigError
from .base import Environment, Problem, Verdict

__all__ = ["Environment", "EnvironmentSuite", "Problem", "Verdict", "make_environment"]


def make_environment(task: TaskConfig, env_cfg: EnvConfig) -> Environment:
    """Build one environment from its task config (imports lazily: code/sciknoweval pull in more)."""
    if task.kind == "reasoning_gym":
        from .reasoning_gym import ReasoningGymEnvironment

        if not task.name:
            raise ConfigError("env.tasks: a reasoning_gym task needs a name (e.g. basic_arithmetic)")
        return ReasoningGymEnvironment(
            task.name,
            task.params,
            train_size=env_cfg.train_size,
            eval_size=env_cfg.eval_size,
            seed=env_cfg.seed,
            reveal_answer_in_feedback=env_cfg.reveal_answer_in_feedback,
            answer_instruction=env_cfg.answer_instruction,
        )
    params = dict(task.params)
    params.setdefault("seed", env_cfg.seed)
    if task.name:
        params.setdefault("name", task.name)
    if task.kind == "code":
        from .code import CodeEnvironment as cls
    elif task.kind == "sciknoweval":
        from .sciknoweval import SciKnowEvalEnvironment as cls

        params.setdefault("reveal_answer_in_feedback", env_cfg.reveal_answer_in_feedback)
    else:
        raise ConfigError(f"unknown task kind '{task.kind}'")  # unreachable after config validation
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"env.tasks ({task.kind} {task.name or ''}): bad params {sorted(task.params)}: {exc}") from None


class EnvironmentSuite:
    """Several task families behind one interface; a problem is verified by the environment that made it."""

    def __init__(self, environments: list[Environment]):
        names = [env.name for env in environments]
        if len(set(names)) != len(names):
            raise ConfigError(f"env.tasks: task names must be unique, got {names}")
        self.environments = {env.name: env for env in environments}
        self._by_uid: dict[str, Problem] = {}
        self._env_of: dict[str, Environment] = {}
        for env in environments:
            for split in ("train", "eval"):
                for problem in env.problems(split):
                    self._by_uid[problem.uid] = problem
                    self._env_of[problem.uid] = env

    @classmethod
    def from_config(cls, env_cfg: EnvConfig) -> "EnvironmentSuite":
        return cls([make_environment(task, env_cfg) for task in env_cfg.tasks])

    def problems(self, split: str) -> list[Problem]:
        return [p for env in self.environments.values() for p in env.problems(split)]

    def problem(self, uid: str) -> Problem:
        return self._by_uid[uid]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return self._env_of[problem.uid].verify(problem, response)

    def format_prompt(self, problem: Problem) -> str:
        return self._env_of[problem.uid].format_prompt(problem)
