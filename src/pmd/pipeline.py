"""End-to-end jobs the CLI runs: evaluate base -> train -> evaluate trained (memory-free) -> report.

The run directory is the run's whole state: resolved config, metrics.jsonl, memory.sqlite, checkpoints/,
final/ weights, eval_*.json, summary.json and report.md.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .config import RunConfig, save_config
from .envs import EnvironmentSuite
from .errors import PMDError
from .models import load_model_and_tokenizer, resolve_model

logger = logging.getLogger(__name__)


def _evaluate_model(cfg: RunConfig, suite: EnvironmentSuite, model_name: str, memory_db: str | None = None) -> dict:
    from .evaluate import evaluate

    model, tokenizer = load_model_and_tokenizer(model_name, cfg.model.dtype)
    memory_for = None
    store = None
    if cfg.eval.memory_at_inference:
        memory_for, store = _memory_prompt(cfg, suite, memory_db, tokenizer)
    try:
        return evaluate(model, tokenizer, suite, suite.problems("eval"), cfg.eval, cfg.env.system_prompt,
                        memory_for=memory_for, seed=cfg.train.seed)
    finally:
        if store is not None:
            store.close()


def _memory_prompt(cfg: RunConfig, suite: EnvironmentSuite, memory_db: str | None, tokenizer):
    from .memory.retrieve import RetrievalConfig, retrieve
    from .memory.store import MemoryStore

    if not memory_db:
        raise PMDError("eval.memory_at_inference needs --memory PATH (a run's memory.sqlite)")
    store = MemoryStore.open_existing(memory_db)
    rcfg = RetrievalConfig(token_budget=cfg.memory.token_budget)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return (lambda p: retrieve(store, p, count, rcfg).text), store


def run_evaluation(cfg: RunConfig, memory_db: str | None = None) -> dict:
    suite = EnvironmentSuite.from_config(cfg.env)
    return _evaluate_model(cfg, suite, cfg.model.name_or_path, memory_db)


def run_training(cfg: RunConfig, evaluate_models: bool = True, resume: bool = False) -> dict[str, Any]:
    from .report import write_report
    from .trainer import train

    run_dir = Path(cfg.run_dir)
    model_path = resolve_model(cfg.model.name_or_path)  # fail fast on a bad model before any work
    suite = EnvironmentSuite.from_config(cfg.env)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    summary: dict[str, Any] = {"algo": cfg.train.algo, "model": cfg.model.name_or_path}
    eval_seconds = 0.0
    if evaluate_models:
        base_path = run_dir / "eval_base.json"
        if not base_path.is_file():
            t0 = time.time()
            base = _evaluate_model(cfg, suite, cfg.model.name_or_path)
            eval_seconds += time.time() - t0
            base_path.write_text(json.dumps(base, indent=2), encoding="utf-8")
    resume_from = _last_checkpoint(run_dir) if resume else None
    if resume and resume_from is None:
        logger.warning("--resume: no checkpoint in %s; starting from scratch", run_dir / "checkpoints")
    t0 = time.time()
    summary.update(train(cfg, run_dir, model_path, suite, resume_from=resume_from))
    summary["train_seconds"] = time.time() - t0
    if evaluate_models:
        t0 = time.time()
        trained = _evaluate_model(cfg, suite, summary["final_model"])
        eval_seconds += time.time() - t0
        (run_dir / "eval_trained.json").write_text(json.dumps(trained, indent=2), encoding="utf-8")
        base = json.loads((run_dir / "eval_base.json").read_text())
        summary["base_greedy_accuracy"] = base["overall"]["greedy_accuracy"]
        summary["trained_greedy_accuracy"] = trained["overall"]["greedy_accuracy"]
    summary["eval_seconds"] = eval_seconds
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    summary["report"] = str(write_report(run_dir, title=f"pmd {cfg.train.algo} run"))
    return summary


def _last_checkpoint(run_dir: Path) -> str | None:
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None
