"""What PMD's memory costs, as ratios against baselines measured in the same run (machines here are noisy).

1. Step overhead: mean training-step time of PMD vs SDPO on the same tiny model, tasks and seed
   (a tiny model makes the memory's share of a step look as large as it can: an upper bound). `--steps 0` skips it.
2. Memory at scale: for each store size (experiences; 4 rollouts per problem, 2 insights per problem, 64 active
   patterns, 8 task families), a synthetic store is written with executemany in one transaction, then:
   - `retrieve()` latency p50 / p99 over `--queries` problems from the store (default config, 192-token budget,
     word counter);
   - the per-step memory cost of a 256-rollout step: `record` (rollouts + teacher-call log + reflection's insight
     writes, as MemoryLoop does) and the retrieval index update that follows it;
   - a full index build from scratch (what every step paid before the index became incremental).
   Ratios: against the smallest size, and the per-step index update against a full build at the same size.

Usage: .venv/bin/python benchmarks/bench_memory_ops.py [--steps 6] [--sizes 10000,100000,1000000] [--queries 300]
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


FAMILIES = {
    "basic_arithmetic": "Compute the value of {a} plus {b} minus 7.",
    "chain_sum": "State the sum of {a} and {b} and 12.",
    "gcd": "Find the greatest common divisor of {a} and {b}.",
    "lcm": "Find the least common multiple of {a} and {b}.",
    "prime_factorization": "Write the prime factorization of {a} times {b}.",
    "count_primes": "Count the prime numbers between {a} and {b}.",
    "fraction_simplification": "Simplify the fraction {a} over {b} to lowest terms.",
    "decimal_arithmetic": "Multiply the decimals {a}.5 and {b}.25.",
}
ANSWER = " Give the final answer on a line 'Answer: <answer>'."
ROLLOUTS_PER_PROBLEM, INSIGHTS_PER_PROBLEM, STEP_ROLLOUTS = 4, 2, 256


def _problem(p: int) -> tuple[str, str, str]:
    """(uid, family, prompt) of synthetic problem `p`: deterministic, so queries can be rebuilt from the index."""
    rng = random.Random(p)
    family = list(FAMILIES)[p % len(FAMILIES)]
    return f"{family}-{p}", family, FAMILIES[family].format(a=rng.randint(2, 999), b=rng.randint(2, 999)) + ANSWER


def _experience_rows(n_experiences: int, n_problems: int):
    """Rollouts in step order: each step covers STEP_ROLLOUTS / 4 problems x 4 rollouts, problems in sequence."""
    for i in range(n_experiences):
        p = (i // ROLLOUTS_PER_PROBLEM) % n_problems
        uid, family, prompt = _problem(p)
        passed = (i * 7919) % 3 == 0
        yield (uid, family, prompt, f"{p} so the result is {i % 97}.\nAnswer: {i % 97}", float(passed), int(passed),
               "" if passed else f"Expected a different value, got {i % 97}.", i // STEP_ROLLOUTS,
               i % STEP_ROLLOUTS, str(i % 97), "" if passed else "wrong_value")


def _insight_rows(n_problems: int, last_step: int):
    for p in range(n_problems):
        uid, family, _ = _problem(p)
        step = min(last_step, p * ROLLOUTS_PER_PROBLEM // STEP_ROLLOUTS)
        for kind, text, tag in (("lesson", f"Wrong value in {family}: recompute {p % 50} before answering.",
                                 "wrong_value"),
                                ("strategy", f"State the result on a line 'Answer: <answer>' ({family} {p % 40}).",
                                 "answer_line"))[:INSIGHTS_PER_PROBLEM]:
            yield (uid, family, kind, text, " ".join(text.lower().split()), "bench", 1 + p % 3, "[]", step, step, tag)


def build_store(path: Path, n_experiences: int):
    """A store of `n_experiences` rollouts over n/4 problems, 2 insights each and 64 active patterns, written with
    executemany in one transaction (rows are generated lazily: 10^6 rows never sit in memory at once)."""
    from pmd.memory.store import MemoryStore

    n_problems = max(16, n_experiences // ROLLOUTS_PER_PROBLEM)
    store = MemoryStore(path)
    last_step = (n_experiences - 1) // STEP_ROLLOUTS
    with store.transaction():
        store._touched = True
        db = store._db
        db.executemany(
            "INSERT INTO experiences (problem_uid, family, prompt, response, reward, passed, feedback, step, "
            "sample_index, answer, failure_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _experience_rows(n_experiences, n_problems))
        db.executemany(
            "INSERT INTO insights (problem_uid, family, kind, text, norm_text, source, support, experience_ids, "
            "created_step, updated_step, tag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _insight_rows(n_problems, last_step))
        for k in range(64):
            family = list(FAMILIES)[k % len(FAMILIES)]
            store.add_pattern("lesson", f"In {family}, behaviour {k}: check the value before the answer line.",
                              [1 + 2 * k, 3 + 2 * k], 2, step=last_step)
    return store, n_problems, last_step


def one_step(store, n_problems: int, step: int, rng: random.Random) -> tuple[float, float]:
    """(record seconds, index update seconds) of one 256-rollout step: half the step's problems already in memory,
    half new, as MemoryLoop.record and the reflection that follows write them; then the index catches up."""
    from pmd.memory.index import problem_index
    from pmd.memory.store import Experience, RetrievalRecord

    per_step = STEP_ROLLOUTS // ROLLOUTS_PER_PROBLEM
    ps = [rng.randrange(n_problems) for _ in range(per_step // 2)] + [n_problems + step * per_step + k
                                                                      for k in range(per_step // 2)]
    rows, records = [], []
    for k, p in enumerate(ps):
        uid, family, prompt = _problem(p)
        for r in range(ROLLOUTS_PER_PROBLEM):
            i = k * ROLLOUTS_PER_PROBLEM + r
            rows.append(Experience(uid, family, prompt, f"Answer: {i}", 0.0, False, "Expected another value.", step,
                                   i, str(i), "wrong_value"))
            records.append(RetrievalRecord(step, uid, i, "memory text", [f"insight:{p}"], 12))
    t0 = time.perf_counter()
    store.log_retrieval(records)
    store.add_experiences(rows)
    with store.transaction():
        for p in ps:
            uid, family, _ = _problem(p)
            store.upsert_insight(uid, family, "lesson", f"Recheck the value ({family} {p % 50}).", "bench", [], step)
    t1 = time.perf_counter()
    problem_index(store)
    return t1 - t0, time.perf_counter() - t1


def memory_at_scale(n_experiences: int, workdir: Path, queries: int, steps: int = 3) -> dict:
    from pmd.envs.base import Problem
    from pmd.memory.index import ProblemIndex, problem_index
    from pmd.memory.retrieve import RetrievalConfig, retrieve

    t0 = time.perf_counter()
    store, n_problems, last_step = build_store(workdir / f"mem-{n_experiences}.sqlite", n_experiences)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ProblemIndex().sync(store)
    full_index_s = time.perf_counter() - t0
    problem_index(store)  # the store's own index, as a run would hold it
    count = lambda text: len(text.split())  # noqa: E731
    cfg = RetrievalConfig()
    rng = random.Random(1)
    for p in range(5):  # warm-up (imports, first-use caches), not timed
        retrieve(store, Problem(*_problem(p)), count, cfg, exclude_experience_step=last_step + 1)
    lat = []
    for _ in range(queries):
        uid, family, prompt = _problem(rng.randrange(n_problems))
        problem = Problem(uid, family, prompt)
        t = time.perf_counter()
        got = retrieve(store, problem, count, cfg, exclude_experience_step=last_step + 1)
        lat.append(time.perf_counter() - t)
        assert got.text
    lat.sort()
    record, update = zip(*(one_step(store, n_problems, last_step + 1 + s, rng) for s in range(steps)))
    t = time.perf_counter()
    retrieve(store, Problem(*_problem(0)), count, cfg, exclude_experience_step=last_step + steps + 1)
    first_after_step = time.perf_counter() - t
    store.close()
    return {
        "problems": n_problems, "insights": n_problems * INSIGHTS_PER_PROBLEM, "store_build_s": build_s,
        "retrieve_p50_ms": 1000 * lat[len(lat) // 2], "retrieve_p99_ms": 1000 * lat[min(len(lat) - 1,
                                                                                         int(len(lat) * 0.99))],
        "retrieve_first_after_step_ms": 1000 * first_after_step,
        "step_record_ms": 1000 * statistics.fmean(record), "step_index_update_ms": 1000 * statistics.fmean(update),
        "full_index_build_ms": 1000 * full_index_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6, help="training steps per algorithm (0 = skip part 1)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="store sizes in experiences")
    parser.add_argument("--queries", type=int, default=300, help="retrievals timed per size")
    args = parser.parse_args()

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.steps > 0:
            from conftest import _build_tiny_model

            model = _build_tiny_model(tmp / "tiny")
            sdpo = step_times("sdpo", args.steps, model, tmp)
            pmd = step_times("pmd", args.steps, model, tmp)
            results["step_seconds"] = {"sdpo": statistics.fmean(sdpo), "pmd": statistics.fmean(pmd)}
            results["pmd_over_sdpo_step_ratio"] = statistics.fmean(pmd) / statistics.fmean(sdpo)
        sizes = [int(s) for s in args.sizes.split(",")]
        scale = {}
        for n in sizes:
            scale[n] = memory_at_scale(n, tmp, args.queries)
            print(f"{n} experiences: {json.dumps(scale[n])}", file=sys.stderr, flush=True)
        base = scale[sizes[0]]
        for n, row in scale.items():
            row["retrieve_p99_ratio_vs_smallest"] = row["retrieve_p99_ms"] / base["retrieve_p99_ms"]
            row["step_cost_ratio_vs_smallest"] = ((row["step_record_ms"] + row["step_index_update_ms"])
                                                  / (base["step_record_ms"] + base["step_index_update_ms"]))
            row["index_update_over_full_build"] = row["step_index_update_ms"] / row["full_index_build_ms"]
        results["memory_at_scale"] = scale
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
