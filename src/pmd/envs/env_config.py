"""The run config's `env` section (`EnvConfig`, with its `TaskConfig` list): which task families a run trains and
evaluates on, and how many problems of each.

Declared here, beside the environments that read it (as each kind's params class is), rather than in pmd.config:
pmd.config builds and re-exports these classes, and checks each task's params against its kind through pmd.envs, so
pmd.envs must not import pmd.config (the import circle this ends ran through twelve modules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..config_fields import MAX_PROBLEMS, PROBLEMS_EXPECT, _f, check_section
from ..prompts import ANSWER_INSTRUCTION


@dataclass
class TaskConfig:
    kind: Literal["reasoning_gym", "code", "sciknoweval", "dataset"] = _f(
        "reasoning_gym", "Environment kind (dataset: your own data and rewards).")
    name: str = _f("", "reasoning-gym dataset name (required for that kind), or a label for the other kinds.")
    params: dict[str, Any] = _f({}, "Options of this kind, typed per kind: pmd.envs ReasoningGymParams (plus the "
                                    "generator's own keys), CodeParams, SciKnowEvalParams, DatasetParams.")

    def __post_init__(self) -> None:
        # Types only: a task's params are checked against its kind when the run config loads (pmd.config) and when
        # its environment is made (make_environment), both of which know where the task sits (env.tasks[i]).
        check_section(self, "env.tasks[i]")


@dataclass
class EnvConfig:
    tasks: list[TaskConfig] = _f([], "Task families to train and evaluate on (default: basic_arithmetic).")
    train_size: int = _f(64, "Training problems per task family.", gt=0, le=MAX_PROBLEMS, expect=PROBLEMS_EXPECT)
    eval_size: int = _f(32, "Held-out problems per task family.", gt=0, le=MAX_PROBLEMS, expect=PROBLEMS_EXPECT)
    seed: int = _f(0, "Seed of the problem generators; eval uses a disjoint derived seed.", ge=0)
    reveal_answer_in_feedback: bool = _f(False, "Put the gold answer into verifier feedback (leaks the label).")
    system_prompt: str = _f("", "System message the student (and teacher) sees ('' = the model's default).")
    answer_instruction: str = _f(
        ANSWER_INSTRUCTION,
        "reasoning-gym: appended to each question, the answer format graded strictly (code/sciknoweval have their "
        "own; a dataset task uses its prompts verbatim unless its params.answer_instruction says otherwise).",
    )

    def __post_init__(self) -> None:
        if not self.tasks:
            self.tasks = [TaskConfig(name="basic_arithmetic")]
        check_section(self, "env")
