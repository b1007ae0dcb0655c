"""Preflight: everything about a run that can be checked is checked before anything is written.

The run directory (can it hold a run), the integrations' packages, TRL's own checks of its arguments, the models,
the environments' data, that the prompts render through the chat templates, and the memory seed. Every rank runs
it, read-only, so a bad input stops every rank with the same one line and leaves the disk as it was.
"""

from __future__ import annotations

from pathlib import Path

from .config import RunConfig, check_training_set
from .envs import EnvironmentSuite
from .errors import DatasetError
from .models import MODEL_REFLECTORS_NOT, check_models, check_prompt_renders, resolve_model
from .prompts import student_messages
from .rundir import check_run_dir


def preflight(cfg: RunConfig, world_size: int = 1) -> tuple[str, EnvironmentSuite]:
    """Check the model, the environments' data, the memory seed, the integrations' packages and TRL's own checks of
    its arguments (the batch split over `world_size` ranks included) before anything is written; returns the
    resolved model path and the environment suite."""
    from .integrations import check_integrations
    from .trl_args import trl_config

    check_run_dir(cfg.run_dir)  # "" (the current directory), /proc/..., a file or a read-only place: refused
    run_dir = Path(cfg.run_dir)
    check_integrations(cfg)
    trl_config(cfg, str(run_dir / "checkpoints"), world_size=world_size)  # builds TRL's args; writes nothing
    model_path = check_models(cfg)  # the policy (its lengths fitted) and a model reflector
    suite = EnvironmentSuite.from_config(cfg.env)
    if not suite.problems("train"):
        raise DatasetError("env.tasks: no training problems (check the tasks' datasets and env.train_size)")
    check_training_set(cfg.train, len(suite.problems("train")))
    check_prompts_render(cfg, model_path, suite)
    check_success_threshold(cfg, suite)
    if cfg.memory.load_from:
        from .memory.store import MemoryStore

        MemoryStore.check(cfg.memory.load_from)
    return model_path, suite


def check_prompts_render(cfg: RunConfig, model_path: str, suite: EnvironmentSuite) -> None:
    """The first training problem's prompt, as the student sees it, through the policy's chat template, and through
    a model reflector's (which writes its reflections from prompts with the same turns): a template that cannot
    render fails here, before the run directory exists, and not at the first generation."""
    messages = first_messages(cfg, suite)
    check_prompt_renders(model_path, messages)
    if cfg.train.algo == "pmd" and cfg.memory.reflector not in MODEL_REFLECTORS_NOT:
        check_prompt_renders(resolve_model(cfg.memory.reflector), messages, "memory.reflector")


def first_messages(cfg: RunConfig, suite: EnvironmentSuite) -> list[dict[str, str]]:
    """The first training problem's chat turns, as the student gets them (trainer.build_dataset builds the same)."""
    first = suite.problems("train")[0]
    return student_messages(suite.system_prompt(first, cfg.env.system_prompt), suite.format_prompt(first))


def first_prompt(cfg: RunConfig, model_path: str, suite: EnvironmentSuite) -> str:
    """The first training prompt exactly as the student reads it: its turns through the policy's chat template, with
    the assistant's turn opened (add_generation_prompt, as TRL and evaluation render it). Checked to render above."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return tokenizer.apply_chat_template(first_messages(cfg, suite), add_generation_prompt=True, tokenize=False)


def check_success_threshold(cfg: RunConfig, suite: EnvironmentSuite) -> None:
    """SDPO and PMD take a rollout whose reward reaches `train.success_reward_threshold` as a success, whose reply
    teaches its siblings; a threshold above what a dataset task's rewards reach (dataset.Reachable: its reference
    answers scored by every term on the first rows) leaves that task without a success all run. Refused where only
    verifiers judge, a warning where a function may score real replies higher (dataset.check_reachable)."""
    if cfg.train.algo == "grpo":  # GRPO has no teacher: the threshold is not used
        return
    from .envs.dataset import check_reachable

    for env in suite.environments.values():
        reachable = getattr(env, "reachable", None)
        if reachable is not None:
            check_reachable(cfg.train.success_reward_threshold, "train.success_reward_threshold",
                            "the reward at which SDPO and PMD take a rollout as a success", reachable, env.name)
