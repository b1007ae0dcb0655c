"""bf16 autocast against fp32 end to end: the quickstart under bf16 compute (fp32 master weights; generation and
evaluation under the same autocast) against fp32 compute, seed by seed, paired by seed and held-out problem
(pmd.stats.compare_outcomes: seeds and problems resampled).

    python docs/results/bf16-quickstart/compare.py [RUNS_DIR]

RUNS_DIR holds bf16/seed-N/ and fp32/seed-N/, each a `pmd train configs/quickstart.yaml --set train.seed=N --set
model.compute_dtype=...` run. With it, the runs' per-problem outcomes (and the base model's, evaluated in bf16) are
first written to outcomes.json beside this file; without, outcomes.json is read. fp32 seeds 0-2 are the settings
search's runs (docs/results/smollm2-quickstart-search, variant "pmd"); fp32 seeds run here are added to them.

Each precision is also compared with its own base evaluation: greedy decoding under bf16 autocast picks other
tokens than under fp32 on some problems, so the base model itself scores differently in the two precisions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pmd.compare import compact_outcomes
from pmd.compare_tables import OUTCOMES, outcomes_of
from pmd.stats import compare_outcomes

HERE = Path(__file__).resolve().parent
SEARCH = HERE.parent / "smollm2-quickstart-search" / "records.json"
LABELS = {"strict": "strict", "lenient": "content", "format": "format"}  # OUTCOMES' kinds, as this page names them


def collect(runs: Path) -> dict:
    out: dict = {"bf16": {}, "fp32": {}}
    for precision in ("bf16", "fp32"):
        for run in sorted((runs / precision).glob("seed-*"), key=lambda p: int(p.name[5:])):
            trained = json.loads((run / "eval_trained.json").read_text())
            summary = json.loads((run / "summary.json").read_text())
            out[precision][run.name[5:]] = {"per_problem": compact_outcomes(trained["per_problem"]),
                                            "train_seconds": summary["train_seconds"],
                                            "precision": summary["precision"]}
            if precision == "bf16":  # the same greedy evaluation of the base model for every seed
                out.setdefault("base_bf16", compact_outcomes(json.loads((run / "eval_base.json").read_text())
                                                             ["per_problem"]))
    return out


def rate(outcomes: dict[str, list[int]], kind: str) -> float:
    return sum(outcomes_of(outcomes, kind).values()) / len(outcomes)


def interval(variant: list[dict], reference, kind: str) -> str:
    ref = (outcomes_of(reference, kind) if isinstance(reference, dict)
           else [outcomes_of(r, kind) for r in reference])
    ci = compare_outcomes([outcomes_of(v, kind) for v in variant], ref)
    return f"{ci.mean:+.3f} [{ci.lo:+.3f}, {ci.hi:+.3f}]"


def main() -> int:
    if len(sys.argv) > 1:
        (HERE / "outcomes.json").write_text(json.dumps(collect(Path(sys.argv[1])), indent=1))
    data = json.loads((HERE / "outcomes.json").read_text())
    records = json.loads(SEARCH.read_text())
    fp32 = {str(r["seed"]): r["per_problem"] for r in records["variants"]["pmd"]}
    fp32.update({s: r["per_problem"] for s, r in data["fp32"].items()})
    bf16 = {s: r["per_problem"] for s, r in data["bf16"].items()}
    seeds = sorted(set(fp32) & set(bf16), key=int)
    bases = {"fp32": records["base"]["per_problem"], "bf16": data["base_bf16"]}
    runs = {"fp32": [fp32[s] for s in seeds], "bf16": [bf16[s] for s in seeds]}
    header = " | ".join(LABELS[kind] for kind in OUTCOMES) + " |\n|---|---|---|---|"
    print("| model | " + header)
    for name in ("fp32", "bf16"):
        print(f"| base, evaluated in {name} | " + " | ".join(f"{rate(bases[name], k):.2f}" for k in OUTCOMES) + " |")
    for i, seed in enumerate(seeds):
        for name in ("fp32", "bf16"):
            print(f"| trained in {name}, seed {seed} | "
                  + " | ".join(f"{rate(runs[name][i], k):.2f}" for k in OUTCOMES) + " |")
    print(f"\n| paired over {len(seeds)} seeds x {len(runs['bf16'][0])} problems (95% CI) | " + header)
    rows = (("bf16 trained - fp32 trained", runs["bf16"], runs["fp32"]),
            ("fp32 trained - fp32 base", runs["fp32"], bases["fp32"]),
            ("bf16 trained - bf16 base", runs["bf16"], bases["bf16"]))
    for label, variant, reference in rows:
        print(f"| {label} | " + " | ".join(interval(variant, reference, k) for k in OUTCOMES) + " |")
    first = [s for s in seeds if int(s) < 3]
    if len(first) != len(seeds):
        print(f"\n| seeds {', '.join(first)} only (the first write-up) | " + header)
        print("| bf16 trained - fp32 trained | " + " | ".join(
            interval([bf16[s] for s in first], [fp32[s] for s in first], k) for k in OUTCOMES) + " |")
    print("\ntrain seconds: " + "; ".join(f"{name} " + ", ".join(f"{data[name][s]['train_seconds']:.0f}"
                                                              for s in sorted(data[name], key=int))
                                        for name in ("bf16", "fp32") if data[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
