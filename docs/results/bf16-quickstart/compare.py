"""bf16 autocast against fp32 end to end: the quickstart at 3 seeds under the new CPU default (fp32 master weights,
bf16 compute, generation and evaluation under the same autocast) against the same 3 seeds' fp32 runs of the
settings search (docs/results/smollm2-quickstart-search, variant "pmd"), paired by seed and held-out problem
(pmd.stats.compare_outcomes: seeds and problems resampled).

    python docs/results/bf16-quickstart/compare.py [RUNS_DIR]

With RUNS_DIR (holding seed-0/, seed-1/, seed-2/ of `pmd train configs/quickstart.yaml --set train.seed=N`) the
runs' per-problem outcomes (trained, and the base model evaluated under bf16 autocast) are first written to
outcomes.json beside this file; without, outcomes.json is read.

Each variant is also compared with its own base evaluation: greedy decoding under bf16 autocast picks other tokens
than under fp32 on some problems, so the base model itself scores differently in the two precisions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pmd.compare import compact_outcomes
from pmd.stats import compare_outcomes

HERE = Path(__file__).resolve().parent
SEARCH = HERE.parent / "smollm2-quickstart-search" / "records.json"
SEEDS = ("0", "1", "2")
METRICS = ("strict", "content", "format")  # compact_outcomes' order: passed, lenient_correct, format_ok


def collect(runs: Path) -> dict:
    out: dict = {"seeds": {}}
    for seed in SEEDS:
        run = runs / f"seed-{seed}"
        trained = json.loads((run / "eval_trained.json").read_text())
        base = json.loads((run / "eval_base.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        out["seeds"][seed] = {"per_problem": compact_outcomes(trained["per_problem"]),
                              "train_seconds": summary["train_seconds"], "precision": summary["precision"]}
        out.setdefault("base", compact_outcomes(base["per_problem"]))  # the same greedy evaluation for every seed
    return out


def column(outcomes: dict[str, list[int]], i: int) -> dict[str, int]:
    return {uid: v[i] for uid, v in outcomes.items()}


def rate(outcomes: dict[str, list[int]], i: int) -> float:
    return sum(v[i] for v in outcomes.values()) / len(outcomes)


def main() -> int:
    if len(sys.argv) > 1:
        (HERE / "outcomes.json").write_text(json.dumps(collect(Path(sys.argv[1])), indent=1))
    bf16 = json.loads((HERE / "outcomes.json").read_text())
    records = json.loads(SEARCH.read_text())
    fp32 = {str(r["seed"]): r["per_problem"] for r in records["variants"]["pmd"]}
    bases = {"fp32": records["base"]["per_problem"], "bf16": bf16["base"]}
    runs = {"fp32": [fp32[s] for s in SEEDS], "bf16": [bf16["seeds"][s]["per_problem"] for s in SEEDS]}
    print("| model | strict | content | format |\n|---|---|---|---|")
    for name in ("fp32", "bf16"):
        print(f"| base, evaluated in {name} | " + " | ".join(f"{rate(bases[name], i):.2f}" for i in range(3)) + " |")
    for seed_i, seed in enumerate(SEEDS):
        for name in ("fp32", "bf16"):
            print(f"| trained in {name}, seed {seed} | "
                  + " | ".join(f"{rate(runs[name][seed_i], i):.2f}" for i in range(3)) + " |")
    print("\n| paired over 3 seeds x 100 problems (95% CI) | " + " | ".join(METRICS) + " |\n|---|---|---|---|")
    rows = (("bf16 trained - fp32 trained", runs["bf16"], runs["fp32"]),
            ("fp32 trained - fp32 base", runs["fp32"], bases["fp32"]),
            ("bf16 trained - bf16 base", runs["bf16"], bases["bf16"]))
    for label, variant, reference in rows:
        cells = []
        for i in range(3):
            ref = column(reference, i) if isinstance(reference, dict) else [column(r, i) for r in reference]
            ci = compare_outcomes([column(v, i) for v in variant], ref)
            cells.append(f"{ci.mean:+.3f} [{ci.lo:+.3f}, {ci.hi:+.3f}]")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\ntrain seconds (bf16): " + ", ".join(f"{bf16['seeds'][s]['train_seconds']:.0f}" for s in SEEDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
