"""Evaluating a model given by name or path: load it on this rank's device, evaluate its share of the held-out
problems, free it again.

`pmd eval` evaluates any model this way, and a run its base model before training (`run.Run.evaluate_base`) and
`pmd compare` once for all its runs. The trained policy is evaluated in place by the trainer instead
(`evaluate.evaluate_policy`), so no rank has to read the final weights back.
"""

from __future__ import annotations

import contextlib
import gc

from .config import RunConfig
from .dist import Ranks
from .envs import EnvironmentSuite
from .models import load_model_and_tokenizer
from .precision import autocast, run_precision


def evaluate_model(cfg: RunConfig, suite: EnvironmentSuite, model_name: str, memory_db: str | None = None,
                   ranks: Ranks | None = None, show_progress: bool = True) -> dict:
    """Load `model_name` on this rank's device and evaluate its share of the held-out problems (every rank calls
    this; every rank gets the whole result). With `eval.memory_at_inference`, `memory_db`'s memory goes into each
    prompt (memory/inference.py). Its progress bar (main process) is off with `train.trl.disable_tqdm: true`, as
    the trained policy's and the Trainer's own are."""
    import torch
    from accelerate import PartialState

    from .evaluate import evaluate

    ranks = ranks or Ranks()
    device = str(PartialState().device) if ranks.distributed else None
    precision = run_precision(cfg)  # as the trained policy is evaluated: storage dtype, the run's autocast
    model, tokenizer = load_model_and_tokenizer(model_name, precision.storage, device=device)
    try:
        with contextlib.ExitStack() as stack:
            memory_for = None
            if cfg.eval.memory_at_inference:
                from .memory.inference import memory_for_prompts

                memory_for = stack.enter_context(memory_for_prompts(cfg, suite, memory_db, tokenizer))
            stack.enter_context(autocast(precision, next(model.parameters()).device))
            return evaluate(model, tokenizer, suite, suite.problems("eval"), cfg.eval, cfg.env.system_prompt,
                            memory_for=memory_for, seed=cfg.train.seed, ranks=ranks,
                            show_progress=show_progress and not cfg.train.trl.get("disable_tqdm", False))
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the trainer loads its own copy next
