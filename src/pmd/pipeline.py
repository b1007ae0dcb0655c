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
from .config import RunConfig
from .dist import Ranks
from .envs import EnvironmentSuite
from .eval_model import evaluate_model
from .preflight import preflight
from .rundir import RunDirLock, atomic_write_text, prepare_start

logger = logging.getLogger(__name__)


def run_evaluation(cfg: RunConfig, memory_db: str | None = None) -> dict:
    suite = EnvironmentSuite.from_config(cfg.env)
    return evaluate_model(cfg, suite, cfg.model.name_or_path, memory_db, ranks=Ranks.for_run(cfg.train.trl))


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
        base = evaluate_model(cfg, suite, cfg.model.name_or_path, ranks=ranks)
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
