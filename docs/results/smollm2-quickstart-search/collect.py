"""Issue 13, point 4: records.json, table.md and curves.png of the quickstart settings search.

Each setting is one `pmd train configs/quickstart.yaml --run-dir runs/s4/NAME --set ...` run (GROUPS below names
the runs; the README beside this file gives each one's overrides); every run evaluates the base model and the trained
model memory-free, greedily, on the same 100 held-out problems. This script turns those run directories into the
records format that `pmd compare` writes (format 2), so the table is rendered by the same
`pmd.compare_tables.render_table` and the regeneration test (tests/test_results_tables.py) covers it.
Run from the repository root:

    python docs/results/smollm2-quickstart-search/collect.py RUNS_DIR [FOLDER]

(FOLDER: only that group, e.g. `runs/qs25 after-label-fix`.)

Differences from a `pmd compare` record, stated in the README beside the table: the curve has two points (the base
model at step 0, the trained model at the last step: these runs evaluate nowhere in between); the collapse check's
"final" evaluation is eval_trained.json; "CPU-min/run" holds the training's wall-clock minutes (one thread per run,
two runs side by side on the 2-core machine).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from pmd.compare import (OVERALL_KEYS, build_records, collapse_diagnostics, compact_outcomes, plot_comparison,
                         records_json, teacher_diagnostics)
from pmd.compare_tables import render_table, runs_by_variant
from pmd.report import read_metrics
from pmd.stats import DEFAULT_SAMPLES, DEFAULT_SEED

HERE = Path(__file__).resolve().parent
# folder -> {variant label -> [(seed, run directory name)]}; a label names what differs from configs/quickstart.yaml
# ("pmd" is the quickstart itself, "sdpo" and "grpo" the quickstart with train.algo switched).
# One folder per evaluation setup: runs in a folder share one base-model evaluation ("completion-96" evaluates with
# 96-token answers, so its base model scores differently and it is tabled on its own).
GROUPS = {
    ".": {
        "sdpo": [(0, "sdpo-s0"), (1, "sdpo-s1"), (2, "sdpo-s2")],
        "pmd": [(0, "pmd-s0"), (1, "pmd-s1"), (2, "pmd-s2")],
        "grpo": [(0, "grpo-s0")],
        "pmd lr=1e-5": [(0, "pmd-lr1e5")],
        "pmd distillation_weight=0.5": [(0, "pmd-w05"), (1, "pmd-w05-s1")],
        "pmd LoRA r=16 lr=1e-4": [(0, "pmd-lora")],
        "pmd lenient_credit=0.5": [(0, "pmd-lc05")],
        "pmd distillation_weight=0.5 lenient_credit=0.5": [(0, "pmd-w05-lc05")],
    },
    "completion-96": {"pmd completion=96": [(0, "pmd-len96")]},
    # issue 25: the quickstart unchanged, re-run at the code after the label fix (runs/qs25/seed-S)
    "after-label-fix": {"pmd": [(0, "seed-0"), (1, "seed-1"), (2, "seed-2")]},
}
def run_record(run: Path, seed: int, base_overall: dict, problems: dict[str, str]) -> dict:
    trained = json.loads((run / "eval_trained.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    if {p["uid"]: p["family"] for p in trained["per_problem"]} != problems:
        raise SystemExit(f"{run}: evaluated on other problems than the base model")
    rows = read_metrics(run)
    steps = summary["steps"]
    final_row = {"step": steps, **{f"eval/{k}": v for k, v in trained["overall"].items()}}
    teacher = teacher_diagnostics(rows)
    curve = [(0, base_overall["greedy_accuracy"]), (steps, trained["overall"]["greedy_accuracy"])]
    return {"seed": seed, "curve": curve,
            "final": {k: trained["overall"][k] for k in OVERALL_KEYS},
            "cpu_minutes": summary["train_seconds"] / 60,
            "teacher_active": float("nan") if teacher["active"] is None else teacher["active"],
            "per_problem": compact_outcomes(trained["per_problem"]),
            "diagnostics": collapse_diagnostics(rows + [final_row], base_overall),
            "teacher": teacher}


def write_group(runs: Path, settings: dict, out: Path) -> None:
    found = {label: [(s, runs / name) for s, name in seeds if (runs / name / "eval_trained.json").is_file()]
             for label, seeds in settings.items()}
    found = {label: seeds for label, seeds in found.items() if seeds}
    first = next(iter(found.values()))[0][1]
    base = json.loads((first / "eval_base.json").read_text())
    problems = {p["uid"]: p["family"] for p in base["per_problem"]}
    for seeds in found.values():
        for _, run in seeds:  # greedy evaluation of the same weights: every run's base evaluation must agree
            theirs = json.loads((run / "eval_base.json").read_text())["per_problem"]
            if compact_outcomes(theirs) != compact_outcomes(base["per_problem"]):
                raise SystemExit(f"{run}: its base-model evaluation differs from {first}'s")
    config = yaml.safe_load((first / "config.yaml").read_text())
    variants = {label: [run_record(run, s, base["overall"], problems) for s, run in seeds]
                for label, seeds in found.items()}
    setup = {"model": config["model"]["name_or_path"], "tasks": [t["name"] for t in config["env"]["tasks"]],
             "steps": config["train"]["steps"], "prompts_per_step": config["train"]["prompts_per_step"],
             "num_generations": config["train"]["num_generations"],
             "seeds": sorted({s for seeds in found.values() for s, _ in seeds}), "variants": list(found),
             "feedback": config["train"]["include_environment_feedback"], "eval_every": config["train"]["steps"],
             "n_heldout": base["overall"]["n_problems"],
             "bootstrap": {"samples": DEFAULT_SAMPLES, "seed": DEFAULT_SEED}}
    records = build_records(setup, base["overall"], base["per_problem"], problems, variants)
    (out / "records.json").write_text(records_json(records))
    records = json.loads((out / "records.json").read_text())  # render what was written, as the test does
    (out / "table.md").write_text(render_table(records))
    plot_comparison(runs_by_variant(records), out / "curves.png")
    print(f"{out / 'table.md'}: {', '.join(found)}")


def main(runs: Path, only: str | None = None) -> None:
    for folder, settings in GROUPS.items():
        if only is None or folder == only:
            (HERE / folder).mkdir(exist_ok=True)
            write_group(runs, settings, HERE / folder)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
