"""What PMD's memory costs, as ratios against baselines measured in the same run (machines here are noisy).

1. Step overhead: mean training-step time of PMD vs SDPO on the same tiny model, tasks and seed
   (a tiny model makes the memory's share of a step look as large as it can: an upper bound).
2. Retrieval scaling: mean `retrieve()` latency at growing store sizes, relative to the smallest store.

Usage: .venv/bin/python benchmarks/bench_memory_ops.py [--steps 6] [--sizes 1000,10000,50000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def step_times(algo: str, steps: int, model_path: Path, workdir: Path) -> list[float]:
    from transformers import TrainerCallback

    from pmd.config import load_config
    from pmd.envs import EnvironmentSuite
    from pmd.trainer import train

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    cfg = load_config(None, [
        "env.tasks=[{name: chain_sum, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]",
        "env.train_size=8", "env.eval_size=2", f"train.algo={algo}", f"train.steps={steps}",
        "train.prompts_per_step=4", "train.num_generations=4", "train.max_completion_length=16",
        "memory.reflect_every=1", "memory.consolidate_every=1", f"run_dir={workdir / algo}",
    ])
    timer = Timer()
    train(cfg, Path(cfg.run_dir), str(model_path), EnvironmentSuite.from_config(cfg.env), callbacks=[timer])
    return timer.times[1:]  # drop the first step (warm-up)


def retrieval_latency(n_experiences: int, workdir: Path, queries: int = 50) -> float:
    from pmd.envs.base import Problem
    from pmd.memory.retrieve import RetrievalConfig, retrieve
    from pmd.memory.store import Experience, MemoryStore

    rng = random.Random(0)
    n_problems = max(10, n_experiences // 16)
    store = MemoryStore(workdir / f"mem-{n_experiences}.sqlite")
    rows = []
    for i in range(n_experiences):
        p = i % n_problems
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(Experience(f"p{p}", "chain_sum", f"State the sum: {p} + {a} + {b} =", f"{a}+{b} is {a + b}\nAnswer: {a + b}",
                               float(i % 3 == 0), i % 3 == 0, "Format: followed. Verdict: incorrect.", i // 16, i % 16))
    for start in range(0, len(rows), 5000):
        store.add_experiences(rows[start:start + 5000])
    with store.transaction():
        for p in range(n_problems):
            store.upsert_insight(f"p{p}", "chain_sum", "lesson", f"Lesson {p % 50}: carry the tens digit", "bench", [], 0)
    problems = [Problem(f"p{rng.randrange(n_problems)}", "chain_sum", f"State the sum: {k} + 1 + 2 =") for k in range(queries)]
    count = lambda text: len(text.split())  # noqa: E731
    retrieve(store, problems[0], count, RetrievalConfig(token_budget=160))  # build the index once
    t0 = time.perf_counter()
    for problem in problems:
        retrieve(store, problem, count, RetrievalConfig(token_budget=160))
    elapsed = (time.perf_counter() - t0) / queries
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--sizes", default="1000,10000,50000")
    args = parser.parse_args()
    from conftest import _build_tiny_model

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = _build_tiny_model(tmp / "tiny")
        sdpo = step_times("sdpo", args.steps, model, tmp)
        pmd = step_times("pmd", args.steps, model, tmp)
        results["step_seconds"] = {"sdpo": statistics.fmean(sdpo), "pmd": statistics.fmean(pmd)}
        results["pmd_over_sdpo_step_ratio"] = statistics.fmean(pmd) / statistics.fmean(sdpo)
        sizes = [int(s) for s in args.sizes.split(",")]
        lat = {n: retrieval_latency(n, tmp) for n in sizes}
        results["retrieve_ms"] = {n: v * 1000 for n, v in lat.items()}
        results["retrieve_ratio_vs_smallest"] = {n: v / lat[sizes[0]] for n, v in lat.items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
