"""Reports from a run directory: markdown with base vs trained held-out accuracy, memory growth and examples.

Reads only files the run wrote (config.yaml, metrics.jsonl, eval_*.json, memory.sqlite), so a report can be
regenerated at any time with `pmd report RUN_DIR`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write; the rest of the log is still usable
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def eval_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per (model, family), greedy accuracy, avg@k, pass@k, format rate."""
    keys = None
    lines = []
    for label, res in results.items():
        fams = dict(res["families"])
        fams["(all)"] = res["overall"]
        for fam, m in fams.items():
            if keys is None:
                keys = [k for k in m if k != "n_problems"]
                lines.append("| model | family | n | " + " | ".join(keys) + " |")
                lines.append("|---" * (3 + len(keys)) + "|")
            lines.append(f"| {label} | {fam} | {m['n_problems']} | " + " | ".join(_fmt(m.get(k, math.nan)) for k in keys) + " |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], out: Path, keys: list[str], title: str) -> bool:
    """PNG of the given metrics over steps; returns False when nothing to plot."""
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


MEMORY_KEYS = ["memory/experiences", "memory/insights", "memory/patterns_active", "memory/patterns_retired"]


def write_report(run_dir: Path, title: str = "pmd run") -> Path:
    """Write `run_dir/report.md` (and PNG curves) from what the run recorded."""
    run_dir = Path(run_dir)
    parts = [f"# {title}", ""]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary:
        parts += [f"- algorithm: **{summary.get('algo')}**, steps: {summary.get('steps')}, "
                  f"model: `{summary.get('model')}`",
                  f"- wall time: train {summary.get('train_seconds', 0):.0f} s, "
                  f"eval {summary.get('eval_seconds', 0):.0f} s", ""]
        if summary.get("reflector"):
            parts += [f"- insight source (reflector): **{summary['reflector']}**", ""]
    evals = {}
    for label, name in (("base", "eval_base.json"), ("trained", "eval_trained.json")):
        p = run_dir / name
        if p.is_file():
            evals[label] = json.loads(p.read_text())
    if evals:
        parts += ["## Held-out accuracy (memory-free)", ""]
        if "base" in evals and "trained" in evals:
            b, t = evals["base"]["overall"], evals["trained"]["overall"]
            parts += [f"**Greedy accuracy: base {_fmt(b['greedy_accuracy'])} -> trained "
                      f"{_fmt(t['greedy_accuracy'])}** (format rate {_fmt(b['greedy_format_rate'])} -> "
                      f"{_fmt(t['greedy_format_rate'])}).", ""]
        parts += [eval_table(evals), ""]
    rows = read_metrics(run_dir)
    if rows:
        reward_keys = [k for k in ("reward", "self_distillation/teacher_active_fraction",
                                   "pmd/memory_context_fraction") if any(k in r for r in rows)]
        if plot_curves(rows, run_dir / "training.png", reward_keys, "training signal"):
            parts += ["## Training", "", "![training](training.png)", ""]
        last = rows[-1]
        table = [(k, last[k]) for k in sorted(last) if k.startswith(("reward", "self_distillation/", "pmd/", "loss"))]
        if table:
            parts += ["| metric (last step) | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in table]
            parts.append("")
        active = _mean_of(rows, "self_distillation/teacher_active_fraction")
        if active is not None:
            line = f"Mean teacher-active fraction over the run: **{active:.3f}**"
            sdpo = _mean_of(rows, "pmd/sdpo_teacher_active_fraction")
            if sdpo is not None:
                only = _mean_of(rows, "pmd/memory_only_active_fraction") or 0.0
                line += (f" (SDPO's rule on the same rollouts, sibling success or feedback: **{sdpo:.3f}**; "
                         f"active through memory alone: {only:.3f})")
            parts += [line, ""]
    if any("memory/experiences" in r for r in rows):
        parts += _memory_section(run_dir, rows)
    out = run_dir / "report.md"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def _memory_section(run_dir: Path, rows: list[dict]) -> list[str]:
    parts = ["## Memory", ""]
    if plot_curves(rows, run_dir / "memory.png", MEMORY_KEYS, "memory growth"):
        parts += ["![memory growth](memory.png)", ""]
    parts += ["| step | experiences | insights | patterns (active) | patterns (retired) |", "|---|---|---|---|---|"]
    for r in rows:
        if "memory/experiences" in r:
            parts.append(f"| {r['step']} | {int(r['memory/experiences'])} | {int(r['memory/insights'])} | "
                         f"{int(r['memory/patterns_active'])} | {int(r['memory/patterns_retired'])} |")
    parts.append("")
    db = run_dir / "memory.sqlite"
    if db.is_file():
        from .memory.store import MemoryStore

        with MemoryStore.open_existing(db) as store:
            insights = store.insights()[:5]
            patterns = store.patterns(status=None)[:5]
        if insights:
            parts += ["Example insights:", ""] + [
                f"- [{i.kind}, {i.problem_uid}, support {i.support}] {i.text}" for i in insights] + [""]
        if patterns:
            parts += ["Example patterns:", ""] + [
                f"- [{p.kind}, {p.status}, {p.support_problems} problems] {p.text}" for p in patterns] + [""]
    return parts
