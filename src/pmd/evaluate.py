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
from dataclasses import dataclass, field
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
    # for the per-sample file (<eval>.samples.jsonl) only; the eval JSON keeps its aggregate shape
    messages: list[dict] = field(default_factory=list)  # the chat turns the model was given
    prompt: str | None = None  # those turns rendered by the tokenizer's chat template, as the model read them
    reference: str | None = None  # the problem's reference answer, if it has one
    extracted: str | None = None  # what the verifier read as the answer (None: nothing extractable)
    reward_terms: dict[str, float] = field(default_factory=dict)  # a dataset task's reward per term (label: value)


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
             show_progress: bool | None = True, ranks: Ranks | None = None, desc: str = "eval",
             leave: bool = True) -> dict:
    """Score `problems` greedily and with `cfg.num_samples` samples each. Returns a JSON-ready dict; its
    `SAMPLES` key holds one row per answer (`write_eval` puts them in their own file).

    `show_progress`: True, a progress bar on the main process (its description names the cost: problems x
    answers each); None, only on a terminal; False, none.

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
    # the bar names the cost: every problem is answered once greedily and `num_samples` times sampled
    bar = _progress_bar(len(local) * (1 + cfg.num_samples),  # this (the main) rank's share
                        f"{desc} ({len(problems)} problems x (1 greedy + {cfg.num_samples} sampled))",
                        show_progress, ranks.is_main, leave)
    tick = bar.update if bar is not None else None
    torch.manual_seed(seed + ranks.index)
    samples: list[tuple[int, Sample]] = []
    local_prompts = prompts[: len(local)]
    greedy_out = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, True, cfg.batch_size,
                          _clipped(tick, len(local)))
    samples += zip(mine, _judge(suite, local, local_prompts, greedy_out[: len(local)], greedy=True,
                                tokenizer=tokenizer))
    if cfg.num_samples:
        k = cfg.num_samples
        repeated = [p for p in prompts for _ in range(k)]
        sampled = generate(model, tokenizer, repeated, cfg.max_new_tokens, cfg.temperature, False, cfg.batch_size,
                           _clipped(tick, len(local) * k), top_p=cfg.top_p)
        samples += zip([i for i in mine for _ in range(k)],
                       _judge(suite, [p for p in local for _ in range(k)],
                              [m for m in local_prompts for _ in range(k)], sampled[: len(local) * k], greedy=False,
                              tokenizer=tokenizer))
    if bar is not None:
        bar.close()
    gathered = [pair for part in ranks.gather(samples) for pair in part]
    # problem order, greedy samples first: the order one process produces
    gathered.sort(key=lambda pair: (not pair[1].greedy, pair[0]))
    ordered = [s for _, s in gathered]
    result = summarise(ordered, cfg.num_samples, memory_at_inference=cfg.memory_at_inference)
    result[SAMPLES] = sample_rows(ordered)
    return result


def _clipped(tick: Callable[[int], None] | None, real: int) -> Callable[[int], None] | None:
    """A progress callback that counts only the first `real` answers (this rank's problems), not the padding that
    keeps ranks in step, so the bar ends at its total."""
    if tick is None:
        return None
    done = [0]

    def update(n: int) -> None:
        counted = max(0, min(done[0] + n, real) - done[0])
        done[0] += n
        if counted:
            tick(counted)
    return update


def _judge(suite: EnvironmentSuite, problems: list[Problem], prompts: list[list[dict]], responses: list[str],
           greedy: bool, tokenizer=None) -> list[Sample]:
    verdicts = suite.verify_batch(problems, responses)
    rendered: dict[int, str | None] = {}
    out = []
    for p, m, r, v in zip(problems, prompts, responses, verdicts, strict=True):
        if id(m) not in rendered:  # the k samples of one problem share one prompt
            rendered[id(m)] = _render(tokenizer, m)
        terms = v.details.get("terms")
        out.append(Sample(p.uid, p.family, greedy, r, v.reward, v.passed, v.format_ok,
                          bool(v.details.get("lenient_correct", v.passed)), messages=m, prompt=rendered[id(m)],
                          reference=p.answer, extracted=v.extracted,
                          reward_terms=dict(terms) if isinstance(terms, dict) else {}))
    return out


def _render(tokenizer, messages: list[dict]) -> str | None:
    """The prompt text the model was given (its chat template with the generation prompt), as `generate` renders it."""
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        return None
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


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
        "examples": [{key: getattr(s, key) for key in _EXAMPLE_KEYS} for s in samples if s.greedy][:8],
        # one row per problem (greedy pass): what paired comparisons (`pmd compare`'s bootstrap) resample
        "per_problem": [{"uid": s.problem_uid, "family": s.family, "passed": s.passed, "format_ok": s.format_ok,
                         "lenient_correct": s.lenient_correct, "chars": len(s.response)}
                        for s in samples if s.greedy],
    }


_EXAMPLE_KEYS = ("problem_uid", "family", "greedy", "response", "reward", "passed", "format_ok", "lenient_correct")

# The key under which `evaluate` returns every sample (`sample_rows`): `write_eval` writes them to their own JSONL
# file beside the evaluation and leaves them out of its JSON; `split_samples` takes them off for other consumers.
SAMPLES = "samples"


def sample_rows(samples: list[Sample]) -> list[dict[str, Any]]:
    """One JSON-ready row per generated answer, in problem order, the greedy answer first (`sample` 0 is greedy,
    1..k the sampled ones): what the answer was given, what it said, and how the verifier scored it."""
    index: dict[str, int] = defaultdict(int)
    rows = []
    for s in sorted(samples, key=lambda s: not s.greedy):  # stable: problem order within greedy and sampled
        rows.append({"problem_id": s.problem_uid, "family": s.family, "sample": index[s.problem_uid],
                     "greedy": s.greedy, "prompt": s.prompt, "messages": s.messages, "reference": s.reference,
                     "response": s.response, "extracted": s.extracted, "reward": s.reward,
                     "reward_terms": s.reward_terms, "passed": s.passed, "format_ok": s.format_ok,
                     "lenient_correct": s.lenient_correct})
        index[s.problem_uid] += 1
    order = {uid: i for i, uid in enumerate(dict.fromkeys(r["problem_id"] for r in rows))}
    return sorted(rows, key=lambda r: (order[r["problem_id"]], r["sample"]))


def split_samples(result: dict) -> tuple[dict, list[dict] | None]:
    """(the evaluation without its per-sample rows, those rows or None): what JSON outputs and trackers get."""
    rest = {k: v for k, v in result.items() if k != SAMPLES}
    return rest, result.get(SAMPLES)


def samples_path(path: Path) -> Path:
    """Where the per-sample rows of the evaluation written to `path` go: `eval_base.json` ->
    `eval_base.samples.jsonl`, beside it."""
    return path.with_name(f"{path.stem}.samples.jsonl")


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


def _progress_bar(total: int, desc: str, show: bool | None, is_main: bool, leave: bool = True):
    """A tqdm bar over the answers, on the main process only. `show` False: none (`disable_tqdm`, as for the
    Trainer's own bar); None: only on a terminal (tqdm's own rule), so log files get no carriage-return noise.
    `disable` is passed only then, so tqdm's environment switch (TQDM_DISABLE=1) still turns every bar off."""
    if show is False or not is_main:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="answer", leave=leave, **({"disable": None} if show is None else {}))


# ------------------------------------------------------------------------------------------- during training


def evaluate_policy(trainer, cfg: RunConfig, suite: EnvironmentSuite, ranks: Ranks, desc: str = "eval",
                    leave: bool = True) -> dict:
    """Memory-free held-out evaluation of the policy in the trainer, sharded over ranks (every rank calls this).
    Its progress bar follows the training bar's switch (`train.trl.disable_tqdm`), on the main process only."""
    with policy_for_generation(trainer) as model, trainer.accelerator.autocast():  # the run's autocast, if any
        return evaluate(model, trainer.processing_class, suite, suite.problems("eval"), cfg.eval,
                        cfg.env.system_prompt, seed=cfg.train.seed, show_progress=not trainer.args.disable_tqdm,
                        ranks=ranks, desc=desc, leave=leave)


def eval_metrics(result: dict) -> dict[str, float]:
    """An evaluation as flat `eval/...` metrics: overall, and greedy accuracy per family."""
    row: dict[str, float] = {f"eval/{key}": value for key, value in result["overall"].items()}
    for fam, metrics in result["families"].items():
        row[f"eval/{fam}/greedy_accuracy"] = metrics["greedy_accuracy"]
    return row


def write_eval(path: Path, result: dict) -> None:
    """One whole evaluation (per-problem rows included) as JSON, and its per-sample rows, if it has them, as
    `samples_path(path)` (one JSON object per line), each replaced atomically; the samples file first, so an
    evaluation JSON is never newer than the samples beside it."""
    from .atomic import atomic_write, atomic_write_text

    result, rows = split_samples(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        atomic_write(samples_path(path), lambda fh: write_sample_rows(fh, rows))
    atomic_write_text(path, json.dumps(result, indent=1))


def write_sample_rows(fh, rows: list[dict]) -> None:
    """Per-sample rows as JSON lines (loads with `datasets.load_dataset("json", data_files=...)`)."""
    for row in rows:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def append_eval(path: Path, step: int, result: dict) -> None:
    """One metrics.jsonl row with an evaluation made outside training (the base model, at step 0)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, **eval_metrics(result)}) + "\n")
