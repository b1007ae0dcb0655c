"""End-to-end jobs the CLI runs: evaluate base -> train -> evaluate trained (memory-free) -> report.

The run directory is the run's whole state: resolved config, metrics.jsonl, memory.sqlite, checkpoints/,
final/ weights, eval_*.json, summary.json and report.md. Everything that can be checked (model, datasets, memory
seed, whether the directory already holds a run) is checked before any of it is written, so a bad input leaves
the disk as it was. `resume=True` continues from the last complete checkpoint (see rundir.py).

Under torchrun / accelerate launch every rank runs these jobs: every rank checks the inputs (read-only), the main
process alone decides about and writes the run directory, and evaluation is sharded over the ranks and gathered.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .checkpoint import last_complete_checkpoint
from .config import RunConfig, check_training_set
from .dist import Ranks
from .envs import EnvironmentSuite
from .errors import DatasetError, PMDError
from .models import (MODEL_REFLECTORS_NOT, check_models, check_prompt_renders, load_model_and_tokenizer,
                     resolve_model)
from .precision import autocast, run_precision
from .prompts import student_messages
from .rundir import RunDirLock, atomic_write_text, check_run_dir, prepare_start

logger = logging.getLogger(__name__)


def _evaluate_model(cfg: RunConfig, suite: EnvironmentSuite, model_name: str, memory_db: str | None = None,
                    ranks: Ranks | None = None, show_progress: bool = True) -> dict:
    """Load `model_name` on this rank's device and evaluate its share of the held-out problems (every rank calls
    this; every rank gets the whole result)."""
    import gc

    import torch
    from accelerate import PartialState

    from .evaluate import evaluate

    ranks = ranks or Ranks()
    device = str(PartialState().device) if ranks.distributed else None
    precision = run_precision(cfg)  # as the trained policy is evaluated: storage dtype, the run's autocast
    model, tokenizer = load_model_and_tokenizer(model_name, precision.storage, device=device)
    memory_for = None
    store = None
    if cfg.eval.memory_at_inference:
        memory_for, store = _memory_prompt(cfg, suite, memory_db, tokenizer)
    try:
        with autocast(precision, next(model.parameters()).device):
            return evaluate(model, tokenizer, suite, suite.problems("eval"), cfg.eval, cfg.env.system_prompt,
                            memory_for=memory_for, seed=cfg.train.seed, show_progress=show_progress, ranks=ranks)
    finally:
        if store is not None:
            store.close()
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the trainer loads its own copy next


def _memory_prompt(cfg: RunConfig, suite: EnvironmentSuite, memory_db: str | None, tokenizer):
    from .memory.retrieve import retrieve
    from .memory.store import MemoryStore

    if not memory_db:
        raise PMDError("eval.memory_at_inference needs --memory PATH (a run's memory.sqlite)")
    store = MemoryStore.open_existing(memory_db, read_only=True)  # evaluation reads memory, never writes it

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return (lambda p: retrieve(store, p, count, cfg.memory.retrieval, prompt=suite.format_prompt(p)).text), store


def run_evaluation(cfg: RunConfig, memory_db: str | None = None) -> dict:
    suite = EnvironmentSuite.from_config(cfg.env)
    return _evaluate_model(cfg, suite, cfg.model.name_or_path, memory_db, ranks=Ranks.for_run(cfg.train.trl))


def preflight(cfg: RunConfig, world_size: int = 1) -> tuple[str, EnvironmentSuite]:
    """Check the model, the environments' data, the memory seed, the integrations' packages and TRL's own checks of
    its arguments (the batch split over `world_size` ranks included) before anything is written; returns the
    resolved model path and the environment suite."""
    from .trl_args import check_integrations, trl_config

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
    if cfg.memory.load_from:
        from .memory.store import MemoryStore

        MemoryStore.check(cfg.memory.load_from)
    return model_path, suite


def check_prompts_render(cfg: RunConfig, model_path: str, suite: EnvironmentSuite) -> None:
    """The first training problem's prompt, as the student sees it, through the policy's chat template, and through
    a model reflector's (which writes its reflections from prompts with the same turns): a template that cannot
    render fails here, before the run directory exists, and not at the first generation."""
    first = suite.problems("train")[0]
    messages = student_messages(suite.system_prompt(first, cfg.env.system_prompt), suite.format_prompt(first))
    check_prompt_renders(model_path, messages)
    if cfg.train.algo == "pmd" and cfg.memory.reflector not in MODEL_REFLECTORS_NOT:
        check_prompt_renders(resolve_model(cfg.memory.reflector), messages, "memory.reflector")


def run_training(cfg: RunConfig, evaluate_models: bool = True, resume: bool = False) -> dict[str, Any]:
    """Every rank calls this; the main process's summary carries the report path, the others' do not. The main
    process holds the run directory's lock from before its first write until the run ends (or fails)."""
    lock = RunDirLock(cfg.run_dir)
    try:
        return _run_training(cfg, evaluate_models, resume, lock)
    finally:
        lock.release()


def _run_training(cfg: RunConfig, evaluate_models: bool, resume: bool, lock: RunDirLock) -> dict[str, Any]:
    ranks = Ranks.for_run(cfg.train.trl)
    run_dir = Path(cfg.run_dir)
    model_path, suite = preflight(cfg, ranks.world)  # fail fast before any work or write (every rank, read-only)
    start = ranks.on_main(lambda: prepare_start(cfg, run_dir, "yes" if resume else "no", evaluate_models, lock))
    resume_from, extension, need_base = start.resume_from, start.extension, start.evaluate_base
    from .report import write_report
    from .trainer import train

    summary: dict[str, Any] = {"algo": cfg.train.algo, "model": cfg.model.name_or_path}
    if extension is not None:
        summary["extended"] = extension
    eval_seconds = 0.0
    if need_base:
        t0 = time.time()
        base = _evaluate_model(cfg, suite, cfg.model.name_or_path, ranks=ranks)
        eval_seconds += time.time() - t0
        if ranks.is_main:
            atomic_write_text(run_dir / "eval_base.json", json.dumps(base, indent=2))
    t0 = time.time()
    summary.update(train(cfg, run_dir, model_path, suite, resume_from=resume_from, ranks=ranks,
                         eval_every=cfg.eval.every_steps, evaluate_trained=evaluate_models))
    trained = summary.pop("eval_trained", None)
    trained_seconds = summary.pop("eval_trained_seconds", 0.0)
    eval_seconds += trained_seconds
    summary["train_seconds"] = time.time() - t0 - trained_seconds
    if not ranks.is_main:
        return summary
    if trained is not None:
        trained["step"] = summary["steps"]  # the weights evaluated: the report names them by step
        atomic_write_text(run_dir / "eval_trained.json", json.dumps(trained, indent=2))
        base = json.loads((run_dir / "eval_base.json").read_text())
        summary["base_greedy_accuracy"] = base["overall"]["greedy_accuracy"]
        summary["trained_greedy_accuracy"] = trained["overall"]["greedy_accuracy"]
    summary["eval_seconds"] = eval_seconds
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    summary["report"] = str(write_report(run_dir))
    return summary


def _last_checkpoint(run_dir: Path) -> str | None:
    """The last complete checkpoint of `run_dir` (partial ones from a kill mid-save are skipped), as a string."""
    ckpt = last_complete_checkpoint(run_dir)
    return str(ckpt) if ckpt else None
