"""`pmd compare`: GRPO, SDPO, PMD, PMD's two ablations and its two memory controls on the same tasks, seeds and
rollout budget.

Each (variant, seed) is an ordinary run directory under `compare.out_dir/VARIANT/seed-S`, trained by the same
`run.Run` as `pmd train` (its lock, checks, start rules and atomic writes), evaluated memory-free on the held-out
problems every `eval.every_steps` steps (rows with `eval/...` keys in its metrics.jsonl). A finished run
(summary.json present) is skipped, an unfinished one resumes from its last checkpoint, so the command can be re-run
after an interruption. Each runs in its own spawned process (`run_isolated`): that isolation is a sweep's concern
(one run's crash or memory must not touch the next), not a single run's, so it stays here.

The output is records.json (`collect`: setup, the base model's and every run's per-problem outcomes, collapse
diagnostics), table.md rendered from it alone (compare_tables.render_table: final held-out accuracy, mean ± std over
seeds, and paired-bootstrap intervals against the base model and SDPO, and PMD against each control run), and a
learning-curve PNG.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import re
import statistics
from pathlib import Path

from .compare_tables import RECORDS_FORMAT, TEACHER_KEYS, render_table, runs_by_variant
from .config import VARIANTS, RunConfig, compare_eval_every, config_changes
from .envs import EnvironmentSuite
from .errors import ConfigError, PMDError
from .report import read_metrics
from .atomic import atomic_write_text
from .rundir import RunDirLock, write_config
from .stats import DEFAULT_SAMPLES, DEFAULT_SEED

logger = logging.getLogger(__name__)

def variant_config(base: RunConfig, variant: str, seed: int) -> RunConfig:
    """The run config of one (variant, seed): only the algorithm switches differ between variants. Every variant
    sets each switch (memory mode, content and scope too), so `pmd` is PMD whatever the base config holds."""
    if variant not in VARIANTS:
        raise ConfigError(f"compare.variants: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
    cfg = copy.deepcopy(base)
    cfg.train.seed = seed
    cfg.train.algo = "pmd" if variant.startswith("pmd") else variant
    cfg.memory.mode = "evolving"
    cfg.memory.content = "placebo" if variant == "pmd-placebo" else "retrieved"
    cfg.memory.retrieval = dataclasses.replace(cfg.memory.retrieval,
                                               scope="same_problem" if variant == "pmd-same-problem" else "all")
    cfg.eval.every_steps = compare_eval_every(base.eval)
    if variant == "pmd-frozen-memory":
        cfg.memory.mode = "frozen"
        cfg.memory.freeze_after_steps = base.compare.frozen_memory_steps
    elif variant == "pmd-frozen-teacher":
        cfg.train.teacher_model_kind = "base"
    cfg.run_dir = str(Path(base.compare.out_dir) / variant / f"seed-{seed}")
    return cfg


def evaluate_base(cfg: RunConfig) -> dict:
    """Memory-free held-out evaluation of the base model (one process; `pmd compare` runs no distributed jobs)."""
    from .eval_model import evaluate_model
    from .models import resolve_model

    resolve_model(cfg.model.name_or_path)
    return evaluate_model(cfg, EnvironmentSuite.from_config(cfg.env), cfg.model.name_or_path, show_progress=False)


def run_one(cfg: RunConfig, base_eval: dict) -> dict:
    """Train one variant/seed: the same `run.Run` as `pmd train`, evaluated every `eval.every_steps` steps from the
    base model's evaluation (step 0) on, resumed from its last checkpoint if interrupted, without a report; its
    summary.json also holds the cost and final evaluation the records read. Reached only through `run_isolated`,
    which has already skipped finished runs and checked the folder's config (hence resume "auto")."""
    from .run import Run, RunOptions

    return Run(cfg, RunOptions(evaluate_models=False, resume="auto", eval_every=cfg.eval.every_steps,
                               base_eval=base_eval, compare_record=True, report=False))()


# Keys that name where or alongside what a run was made, not what was run.
_BOOKKEEPING = ("run_dir", "compare.variants", "compare.seeds", "compare.out_dir")


def _finished(cfg: RunConfig) -> bool:
    """Whether this (variant, seed) already finished. A run folder made with a different config (finished or not)
    is an error: skipping or resuming it would put another experiment's numbers into this table."""
    run_dir = Path(cfg.run_dir)
    if (run_dir / "config.yaml").is_file():
        changed = [k for k in config_changes(run_dir / "config.yaml", cfg) if not k.startswith(_BOOKKEEPING)]
        if changed:
            raise ConfigError(f"compare: {run_dir} was run with a different config ({', '.join(changed[:6])}); "
                              "move it away or choose another compare.out_dir")
    return (run_dir / "summary.json").is_file()


def run_compare(base: RunConfig) -> Path:
    """Run every (variant, seed) not yet finished, then write curves + table. Returns the table's path."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ConfigError("pmd compare runs each (variant, seed) as its own single-process job; launch it without "
                          "torchrun / accelerate (scale out single runs with pmd train)")
    from .preflight import preflight

    for v in base.compare.variants:
        for seed in base.compare.seeds:
            _finished(variant_config(base, v, seed))  # validate names and earlier runs before hours of compute
        preflight(variant_config(base, v, base.compare.seeds[0]))  # what each run checks, before anything is written
    out = Path(base.compare.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.yaml", base)
    base_path = out / "eval_base.json"
    if not base_path.is_file():
        from .evaluate import write_eval

        write_eval(base_path, evaluate_base(base))  # and its per-sample rows, eval_base.samples.jsonl
    base_eval = json.loads(base_path.read_text())
    for seed in base.compare.seeds:
        for variant in base.compare.variants:
            run_isolated(variant_config(base, variant, seed), base_eval)
    return write_comparison(base)


def run_isolated(cfg: RunConfig, base_eval: dict) -> None:
    """`run_one` in a fresh (spawned) process: each run's models and optimizer state are freed when it ends, a
    crash in one run is reported without losing the others' results, and its CPU time is its own."""
    if _finished(cfg):
        logger.info("compare: %s already finished, skipping", cfg.run_dir)
        return
    if Path(cfg.run_dir).is_dir():  # a run another process is writing: say so in one line, before spawning
        RunDirLock(cfg.run_dir).acquire().release()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=run_one, args=(cfg, base_eval), name=f"pmd-compare-{Path(cfg.run_dir).parent.name}")
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise PMDError(f"compare: run {cfg.run_dir} failed (exit code {proc.exitcode}); re-run to resume the rest")


def _read_json(path: Path, *keys: str) -> dict:
    """A JSON object a finished run wrote, holding `keys`; a damaged one is a one-line error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PMDError(f"compare: {path}: unreadable ({exc.__class__.__name__}: {exc}); re-run that run or move "
                       "it away") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise PMDError(f"compare: {path}: no '{missing[0]}' (not written by pmd compare?); move it away")
    return data


def collect(base: RunConfig, n_samples: int = DEFAULT_SAMPLES) -> dict:
    """records.json (format 2): the setup, the base model's per-problem outcomes and, per variant, one record per
    finished seed (curve, final metrics, CPU-minutes, teacher-active fraction, per-problem outcomes of the final
    evaluation, collapse diagnostics). Empty `variants` when nothing has finished."""
    out = Path(base.compare.out_dir)
    base_eval = _read_json(out / "eval_base.json", "overall") if (out / "eval_base.json").is_file() else None
    problems = ({p["uid"]: p["family"] for p in base_eval["per_problem"]}
                if base_eval is not None and "per_problem" in base_eval else {})
    variants: dict[str, list[dict]] = {}
    for variant in base.compare.variants:
        for seed in base.compare.seeds:
            run_dir = Path(variant_config(base, variant, seed).run_dir)
            if (run_dir / "summary.json").is_file():
                variants.setdefault(variant, []).append(_run_record(run_dir, seed, base_eval, problems))
    first = next((runs[0] for runs in variants.values()), None)
    overall = (base_eval or {}).get("overall") or (_base_from_metrics(first) if first else {})
    setup = {"model": base.model.name_or_path, "tasks": [t.name for t in base.env.tasks], "steps": base.train.steps,
             "prompts_per_step": base.train.prompts_per_step, "num_generations": base.train.num_generations,
             "seeds": list(base.compare.seeds), "variants": list(base.compare.variants),
             "feedback": base.train.include_environment_feedback, "eval_every": compare_eval_every(base.eval),
             "n_heldout": overall.get("n_problems", first["final"].get("n_problems", 0) if first else 0),
             "bootstrap": {"samples": n_samples, "seed": DEFAULT_SEED}}
    return build_records(setup, overall, base_eval["per_problem"] if problems else None, problems, variants)


OVERALL_KEYS = ("n_problems", "greedy_accuracy", "greedy_lenient_accuracy", "greedy_format_rate")


def build_records(setup: dict, base_overall: dict, base_rows: list[dict] | None, problems: dict[str, str],
                  variants: dict[str, list[dict]]) -> dict:
    """The records.json object (format 2) from its parts: the setup, the base model's overall evaluation and
    per-problem rows (None when not kept), {uid: family} of the held-out problems, and per variant the per-seed
    records. Pure; `collect` and scripts that table other run layouts share it, so the format has one writer."""
    return {
        "format": RECORDS_FORMAT,
        "setup": setup,
        "base": {"overall": {k: base_overall[k] for k in OVERALL_KEYS if k in base_overall},
                 "per_problem": compact_outcomes(base_rows) if base_rows is not None else None},
        "problems": problems,
        "variants": variants,
    }


def compact_outcomes(rows: list[dict]) -> dict[str, list[int]]:
    """Per-problem evaluation rows as {uid: [passed, lenient_correct, format_ok]} in 0/1."""
    return {r["uid"]: [int(r["passed"]), int(r["lenient_correct"]), int(r["format_ok"])] for r in rows}


def _base_from_metrics(record: dict) -> dict:
    """The base model's overall numbers when eval_base.json is missing: step 0 of a run's curve (strict only)."""
    return {"greedy_accuracy": record["curve"][0][1]} if record["curve"] and record["curve"][0][0] == 0 else {}


def _run_record(run_dir: Path, seed: int, base_eval: dict | None, problems: dict[str, str]) -> dict:
    summary = _read_json(run_dir / "summary.json", "final_eval", "cpu_minutes")
    rows = read_metrics(run_dir)
    curve = [(r["step"], r["eval/greedy_accuracy"]) for r in rows if "eval/greedy_accuracy" in r]
    base_overall = (base_eval or {}).get("overall") or {
        k[5:]: v for k, v in (rows[0] if rows and rows[0].get("step") == 0 else {}).items() if k.startswith("eval/")}
    teacher = teacher_diagnostics(rows)
    return {"seed": seed, "curve": curve, "final": summary["final_eval"], "cpu_minutes": summary["cpu_minutes"],
            "teacher_active": math.nan if teacher["active"] is None else teacher["active"],
            "per_problem": _final_outcomes(run_dir, summary["final_eval"], curve, problems),
            "diagnostics": collapse_diagnostics(rows, base_overall),
            "teacher": teacher}


def teacher_diagnostics(rows: list[dict]) -> dict[str, float | None]:
    """Mean over training steps of the teacher-active fraction, the share made active by memory alone, and the share
    of teacher prompts holding each memory level: why PMD's teacher differs from SDPO's, or does not. None for a
    metric the run did not log (SDPO logs no memory metrics)."""
    return {name: _mean_of(rows, key, None) for name, key in TEACHER_KEYS.items()}


def _mean_of(rows: list[dict], key: str, empty: float | None = math.nan) -> float | None:
    """Mean of `key` over the rows that logged it; `empty` when none did."""
    values = [r[key] for r in rows if key in r]
    return statistics.fmean(values) if values else empty


def _final_outcomes(run_dir: Path, final: dict, curve: list, problems: dict[str, str]) -> dict | None:
    """The final evaluation's per-problem outcomes (evals/eval-step-N.json, largest N); None for a run made before
    they were kept. One that is not the final evaluation, or holds other problems than the base model's, is an
    error: its intervals would pair unrelated outcomes."""
    files = {int(p.stem.rsplit("-", 1)[1]): p for p in (run_dir / "evals").glob("eval-step-*.json")
             if p.stem.rsplit("-", 1)[1].isdigit()}
    if not files:
        return None
    step = max(files)
    data = _read_json(files[step], "per_problem", "overall")
    if (curve and curve[-1][0] != step) or not math.isclose(
            data["overall"].get("greedy_accuracy", -1.0), final.get("greedy_accuracy", -2.0), abs_tol=1e-9):
        raise PMDError(f"compare: {files[step]} is not the final evaluation of {run_dir} (last evaluated step "
                       f"{curve[-1][0] if curve else '?'}); re-run that run or move it away")
    if problems and {p["uid"]: p["family"] for p in data["per_problem"]} != problems:
        raise PMDError(f"compare: {files[step]}: its held-out problems differ from eval_base.json's; the run was "
                       "made on another held-out set, move it away")
    return compact_outcomes(data["per_problem"])


# Collapse thresholds: a collapsed seed is reported as such, not averaged silently into its variant's mean.
FORMAT_FLOOR = 0.5  # final format rate below this fraction of the base model's
CAPPED_LIMIT = 0.5  # fraction of training completions hitting the length cap, last quarter of the steps
LENGTH_GROWTH = 1.5  # mean completion length, last quarter over first quarter of the steps


def collapse_diagnostics(rows: list[dict], base_overall: dict) -> dict:
    """Whether one run collapsed, from its metrics.jsonl rows and the base model's overall evaluation.

    Flags "format" (final format rate 0, or below half the base model's), "length" (over half of the training
    completions hit the length cap in the last quarter of the steps, or their mean length there is over 1.5x the
    first quarter's: TRL's completions/clipped_ratio and completions/mean_length), "accuracy" (final strict
    accuracy 0 while the base model's is above 0). The numbers behind the flags are kept so a table can show them."""
    evals = [r for r in rows if "eval/greedy_accuracy" in r and r.get("step", 0) > 0]
    train = sorted((r for r in rows if "completions/mean_length" in r), key=lambda r: r["step"])
    final = evals[-1] if evals else {}
    fmt, acc = final.get("eval/greedy_format_rate", math.nan), final.get("eval/greedy_accuracy", math.nan)
    base_fmt, base_acc = base_overall.get("greedy_format_rate", math.nan), base_overall.get("greedy_accuracy", math.nan)
    quarter = max(1, len(train) // 4)
    early, late = train[:quarter], train[-quarter:]
    capped, capped_early = _mean_of(late, "completions/clipped_ratio"), _mean_of(early, "completions/clipped_ratio")
    length_late, length_early = _mean_of(late, "completions/mean_length"), _mean_of(early, "completions/mean_length")
    growth = length_late / length_early if train else math.nan
    flags = []
    if fmt == 0 or fmt < FORMAT_FLOOR * base_fmt:
        flags.append("format")
    if capped > CAPPED_LIMIT or growth > LENGTH_GROWTH:
        flags.append("length")
    if acc == 0 and base_acc > 0:
        flags.append("accuracy")
    return {"final_format_rate": fmt, "base_format_rate": base_fmt, "final_accuracy": acc,
            "early_clipped_ratio": capped_early, "late_clipped_ratio": capped, "length_growth": growth, "flags": flags}


def records_json(records: dict) -> str:
    """records.json's text: indented, but every list of plain values (a curve point, a per-problem row) on one
    line, so 240 problems x seeds stay readable and diffable."""
    text = json.dumps(records, indent=1)
    return re.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")
                                                             if x.strip()) + "]", text) + "\n"


def plot_comparison(records: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for variant, recs in records.items():
        steps = sorted({s for r in recs for s, _ in r["curve"]})
        means, stds = [], []
        for s in steps:
            vals = [v for r in recs for st, v in r["curve"] if st == s]
            means.append(statistics.fmean(vals))
            stds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        ax.plot(steps, means, marker="o", label=variant)
        ax.fill_between(steps, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)], alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out greedy accuracy (memory-free)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_comparison(base: RunConfig) -> Path:
    """Curves + table from the finished runs under compare.out_dir (all of them after `run_compare`; whatever has
    finished for `pmd compare --table-only`). None finished is an error, raised before anything is written."""
    out = Path(base.compare.out_dir)
    records = collect(base)
    if not records["variants"]:
        raise PMDError(f"compare: nothing to tabulate under compare.out_dir {out}: no finished run "
                       f"(VARIANT/seed-S/summary.json) for variants {', '.join(base.compare.variants)}, seeds "
                       f"{', '.join(map(str, base.compare.seeds))}; run pmd compare without --table-only first")
    try:
        table = render_table(records)
    except ValueError as exc:  # runs that cannot be paired (another held-out set): nothing is written
        raise PMDError(f"compare: {out}: {exc}") from None
    plot_comparison(runs_by_variant(records), out / "curves.png")
    path = out / "table.md"
    atomic_write_text(out / "records.json", records_json(records))  # the data first: a table never outlives it
    atomic_write_text(path, table)
    return path
