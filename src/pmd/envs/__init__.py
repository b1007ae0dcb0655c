"""Environments: problems by split and verifiers with textual feedback. `EnvironmentSuite` joins task families."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config_fields import build_dataclass
from ..errors import ConfigError
from .base import Environment, Problem, Verdict
from .env_config import EnvConfig, TaskConfig

if TYPE_CHECKING:
    from .code import CodeParams
    from .dataset import DatasetParams
    from .reasoning_gym import ReasoningGymParams
    from .sciknoweval import SciKnowEvalParams

__all__ = ["EnvConfig", "Environment", "EnvironmentSuite", "Problem", "TaskConfig", "Verdict", "make_environment",
           "task_params"]


def task_params(task: TaskConfig, env_cfg: EnvConfig,
                path: str) -> ReasoningGymParams | CodeParams | SciKnowEvalParams | DatasetParams:
    """The `params` of task `path` (e.g. "env.tasks[0]") as its kind's typed dataclass, with the env-wide values
    (seed, the task's name, reveal_answer_in_feedback) filled in where the task leaves them. Validated by the config
    machinery, so errors name the dotted key (`env.tasks[0].params.reward: ...`). Imports the kind's module lazily."""
    _require_name(task, path)
    if not isinstance(task.params, dict):
        raise ConfigError(f"{path}.params: expected a mapping, got {type(task.params).__name__}")
    if task.kind == "reasoning_gym":
        from .reasoning_gym import reasoning_gym_params

        return reasoning_gym_params(task.name, task.params, f"{path}.params", f"{path}.name")
    data: dict[str, Any] = {"seed": env_cfg.seed, **({"name": task.name} if task.name else {}), **task.params}
    if task.kind == "code":
        from .code import CodeParams

        return build_dataclass(CodeParams, data, f"{path}.params")
    if task.kind == "sciknoweval":
        from .sciknoweval import SciKnowEvalParams

        data = {"reveal_answer_in_feedback": env_cfg.reveal_answer_in_feedback, **data}
        return build_dataclass(SciKnowEvalParams, data, f"{path}.params")
    if task.kind == "dataset":
        from .dataset import DatasetParams

        return build_dataclass(DatasetParams, data, f"{path}.params")
    raise ConfigError(f"{path}.kind: unknown task kind '{task.kind}'")  # unreachable after config validation


def _require_name(task: TaskConfig, path: str) -> None:
    if task.kind == "reasoning_gym" and not task.name:
        raise ConfigError(f"{path}.name: a reasoning_gym task needs a name (e.g. basic_arithmetic)")


def make_environment(task: TaskConfig, env_cfg: EnvConfig, path: str = "env.tasks") -> Environment:
    """Build one environment from its task config `path` (imports lazily: code/sciknoweval pull in more)."""
    _require_name(task, path)
    try:
        params = task_params(task, env_cfg, path)
    except ConfigError as exc:  # a config loaded from YAML was checked at load; this names a hand-made task
        raise ConfigError(f"{path} ({task.kind} {task.name}): bad params {sorted(task.params or {})}: {exc}") from None
    if task.kind == "reasoning_gym":
        from .reasoning_gym import ReasoningGymEnvironment

        return ReasoningGymEnvironment(
            task.name,
            params,
            train_size=env_cfg.train_size,
            eval_size=env_cfg.eval_size,
            seed=env_cfg.seed,
            reveal_answer_in_feedback=env_cfg.reveal_answer_in_feedback,
            answer_instruction=env_cfg.answer_instruction,
        )
    if task.kind == "code":
        from .code import CodeEnvironment

        return CodeEnvironment(params)
    if task.kind == "dataset":
        from .dataset import DatasetEnvironment

        return DatasetEnvironment(params, reveal_answer_in_feedback=env_cfg.reveal_answer_in_feedback, where=path)
    from .sciknoweval import SciKnowEvalEnvironment

    return SciKnowEvalEnvironment(params)


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
        return cls([make_environment(task, env_cfg, f"env.tasks[{i}]") for i, task in enumerate(env_cfg.tasks)])

    def problems(self, split: str) -> list[Problem]:
        return [p for env in self.environments.values() for p in env.problems(split)]

    def problem(self, uid: str) -> Problem:
        return self._by_uid[uid]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return self._env_of[problem.uid].verify(problem, response)

    def verify_batch(self, problems: list[Problem], responses: list[str], completion_ids: list[Any] | None = None,
                     trl_kwargs: dict[str, Any] | None = None) -> list[Verdict]:
        """Verdicts in order. An environment with `verify_batch` (your own reward functions, which TRL calls per
        batch) gets its problems in one call, with the token ids and TRL's extra reward arguments."""
        out: list[Verdict | None] = [None] * len(problems)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(problems):
            groups.setdefault(self._env_of[p.uid].name, []).append(i)
        for name, idx in groups.items():
            env = self.environments[name]
            batch = getattr(env, "verify_batch", None)
            if batch is None:
                verdicts = [env.verify(problems[i], responses[i]) for i in idx]
            else:
                ids = [completion_ids[i] for i in idx] if completion_ids is not None else None
                verdicts = batch([problems[i] for i in idx], [responses[i] for i in idx], ids, trl_kwargs)
            for i, v in zip(idx, verdicts, strict=True):
                out[i] = v
        return out  # type: ignore[return-value]

    def system_prompt(self, problem: Problem, default: str) -> str:
        """The problem's own system turn (a dataset row's chat messages), else the run's `env.system_prompt`."""
        return problem.metadata.get("system_prompt") or default

    def reward_failures(self) -> dict[str, int]:
        """Reward-function failures so far, by 'function: exception type' (your own functions only)."""
        return {k: v for env in self.environments.values() for k, v in getattr(env, "failures", {}).items()}

    def judge_errors(self) -> dict[str, int]:
        """Exceptions met while judging the policy's output, by type (each scored 0 with failure kind `other`)."""
        out: dict[str, int] = {}
        for env in self.environments.values():
            for k, v in getattr(env, "judge_errors", {}).items():
                out[k] = out.get(k, 0) + v
        return out

    def stop_reason(self) -> str | None:
        """Why training must stop (a reward function raised under `strict: true`), or None."""
        return next((r for env in self.environments.values() if (r := getattr(env, "stop_reason", None))), None)

    def format_prompt(self, problem: Problem) -> str:
        return self._env_of[problem.uid].format_prompt(problem)
