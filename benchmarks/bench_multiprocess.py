"""Scale-out on CPU: PMD step time with 2 processes against 1 on the same global batch, measured in one run, and
what broadcasting retrieved memory from the main process costs.

Both launches go through torchrun (1 and 2 processes, gloo), train PMD on the embedded SmolLM2-135M (or --model) with
the same config, seed and global batch (`train.prompts_per_step` is global), and split the machine's cores between
the processes (OMP_NUM_THREADS = cores / processes), so the ratio answers "what does the same CPU budget buy with
two ranks instead of one". The first step (warm-up) is left out of the means.

Broadcast cost, two ways: (a) inside the 2-process run, the time rank 0 spends in `Ranks.broadcast` while serving
`MemoryLoop.retrieve` (the other rank already waits there, so this is transfer time); (b) a micro-benchmark that
broadcasts a payload shaped like one step's retrieval (prompts_per_step problems x token_budget-sized texts).

Usage: .venv/bin/python benchmarks/bench_multiprocess.py [--steps 4] [--prompts 4] [--generations 4] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args) -> None:
    """One torchrun worker: train PMD with timers; rank 0 writes the timings to args.out."""
    import torch
    from transformers import TrainerCallback

    from pmd.config import config_from_dict
    from pmd.dist import Ranks
    from pmd.envs import EnvironmentSuite
    from pmd.memory.loop import MemoryLoop
    from pmd.models import resolve_model
    from pmd.trainer import train

    timings = {"step": [], "retrieve": [], "broadcast": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            timings["step"].append(time.perf_counter() - self.t0)

    broadcast, retrieve = Ranks.broadcast, MemoryLoop.retrieve
    inside = {"on": False}

    def timed_broadcast(self, obj):
        t0 = time.perf_counter()
        out = broadcast(self, obj)
        if inside["on"]:
            timings["broadcast"].append(time.perf_counter() - t0)
        return out

    def timed_retrieve(self, uids, step):
        inside["on"], t0 = True, time.perf_counter()
        try:
            return retrieve(self, uids, step)
        finally:
            inside["on"] = False
            timings["retrieve"].append(time.perf_counter() - t0)

    Ranks.broadcast, MemoryLoop.retrieve = timed_broadcast, timed_retrieve
    model = resolve_model(args.model)
    cfg = config_from_dict({
        "model": {"name_or_path": model},
        "env": {"tasks": [{"name": "basic_arithmetic"}], "train_size": 64, "eval_size": 4},
        "train": {"algo": "pmd", "steps": args.steps, "prompts_per_step": args.prompts,
                  "num_generations": args.generations, "max_completion_length": 32, "seed": 0},
        "memory": {"reflect_every": 1, "consolidate_every": 2},
        "run_dir": args.run_dir,
    })
    ranks = Ranks.current()
    train(cfg, Path(cfg.run_dir), model, EnvironmentSuite.from_config(cfg.env), callbacks=[Timer()], ranks=ranks)
    payload_ms = micro_broadcast(ranks, args.prompts) if ranks.distributed else None
    if ranks.is_main:
        Path(args.out).write_text(json.dumps({**timings, "micro_broadcast_ms": payload_ms,
                                              "threads": torch.get_num_threads()}))


def micro_broadcast(ranks, problems: int, repeats: int = 50) -> float:
    """Mean ms to broadcast one step's worth of retrieved memory (texts of ~192 tokens each)."""
    from pmd.memory.retrieve import RetrievedMemory

    text = ("Lesson: a past attempt failed with 'Wrong answer'; state the result on a line 'Answer: <answer>'. " * 8)
    refs = [f"insight:{i}" for i in range(6)]
    sample = {f"problem-{i}": RetrievedMemory(text, refs, 192, False) for i in range(problems)}
    ranks.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        ranks.broadcast(sample if ranks.is_main else None)
    return (time.perf_counter() - t0) / repeats * 1000


def launch(nproc: int, args, workdir: Path) -> dict:
    out = workdir / f"timings-{nproc}.json"
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nproc)), "TOKENIZERS_PARALLELISM": "false"}
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(nproc), __file__, "--child", "--out", str(out),
           "--run-dir", str(workdir / f"run-{nproc}"), "--steps", str(args.steps), "--prompts", str(args.prompts),
           "--generations", str(args.generations), "--model", args.model]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--child", action="store_true")
    p.add_argument("--out", default="")
    p.add_argument("--run-dir", default="")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="pmd-bench-mp-") as tmp:
        one, two = launch(1, args, Path(tmp)), launch(2, args, Path(tmp))
    mean = lambda xs: statistics.mean(xs[1:]) if len(xs) > 1 else float("nan")  # noqa: E731 - first step is warm-up
    s1, s2 = mean(one["step"]), mean(two["step"])
    print(f"global batch: {args.prompts} prompts x {args.generations} rollouts, {args.steps} steps "
          f"(means over steps 2..{args.steps}), {os.cpu_count()} cores")
    print(f"| 1 process ({one['threads']} threads) | {s1:.2f} s/step | 1.00 (baseline) |")
    print(f"| 2 processes ({two['threads']} thread each) | {s2:.2f} s/step | {s2 / s1:.2f} |")
    r1, r2, b2 = mean(one["retrieve"]), mean(two["retrieve"]), mean(two["broadcast"])
    print(f"| retrieve, 1 process | {r1 * 1000:.2f} ms/step | {r1 / s1:.4f} of a step |")
    print(f"| retrieve + broadcast, 2 processes (rank 0) | {r2 * 1000:.2f} ms/step | {r2 / s2:.4f} of a step |")
    print(f"| of which broadcast | {b2 * 1000:.2f} ms/step | {b2 / s2:.4f} of a step |")
    print(f"| micro: broadcast of {args.prompts} retrievals | {two['micro_broadcast_ms']:.2f} ms | |")


if __name__ == "__main__":
    main()
