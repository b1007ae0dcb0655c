"""The jobs `pmd train` and `pmd eval` run: command-line choices turned into a run's options, or one evaluation.

`pmd train` is one `run.Run` (lock -> preflight -> prepare the run directory -> evaluate base -> train -> evaluate
trained -> summary -> report), the same lifecycle as every `pmd compare` sub-run; `--resume` continues from the last
complete checkpoint (rundir.start_point), `--no-eval` skips the before/after evaluation. `pmd eval` evaluates one
model memory-free (or with a run's memory, eval.memory_at_inference) on every rank and gathers the result.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig
from .dist import Ranks
from .envs import EnvironmentSuite
from .eval_model import evaluate_model
from .run import Run, RunOptions


def run_training(cfg: RunConfig, evaluate_models: bool = True, resume: bool = False) -> dict[str, Any]:
    """`pmd train`: every rank calls this; the main process's summary carries the report path, the others' do not."""
    return Run(cfg, RunOptions(evaluate_models=evaluate_models, resume="yes" if resume else "no",
                               eval_every=cfg.eval.every_steps))()


def run_evaluation(cfg: RunConfig, memory_db: str | None = None) -> dict:
    """`pmd eval`: `cfg.model`, evaluated on the held-out problems of `cfg.env` (every rank calls this)."""
    suite = EnvironmentSuite.from_config(cfg.env)
    return evaluate_model(cfg, suite, cfg.model.name_or_path, memory_db, ranks=Ranks.for_run(cfg.train.trl))
