"""`pmd compare`: GRPO, SDPO, PMD and PMD's two ablations on the same tasks, seeds and rollout budget.

Each (variant, seed) is an ordinary run directory under `compare.out_dir/VARIANT/seed-S`, evaluated memory-free on
the held-out problems every `compare.eval_every` steps (rows with `eval/...` keys in its metrics.jsonl). A finished
run (summary.json present) is skipped, an unfinished one resumes from its last checkpoint, so the command can be
re-run after an interruption. The output is a learning-curve PNG and a markdown table of final held-out accuracy
(mean ± std over seeds) with CPU-minutes per run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import multiprocessing
import os
import resource
import statistics
import time
from pathlib import Path

from .checkpoint import RunDirLock
from .config import VARIANTS, RunConfig, config_changes, save_config
from .envs import EnvironmentSuite
from .errors import ConfigError, PMDError
from .report import read_metrics

logger = logging.getLogger(__name__)

def variant_config(base: RunConfig, variant: str, seed: int) -> RunConfig:
    """The run config of one (variant, seed): only the algorithm switches differ between variants."""
    if variant not in VARIANTS:
        raise ConfigError(f"compare.variants: unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
    cfg = copy.deepcopy(base)
    cfg.train.seed = seed
    cfg.train.algo = "pmd" if variant.startswith("pmd") else variant
    cfg.memory.mode = "evolving"
    cfg.memory.teacher = "evolving"
    if variant == "pmd-frozen-memory":
        cfg.memory.mode = "frozen"
        cfg.memory.freeze_after_steps = base.compare.frozen_memory_steps
    elif variant == "pmd-frozen-teacher":
        cfg.memory.teacher = "frozen"
    cfg.run_dir = str(Path(base.compare.out_dir) / variant / f"seed-{seed}")
    return cfg


def evaluate_base(cfg: RunConfig) -> dict:
    """Memory-free held-out evaluation of the base model (one process; `pmd compare` runs no distributed jobs)."""
    from .models import resolve_model
    from .pipeline import _evaluate_model

    resolve_model(cfg.model.name_or_path)
    return _evaluate_model(cfg, EnvironmentSuite.from_config(cfg.env), cfg.model.name_or_path, show_progress=False)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (sandboxes, tokenizer workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(cfg: RunConfig, base_eval: dict) -> dict:
    """Train one variant/seed with periodic evaluation, resuming if interrupted. Reached only through
    `run_isolated`, which has already skipped finished runs and checked the folder's config."""
    from .pipeline import _last_checkpoint, preflight
    from .evaluate import append_eval
    from .trainer import train

    run_dir = Path(cfg.run_dir)
    model_path, suite = preflight(cfg)  # the same checks as `pmd train`, before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    RunDirLock(run_dir).acquire().mark()  # held until this spawned process ends: one writer per run directory
    save_config(cfg, run_dir / "config.yaml")
    metrics = run_dir / "metrics.jsonl"
    resume_from = _last_checkpoint(run_dir)
    if resume_from is None:
        metrics.unlink(missing_ok=True)
        append_eval(metrics, 0, base_eval)
    cpu0, wall0 = _cpu_seconds(), time.time()
    summary = train(cfg, run_dir, model_path, suite, resume_from=resume_from, eval_every=cfg.compare.eval_every)
    summary["cpu_minutes"] = (_cpu_seconds() - cpu0) / 60
    summary["wall_minutes"] = (time.time() - wall0) / 60
    final = [r for r in read_metrics(run_dir) if "eval/greedy_accuracy" in r][-1]
    summary["final_eval"] = {k[5:]: v for k, v in final.items() if k.startswith("eval/")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


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
    from .pipeline import preflight

    for v in base.compare.variants:
        for seed in base.compare.seeds:
            _finished(variant_config(base, v, seed))  # validate names and earlier runs before hours of compute
        preflight(variant_config(base, v, base.compare.seeds[0]))  # what each run checks, before anything is written
    out = Path(base.compare.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(base, out / "config.yaml")
    base_path = out / "eval_base.json"
    if not base_path.is_file():
        base_path.write_text(json.dumps(evaluate_base(base), indent=2), encoding="utf-8")
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


def collect(base: RunConfig) -> dict[str, list[dict]]:
    """Per variant: one record per finished seed with its curve, final metrics and CPU-minutes."""
    out: dict[str, list[dict]] = {}
    for variant in base.compare.variants:
        for seed in base.compare.seeds:
            run_dir = Path(variant_config(base, variant, seed).run_dir)
            summary_path = run_dir / "summary.json"
            if not summary_path.is_file():
                continue
            summary = _read_json(summary_path, "final_eval", "cpu_minutes")
            rows = read_metrics(run_dir)
            curve = [(r["step"], r["eval/greedy_accuracy"]) for r in rows if "eval/greedy_accuracy" in r]
            train_rows = [r for r in rows if "self_distillation/teacher_active_fraction" in r]
            active = statistics.fmean(r["self_distillation/teacher_active_fraction"] for r in train_rows) if train_rows else math.nan
            out.setdefault(variant, []).append({"seed": seed, "curve": curve, "final": summary["final_eval"],
                                                "cpu_minutes": summary["cpu_minutes"], "teacher_active": active})
    return out


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def comparison_table(records: dict[str, list[dict]]) -> str:
    keys = sorted({k for recs in records.values() for r in recs for k in r["final"]
                   if k in ("greedy_accuracy", "greedy_format_rate") or k.startswith(("avg@", "pass@"))})
    lines = ["| variant | seeds | " + " | ".join(f"final {k}" for k in keys) + " | teacher active | CPU-min/run |",
             "|---" * (4 + len(keys)) + "|"]
    for variant, recs in records.items():
        cells = [_mean_std([r["final"].get(k, math.nan) for r in recs]) for k in keys]
        lines.append(f"| {variant} | {len(recs)} | " + " | ".join(cells) +
                     f" | {_mean_std([r['teacher_active'] for r in recs])} | {_mean_std([r['cpu_minutes'] for r in recs])} |")
    return "\n".join(lines)


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
    if not records:
        raise PMDError(f"compare: nothing to tabulate under compare.out_dir {out}: no finished run "
                       f"(VARIANT/seed-S/summary.json) for variants {', '.join(base.compare.variants)}, seeds "
                       f"{', '.join(map(str, base.compare.seeds))}; run pmd compare without --table-only first")
    base_path = out / "eval_base.json"
    b = _read_json(base_path, "overall")["overall"] if base_path.is_file() else None
    table = comparison_table(records)
    plot_comparison(records, out / "curves.png")
    text = ["# pmd compare", "", f"Model `{base.model.name_or_path}`, tasks "
            f"{', '.join(t.name for t in base.env.tasks)}, {base.train.steps} steps x "
            f"{base.train.prompts_per_step * base.train.num_generations} rollouts, seeds {base.compare.seeds}.",
            "Final = memory-free held-out evaluation after the last step (mean ± std over seeds).", ""]
    if b is not None:
        text += [f"Base model (step 0, same held-out set): greedy accuracy {b['greedy_accuracy']:.3f}, "
                 f"format rate {b['greedy_format_rate']:.3f}, n = {b['n_problems']}.", ""]
    text += [table, "", "![learning curves](curves.png)", ""]
    path = out / "table.md"
    path.write_text("\n".join(text), encoding="utf-8")
    (out / "records.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path
