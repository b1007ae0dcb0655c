"""Memory-free held-out evaluation: the model sees only the problem, as it will at inference.

Reports per task family: greedy accuracy, avg@k (mean success over k samples), pass@k (any of k), the strict
format rate, and lenient accuracy (answers found only by the fallback extractor), so format and content are
distinguishable. `memory_at_inference` exists only to compare against; PMD's claim is the memory-free number.

On several processes the problems are sharded over ranks (each rank generates and verifies its share with its own
copy or view of the model) and the samples are gathered, so every rank returns the same result. Every rank runs
the same number of generate calls, which sharded parameters (ZeRO-3, FSDP) need.

During training (step.py's periodic evaluation, and the final evaluation of `pmd train`) the policy is evaluated in place, entered
for generation the way TRL enters it (`dist.policy_for_generation`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import EvalConfig, RunConfig
from .dist import Ranks
from .sharded import policy_for_generation
from .envs import EnvironmentSuite, Problem
from .prompts import student_messages, student_text_with_memory


@dataclass
class Sample:
    problem_uid: str
    family: str
    greedy: bool
    response: str
    reward: float
    passed: bool
    format_ok: bool
    lenient_correct: bool


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, temperature: float, greedy: bool,
             batch_size: int, progress: Callable[[int], None] | None = None, top_p: float = 1.0) -> list[str]:
    """Batched chat generation (left padding); returns decoded completions in prompt order."""
    outputs: list[str] = []
    device = next(model.parameters()).device
    was_training = model.training
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # batched generation of a decoder-only model needs left padding
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer.apply_chat_template(
                chunk, add_generation_prompt=True, tokenize=True, return_dict=True, padding=True, return_tensors="pt"
            ).to(device)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            if greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return outputs


def evaluate(model, tokenizer, suite: EnvironmentSuite, problems: list[Problem], cfg: EvalConfig, system_prompt: str,
             memory_for: Callable[[Problem], str] | None = None, seed: int = 0,
             show_progress: bool = True, ranks: Ranks | None = None) -> dict:
    """Score `problems` greedily and with `cfg.num_samples` samples each. Returns a JSON-ready dict.

    With `ranks`, every rank must call this with the same problems; rank r takes problems r, r + world, ... and
    samples with seed `seed + r` (so one process reproduces the single-process numbers exactly)."""
    if cfg.memory_at_inference and memory_for is None:
        raise ValueError("eval.memory_at_inference needs a memory store to retrieve from")
    ranks = ranks or Ranks()

    def user_text(p: Problem) -> str:
        text = suite.format_prompt(p)
        if cfg.memory_at_inference and memory_for is not None:
            text = student_text_with_memory(text, memory_for(p))
        return text

    mine, per_rank = ranks.shard(len(problems))
    local = [problems[i] for i in mine]
    padded = local + local[:1] * (per_rank - len(local)) if local else problems[:1] * per_rank
    prompts = [student_messages(suite.system_prompt(p, system_prompt), user_text(p)) for p in padded]
    total = len(prompts) * (1 + cfg.num_samples)
    bar = _progress_bar(total, "eval", show_progress and ranks.is_main)
    tick = bar.update if bar is not None else None
    torch.manual_seed(seed + ranks.index)
    samples: list[tuple[int, Sample]] = []
    greedy_out = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, True, cfg.batch_size, tick)
    samples += zip(mine, _judge(suite, local, greedy_out[: len(local)], greedy=True))
    if cfg.num_samples:
        k = cfg.num_samples
        repeated = [p for p in prompts for _ in range(k)]
        sampled = generate(model, tokenizer, repeated, cfg.max_new_tokens, cfg.temperature, False, cfg.batch_size, tick,
                           top_p=cfg.top_p)
        samples += zip([i for i in mine for _ in range(k)],
                       _judge(suite, [p for p in local for _ in range(k)], sampled[: len(local) * k], greedy=False))
    if bar is not None:
        bar.close()
    gathered = [pair for part in ranks.gather(samples) for pair in part]
    # problem order, greedy samples first: the order one process produces
    gathered.sort(key=lambda pair: (not pair[1].greedy, pair[0]))
    return summarise([s for _, s in gathered], cfg.num_samples, memory_at_inference=cfg.memory_at_inference)


def _judge(suite: EnvironmentSuite, problems: list[Problem], responses: list[str], greedy: bool) -> list[Sample]:
    verdicts = suite.verify_batch(problems, responses)
    return [Sample(p.uid, p.family, greedy, r, v.reward, v.passed, v.format_ok,
                   bool(v.details.get("lenient_correct", v.passed)))
            for p, r, v in zip(problems, responses, verdicts, strict=True)]


def summarise(samples: list[Sample], k: int, memory_at_inference: bool = False) -> dict:
    """Aggregate samples into per-family and overall metrics (pure; unit-tested on hand-made samples)."""
    by_family: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_family[s.family].append(s)
    families = {fam: _metrics(ss, k) for fam, ss in sorted(by_family.items())}
    return {
        "memory_at_inference": memory_at_inference,
        "num_samples": k,
        "overall": _metrics(samples, k),
        "families": families,
        "examples": [s.__dict__ for s in samples if s.greedy][:8],
        # one row per problem (greedy pass): what paired comparisons (`pmd compare`'s bootstrap) resample
        "per_problem": [{"uid": s.problem_uid, "family": s.family, "passed": s.passed, "format_ok": s.format_ok,
                         "lenient_correct": s.lenient_correct, "chars": len(s.response)}
                        for s in samples if s.greedy],
    }


def _metrics(samples: list[Sample], k: int) -> dict:
    greedy = [s for s in samples if s.greedy]
    sampled: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if not s.greedy:
            sampled[s.problem_uid].append(s)
    out = {
        "n_problems": len(greedy),
        "greedy_accuracy": _mean([s.passed for s in greedy]),
        "greedy_format_rate": _mean([s.format_ok for s in greedy]),
        "greedy_lenient_accuracy": _mean([s.lenient_correct for s in greedy]),
    }
    if k and sampled:
        out[f"avg@{k}"] = _mean([_mean([s.passed for s in group]) for group in sampled.values()])
        out[f"pass@{k}"] = _mean([any(s.passed for s in group) for group in sampled.values()])
        out["sampled_format_rate"] = _mean([s.format_ok for group in sampled.values() for s in group])
    return out


def _mean(values) -> float:
    values = list(values)
    return float(sum(values)) / len(values) if values else math.nan


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="answer")


# ------------------------------------------------------------------------------------------- during training


def evaluate_policy(trainer, cfg: RunConfig, suite: EnvironmentSuite, ranks: Ranks) -> dict:
    """Memory-free held-out evaluation of the policy in the trainer, sharded over ranks (every rank calls this)."""
    with policy_for_generation(trainer) as model, trainer.accelerator.autocast():  # the run's autocast, if any
        return evaluate(model, trainer.processing_class, suite, suite.problems("eval"), cfg.eval,
                        cfg.env.system_prompt, seed=cfg.train.seed, show_progress=False, ranks=ranks)


def eval_metrics(result: dict) -> dict[str, float]:
    """An evaluation as flat `eval/...` metrics: overall, and greedy accuracy per family."""
    row: dict[str, float] = {f"eval/{key}": value for key, value in result["overall"].items()}
    for fam, metrics in result["families"].items():
        row[f"eval/{fam}/greedy_accuracy"] = metrics["greedy_accuracy"]
    return row


def write_eval(path: Path, result: dict) -> None:
    """One whole evaluation (per-problem rows included) as JSON, replaced atomically."""
    from .atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1))


def append_eval(path: Path, step: int, result: dict) -> None:
    """One metrics.jsonl row with an evaluation made outside training (the base model, at step 0)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, **eval_metrics(result)}) + "\n")
