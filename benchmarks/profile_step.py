"""Where a training step's time goes, SDPO against PMD, and what removing waste saved, measured in one run.

Trains each algorithm with a realistic config (default configs/compare-smollm2-4fam.yaml: SmolLM2-135M-Instruct,
4 prompts x 4 rollouts, 40 completion tokens, 4 reasoning-gym families, feedback on) and times every phase by
wrapping the TRL / pmd method that does it (nothing is added to the library):

  generation          SDPOTrainer._generate (sampling the rollouts)
  rewards             SDPOTrainer._calculate_rewards (the environments verify each rollout)
  teacher prompts     teacher_context_builder.build, less retrieval (plan, render, tokenize)
  retrieval           MemoryLoop.retrieve (PMD)
  memory writes       MemoryLoop.record (PMD: the step's rollouts and the teachers' retrieval log)
  student forward     SDPOTrainer._forward_logits (pmd: _forward_logits_at) with gradients
  teacher forward     the same without gradients
  distillation loss   SDPOTrainer._compute_self_distillation_loss (top-k divergence on the logits)
  backward            accelerator.backward
  clip + optimizer    Trainer._clip_grad_norm + optimizer.step (between the pre/post optimizer-step callbacks)
  EMA teacher update  the teacher-sync callback's on_step_end
  reflection          MemoryLoop.maybe_reflect (PMD)
  consolidation       MemoryLoop.maybe_consolidate (PMD)
  logging             Trainer.log (TRL's metrics, metrics.jsonl with the memory counts)
  other               the rest of the step (data loading, decoding, TRL's metric gathering, scheduler, callbacks)

Before and after, paired within each step. Every step computes its loss twice on the same rollouts and weights:
as TRL does ("before": every rollout forwarded, the micro-batch padded as one tensor;
`SDPOTrainer.distil_active_rows_only = False`, `length_groups = 1`) and as pmd does ("after": only the rollouts whose
teacher is active, in groups of similar lengths without their shared padding; src/pmd/sdpo_loss.py). One of the two
(forward and backward) runs first and its gradients are put aside; the other's gradients train, and the two swap
roles every step. Both give the same loss (the table shows both values), so the run follows one trajectory whichever
trains. A variant's step time is the step's time less the other variant's loss (forward, backward) time.

A step runs from the `on_step_begin` callback to the end of `_maybe_log_save_evaluate`; the checkpoint saved in it
(`Trainer._save_checkpoint` + pmd's step `save`: weights, optimizer, EMA teacher, memory; `train.save_steps`
set to the last step) is reported apart, as is one greedy held-out evaluation (`evaluate.evaluate_policy`, the
config's eval problems), for comparison with a step. The first `--warmup` steps are left out of the means, and so is
a step that either variant took over twice its median time (the machine stalled; `stalled`), for both variants.

Usage: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/profile_step.py [--config PATH] [--algos sdpo,pmd]
       [--steps 6] [--warmup 1] [--no-eval] [--model NAME|tiny] [--set KEY=VALUE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("generation", "rewards", "teacher prompts", "retrieval", "memory writes", "student forward",
          "teacher forward", "distillation loss", "backward", "clip + optimizer", "EMA teacher update", "reflection",
          "consolidation", "logging", "other")
INSIDE = ("inside: generation prefill", "inside: generation decode", "inside: output layer (student forward)",
          "inside: output layer (teacher forward)")
COUNTERS = tuple(f"{who} {what}" for who in ("student", "teacher")
                 for what in ("forward calls", "rows", "tokens (with padding)", "tokens (real)"))


class Profiler:
    """Seconds per phase for each step (inclusive times per wrapped method; `flat` makes them exclusive)."""

    def __init__(self):
        self.current: dict[str, float] | None = None
        self.t0 = 0.0
        self.steps: list[dict[str, float]] = []
        self.variant: str | None = None  # while set (one variant's loss), what is timed is that variant's

    def add(self, name: str | None, seconds: float) -> None:
        if self.current is not None and name is not None:
            name = f"{name} | {self.variant}" if self.variant else name
            self.current[name] = self.current.get(name, 0.0) + seconds

    def wrap(self, obj, attr: str, name) -> None:
        """Replace `obj.attr` by a timed call; `name` is a phase name or a function of the call's arguments."""
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name(*args, **kwargs) if callable(name) else name, time.perf_counter() - t0)

        setattr(obj, attr, timed)

    def begin(self) -> None:
        self.current, self.t0 = defaultdict(float), time.perf_counter()

    def end(self, extra: dict[str, float]) -> None:
        if self.current is None:
            return
        self.current["step"] = time.perf_counter() - self.t0 - self.current.get("checkpoint", 0.0)
        self.current.update(extra)
        self.steps.append(dict(self.current))
        self.current = None


VARIANTS = {"before": (False, 1), "after": (True, None)}  # (distil_active_rows_only, length_groups; None = pmd's)


def variant_view(step: dict[str, float], variant: str) -> dict[str, float]:
    """One step as `variant` alone would have run it: the shared phases, this variant's loss phases, and the step's
    time less the other variant's loss time."""
    other = next(v for v in VARIANTS if v != variant)
    out = {k: v for k, v in step.items() if " | " not in k}
    out.update({k.split(" | ")[0]: v for k, v in step.items() if k.endswith(f" | {variant}")})
    out["step"] = step["step"] - step.get(f"loss total | {other}", 0.0)
    return out


def flat(step: dict[str, float]) -> dict[str, float]:
    """Exclusive seconds per reported phase: nested timings (retrieval inside the teacher-prompt builder) are taken
    out of their parent, and `other` is what no wrapped method accounts for."""
    out = {p: step.get(p, 0.0) for p in PHASES if p not in ("teacher prompts", "other")}
    out["teacher prompts"] = step.get("builder", 0.0) - step.get("retrieval", 0.0)
    out["other"] = step["step"] - sum(out.values())
    return {p: out[p] for p in PHASES}


def instrument(trainer, loop, prof: Profiler) -> None:
    import torch
    from transformers import TrainerCallback

    from pmd.trainer import StepEvents

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            prof.begin()

        def on_pre_optimizer_step(self, *a, **k):
            self.t = time.perf_counter()

        def on_optimizer_step(self, *a, **k):
            prof.add("clip + optimizer", time.perf_counter() - self.t)

    extra: dict[str, float] = {}
    trainer.callback_handler.callbacks.insert(0, Clock())
    prof.wrap(trainer, "_generate", "generation")
    prof.wrap(trainer, "_calculate_rewards", "rewards")
    prof.wrap(trainer.teacher_context_builder, "build", "builder")
    prof.wrap(trainer, "_compute_self_distillation_loss", "distillation loss")
    prof.wrap(trainer.accelerator, "backward", "backward")
    pair_losses(trainer, prof)  # on top of the timed backward
    prof.wrap(trainer, "_clip_grad_norm", "clip + optimizer")
    prof.wrap(trainer, "log", "logging")
    prof.wrap(trainer, "_save_checkpoint", "checkpoint")

    def forward_name(model, input_ids, attention_mask, *rest, **kwargs):
        who = "student" if torch.is_grad_enabled() else "teacher"
        prof.add(f"{who} forward calls", 1.0)  # counters, not seconds
        prof.add(f"{who} rows", float(input_ids.size(0)))
        prof.add(f"{who} tokens (with padding)", float(input_ids.numel()))
        prof.add(f"{who} tokens (real)", float(attention_mask.sum()))
        return f"{who} forward"

    # inside phases (reported apart): generation's prompt prefill vs its token-by-token decoding, and the output
    # layer (the full-vocabulary logits) inside the student and teacher forwards
    in_generation = {"on": False}
    generate = trainer._generate

    def flagged(*args, **kwargs):
        in_generation["on"] = True
        try:
            return generate(*args, **kwargs)
        finally:
            in_generation["on"] = False

    trainer._generate = flagged
    policy = trainer.accelerator.unwrap_model(trainer.model)

    def policy_call(*args, input_ids=None, **kwargs):
        if not in_generation["on"]:
            return None
        return "inside: generation prefill" if input_ids is not None and input_ids.size(1) > 1 else \
            "inside: generation decode"

    prof.wrap(policy, "forward", policy_call)
    for who, model in (("student", policy), ("teacher", trainer.accelerator.unwrap_model(trainer.teacher_model))):
        if who == "teacher" and model is policy:
            continue
        prof.wrap(model.get_output_embeddings(), "forward",
                  lambda *a, _who=who, **k: None if in_generation["on"] else
                  f"inside: output layer ({_who if torch.is_grad_enabled() else 'teacher'} forward)")
    prof.wrap(trainer, "_forward_logits", forward_name)  # TRL's one padded forward
    prof.wrap(trainer, "_forward_logits_at", forward_name)  # pmd's forward per length group
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ in ("SyncTeacherModelCallback", "PEFTAdapterEMACallback"):
            prof.wrap(cb, "on_step_end", "EMA teacher update")
        if isinstance(cb, StepEvents):
            prof.wrap(cb, "on_save", "checkpoint")
    if loop is not None:
        prof.wrap(loop, "retrieve", "retrieval")
        prof.wrap(loop, "record", "memory writes")
        prof.wrap(loop, "maybe_reflect", "reflection")
        prof.wrap(loop, "maybe_consolidate", "consolidation")

    inner = trainer._maybe_log_save_evaluate

    def step_end(*args, **kwargs):
        try:
            return inner(*args, **kwargs)
        finally:
            metrics = trainer.teacher_context_builder.last_metrics
            extra["active fraction"] = metrics.get("self_distillation/reprompt_sample_fraction", float("nan"))
            prof.end(extra)

    trainer._maybe_log_save_evaluate = step_end


def pair_losses(trainer, prof: Profiler) -> None:
    """Each call of `compute_loss` computes the loss both ways (module docstring): first the variant that does not
    train this step, with forward and backward, its gradients put aside; then the one that trains, whose backward
    the Trainer runs. Each variant's wall time (loss and backward) is `loss total`; both loss values are kept."""
    compute_loss, backward = trainer.compute_loss, trainer.accelerator.backward
    own_groups = trainer.length_groups

    def use(variant: str) -> None:
        rows_only, groups = VARIANTS[variant]
        trainer.distil_active_rows_only, trainer.length_groups = rows_only, groups or own_groups
        prof.variant = variant

    def paired(model, inputs, *args, **kwargs):
        trains = "after" if len(prof.steps) % 2 == 0 else "before"
        aside = next(v for v in VARIANTS if v != trains)
        params = [p for p in model.parameters() if p.requires_grad]
        kept = [p.grad for p in params]  # gradients accumulated so far (none with one micro-batch per step)
        for p in params:
            p.grad = None
        use(aside)
        t0 = time.perf_counter()
        loss = compute_loss(model, inputs, *args, **kwargs)
        prof.add("loss value", loss.item())
        backward(loss)
        prof.add("loss total", time.perf_counter() - t0)
        for p, g in zip(params, kept):
            p.grad = g
        use(trains)
        prof.t_trains = time.perf_counter()
        loss = compute_loss(model, inputs, *args, **kwargs)
        prof.add("loss value", loss.item())
        return loss

    def backward_then_close(loss, **kwargs):
        try:
            return backward(loss, **kwargs)
        finally:
            if prof.variant is not None:
                prof.add("loss total", time.perf_counter() - prof.t_trains)
                prof.variant = None

    trainer.compute_loss = paired
    trainer.accelerator.backward = backward_then_close


def run_one(cfg_path: str, overrides: list[str], algo: str, steps: int, model_path: str, workdir: Path,
            evaluate: bool) -> dict:
    import torch

    from pmd.config import load_config
    from pmd.dist import Ranks
    from pmd.envs import EnvironmentSuite
    from pmd.evaluate import evaluate_policy
    from pmd.trainer import MetricsJSONL, build_trainer

    tag = algo
    run_dir = workdir / tag
    cfg = load_config(cfg_path, [*overrides, f"train.algo={algo}", f"train.steps={steps}",
                                 f"train.save_steps={steps}", f"run_dir={run_dir}"])
    suite = EnvironmentSuite.from_config(cfg.env)
    run_dir.mkdir(parents=True)
    trainer, loop = build_trainer(cfg, model_path, suite, run_dir)
    trainer.add_callback(MetricsJSONL(run_dir / "metrics.jsonl", loop, suite))
    prof = Profiler()
    instrument(trainer, loop, prof)
    t0 = time.perf_counter()
    trainer.train()
    out = {"tag": tag, "train_seconds": time.perf_counter() - t0, "steps": prof.steps}
    if evaluate:
        t0 = time.perf_counter()
        result = evaluate_policy(trainer, cfg, suite, Ranks())
        out["eval_seconds"] = time.perf_counter() - t0
        out["eval_problems"] = result["overall"]["n_problems"]
    if loop is not None and loop.store is not None:
        loop.store.close()
    del trainer, loop
    gc.collect()
    return out


def stalled(run: dict, warmup: int, factor: float = 2.0) -> set[int]:
    """Measured steps (indices into run["steps"]) that one variant took over `factor` x its median step time: the
    machine stalled (other jobs), not the code. They are left out of every mean, for both variants alike."""
    out = set()
    for variant in VARIANTS:
        times = {i: variant_view(s, variant)["step"] for i, s in enumerate(run["steps"]) if i >= warmup}
        median = statistics.median(times.values())
        out |= {i for i, t in times.items() if t > factor * median}
    return out


def summary(run: dict, warmup: int, variant: str) -> dict:
    steps = [variant_view(s, variant) for s in run["steps"]]
    left_out = stalled(run, warmup)
    measured = [s for i, s in enumerate(steps) if i >= warmup and i not in left_out]
    flats = [flat(s) for s in measured]
    mean = {p: statistics.fmean(f[p] for f in flats) for p in PHASES}
    saves = [s["checkpoint"] for s in steps if s.get("checkpoint")]
    return {"phases": mean, "step": statistics.fmean(s["step"] for s in measured),
            "step_stdev": statistics.stdev([s["step"] for s in measured]) if len(measured) > 1 else 0.0,
            "step_each": [s["step"] for s in measured], "checkpoint": saves[0] if saves else None,
            "left_out": {i: steps[i]["step"] for i in sorted(left_out)},
            "inside": {k: statistics.fmean(s.get(k, 0.0) for s in measured) for k in INSIDE},
            "active": [s.get("active fraction") for s in steps], "loss": [s.get("loss value") for s in steps],
            **{k: statistics.fmean(s.get(k, 0.0) for s in measured) for k in COUNTERS}}


def print_tables(results: dict, algos: list[str]) -> None:
    cols = [(a, v) for a in algos for v in ("before", "after")]
    print("\n| phase | " + " | ".join(f"{a.upper()} {v}: s (share)" for a, v in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for p in PHASES:
        cells = []
        for a, v in cols:
            s = results[a][v]
            cells.append(f"{s['phases'][p]:.2f} ({100 * s['phases'][p] / s['step']:.1f}%)")
        print(f"| {p} | " + " | ".join(cells) + " |")
    for p in INSIDE:
        cells = [f"{results[a][v]['inside'][p]:.2f} ({100 * results[a][v]['inside'][p] / results[a][v]['step']:.1f}%)"
                 for a, v in cols]
        print(f"| {p} | " + " | ".join(cells) + " |")
    print("| **step** | " + " | ".join(f"**{results[a][v]['step']:.2f}** (sd {results[a][v]['step_stdev']:.2f})"
                                      for a, v in cols) + " |")
    print("\n| measurement | " + " | ".join(f"{a.upper()} {v}" for a, v in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for key in COUNTERS:
        print(f"| {key} per step | " + " | ".join(f"{results[a][v][key]:.0f}" for a, v in cols) + " |")
    print("| teacher-active fraction per step | " + " | ".join(
        ", ".join(f"{x:.2f}" for x in results[a][v]["active"]) for a, v in cols) + " |")
    print("| loss per step | " + " | ".join(
        ", ".join(f"{x:.6g}" for x in results[a][v]["loss"] if x is not None) for a, v in cols) + " |")
    print("| steps left out (stalled machine): step, s | " + " | ".join(
        ", ".join(f"{i + 1}: {t:.1f}" for i, t in results[a][v]["left_out"].items()) or "none" for a, v in cols) + " |")
    print("| checkpoint save (s) | " + " | ".join(f"{results[a][v]['checkpoint']:.2f}" if results[a][v]["checkpoint"]
                                                  else "-" for a, v in cols) + " |")
    print("\n| algorithm | step before (s) | step after (s) | after / before | per-step ratios | forwards, "
          "backward, loss: after / before | loss: largest relative difference |")
    print("|---|---|---|---|---|---|---|")
    work = ("student forward", "teacher forward", "backward", "distillation loss")
    for a in algos:
        b, f = results[a]["before"], results[a]["after"]
        wb, wf = sum(b["phases"][p] for p in work), sum(f["phases"][p] for p in work)
        ratios = [y / x for x, y in zip(b["step_each"], f["step_each"])]
        diff = max(abs(x - y) / max(abs(x), 1e-30) for x, y in zip(b["loss"], f["loss"]) if x is not None)
        print(f"| {a.upper()} | {b['step']:.2f} | {f['step']:.2f} | **{f['step'] / b['step']:.3f}** | "
              f"{min(ratios):.3f} to {max(ratios):.3f} | {wf:.2f} / {wb:.2f} = {wf / wb:.3f} | {diff:.1e} |")


def from_json(path: str, warmup: int) -> None:
    """Print the tables again from a `--json` file (e.g. after changing how they are summarised)."""
    raw = json.loads(Path(path).read_text())["runs"]
    results = {a: {v: summary(run, warmup, v) for v in VARIANTS} for a, run in raw.items()}
    print_tables(results, list(raw))
    for run in raw.values():
        if "eval_seconds" in run:
            ev = run["eval_seconds"]
            print(f"\ngreedy held-out evaluation of {run['eval_problems']} problems: {ev:.1f} s = " + ", ".join(
                f"{ev / results[a][v]['step']:.1f} {a.upper()} steps {v}" for a in raw for v in VARIANTS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "compare-smollm2-4fam.yaml"))
    ap.add_argument("--algos", default="sdpo,pmd")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per run (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    ap.add_argument("--model", default="", help="model.name_or_path override; 'tiny' = the tests' random Llama")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--json", default="", help="write the raw per-step timings here")
    ap.add_argument("--tables-from", default="", metavar="JSON", help="only print the tables of an earlier --json")
    args = ap.parse_args()
    if args.tables_from:
        return from_json(args.tables_from, args.warmup)
    sys.path.insert(0, str(ROOT / "tests"))

    import torch

    from pmd.config import load_config
    from pmd.models import resolve_model

    algos = [a for a in args.algos.split(",") if a]
    with tempfile.TemporaryDirectory(prefix="profile-step-") as tmp:
        workdir = Path(tmp)
        if args.model == "tiny":
            from conftest import _build_tiny_model

            model_path = str(_build_tiny_model(workdir / "tiny"))
        else:
            name = args.model or load_config(args.config, args.overrides).model.name_or_path
            model_path = resolve_model(name)
        load = os.getloadavg()
        print(f"model {model_path}; torch threads {torch.get_num_threads()} (OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); load average at start {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
        raw, results, eval_run = {}, defaultdict(dict), None
        for algo in algos:
            evaluate = not args.no_eval and eval_run is None
            run = run_one(args.config, args.overrides, algo, args.warmup + args.steps, model_path, workdir, evaluate)
            raw[algo] = run
            for variant in VARIANTS:
                results[algo][variant] = summary(run, args.warmup, variant)
            if evaluate:
                eval_run = run
            print(f"{algo}: {run['train_seconds']:.1f} s for {len(run['steps'])} steps", flush=True)
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print_tables(results, algos)
    if eval_run is not None:
        ev = eval_run["eval_seconds"]
        print(f"\ngreedy held-out evaluation of {eval_run['eval_problems']} problems: {ev:.1f} s = "
              + ", ".join(f"{ev / results[a][v]['step']:.1f} {a.upper()} steps {v}" for a in algos for v in VARIANTS))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": raw, "summary": results}, indent=1))


if __name__ == "__main__":
    main()
