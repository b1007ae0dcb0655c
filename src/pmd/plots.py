"""The report's figures: which metrics go in which panel, and how a panel is drawn so that it cannot mislead.

Rules every panel follows (report.md's training.png and memory.png):
- one y axis per kind of quantity (a loss near 1e-6 and a fraction near 1 share no useful axis);
- a fraction or accuracy is drawn on [0, 1], so a flat 0 reads as 0, not as noise on a +-0.04 axis; any other
  flat series gets an axis around its value, and its legend says it is constant;
- series that overlap stay visible: each has its own marker and line style, drawn half-transparent;
- the held-out accuracy panel starts at the base model (step 0, eval_base.json) and ends at the trained model
  (eval_trained.json), with the periodic evaluations in between, and shows the strict accuracy beside the format
  rate and the content (lenient) accuracy, so a format failure is not read as a content failure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

Series = dict[str, list[tuple[int, float]]]

# Each algorithm logs its reward under its own name: GRPO's trainer as `reward`, the self-distillation trainer
# (SDPO, and PMD on top of it) as `self_distillation/reward_mean`. A panel plots whichever a run has.
TRAINING_PANELS = [
    ("reward (mean over rollouts)", ["reward", "self_distillation/reward_mean"]),
    ("loss", ["loss"]),
    ("teacher-active fraction of rollouts", ["self_distillation/reprompt_sample_fraction",
                                             "pmd/sdpo_teacher_active_fraction", "pmd/memory_context_fraction"]),
    ("completion length (tokens, mean)", ["completions/mean_length"]),
    ("clipped fraction of completions (hit max_completion_length)", ["completions/clipped_ratio"]),
]
REWARD_TERMS_PANEL = "reward per term (mean over rollouts)"
HELD_OUT_PANEL = "held-out accuracy (memory-free; step 0 = base model)"
# The held-out panel's series: strict accuracy, and what it is made of (format followed; right answer anywhere).
HELD_OUT_KEYS = {"eval/greedy_accuracy": "greedy_accuracy", "eval/greedy_format_rate": "greedy_format_rate",
                 "eval/greedy_lenient_accuracy": "greedy_lenient_accuracy"}
# Panels whose values are fractions: drawn on [0, 1].
FRACTION_PANELS = {"teacher-active fraction of rollouts", HELD_OUT_PANEL,
                   "clipped fraction of completions (hit max_completion_length)"}

# Per-term rewards as TRL logs them: GRPO `rewards/<name>/mean`, SDPO/PMD `self_distillation/rewards/<name>`.
_TERM_KEY = re.compile(r"^(rewards/[^/]+/mean|self_distillation/rewards/[^/]+)$")
_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("x", "--")]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def series(rows: list[dict], keys: list[str]) -> Series:
    """{metric: [(step, value)]} for each of `keys`, over the rows that have a number for it."""
    return {k: [(r["step"], r[k]) for r in rows if _is_number(r.get(k))] for k in keys}


def reward_term_keys(rows: list[dict]) -> list[str]:
    """The per-term reward metrics the rows hold, in a stable order: `rewards/<name>/mean` (pmd logs it for every
    algorithm), and SDPO's own `self_distillation/rewards/<name>` only for a term that has no such mean (the same
    value under a second name would draw one curve twice)."""
    keys = {k for r in rows for k in r if _TERM_KEY.match(k)}
    means = {k.split("/")[1] for k in keys if k.startswith("rewards/")}
    return sorted(k for k in keys if k.startswith("rewards/") or k.rsplit("/", 1)[1] not in means)


def held_out_series(eval_rows: list[dict], base: dict | None, trained: dict | None) -> Series:
    """Strict accuracy, format rate and lenient accuracy over steps: the base model at step 0, the periodic
    evaluations, the trained model at its step (`trained` carries `step`); a step evaluated twice keeps the
    periodic value (they are the same evaluation)."""
    points: dict[str, dict[int, float]] = {k: {} for k in HELD_OUT_KEYS}
    for step, result in ((0, base), (trained.get("step") if trained else None, trained)):
        overall = (result or {}).get("overall") or {}
        if result is None or not isinstance(step, int):
            continue
        for key, name in HELD_OUT_KEYS.items():
            if _is_number(overall.get(name)):
                points[key][step] = overall[name]
    for r in eval_rows:
        for key in HELD_OUT_KEYS:
            if _is_number(r.get(key)):
                points[key][r["step"]] = r[key]
    return {k: sorted(v.items()) for k, v in points.items()}


def plot_panels(panels: list[tuple[str, Series]], out: Path, title: str) -> list[str]:
    """One PNG, one panel per (name, {metric: [(step, value)]}) that has points, under `title` (none when
    empty); returns the panels drawn."""
    panels = [(name, {k: pts for k, pts in s.items() if pts}) for name, s in panels]
    panels = [(name, s) for name, s in panels if s]
    if not panels:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 2.4 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], panels):
        draw_panel(ax, name, s)
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100, format="png")  # `out` may be a temporary name
    plt.close(fig)
    return [name for name, _ in panels]


def draw_panel(ax, name: str, s: Series) -> None:
    """One panel: every series with its own marker and line style, half-transparent (overlaps stay visible); a
    constant series says so in its label; the y range by `y_limits`."""
    for i, (k, pts) in enumerate(s.items()):
        marker, style = _STYLES[i % len(_STYLES)]
        values = [p[1] for p in pts]
        label = k if len(set(values)) > 1 or len(values) == 1 else f"{k} (constant {values[0]:g})"
        ax.plot([p[0] for p in pts], values, marker=marker, linestyle=style, alpha=0.75, markersize=5 + 1.5 * i,
                markerfacecolor="none" if i else None, label=label)
    limits = y_limits(name, [v for pts in s.values() for _, v in pts])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7)


def y_limits(name: str, values: list[float]) -> tuple[float, float] | None:
    """The y range of a panel, or None for matplotlib's own: [0, 1] (padded) for fractions; around the value for
    any other flat panel, where matplotlib would zoom into +-0.04 of it and make a constant look like signal."""
    if name in FRACTION_PANELS and all(-1e-9 <= v <= 1 + 1e-9 for v in values):
        return -0.05, 1.05
    if values and max(values) == min(values):
        v = values[0]
        half = abs(v) * 0.5 if v else 1.0
        return v - half, v + half
    return None


def plot_curves(rows: list[dict], out: Path, keys: list[str], title: str) -> bool:
    """PNG of the given metrics over steps, one panel; returns False when nothing to plot."""
    return bool(plot_panels([(title, series(rows, keys))], out, ""))


def plot_training(steps: list[dict], eval_rows: list[dict], out: Path, base: dict | None = None,
                  trained: dict | None = None) -> dict[str, list[str]]:
    """training.png: reward, per-term rewards, loss, teacher-active fraction, completion length and clipped
    fraction from the training rows (`steps`), and held-out accuracy from the base model at step 0 through the
    periodic evaluations to the trained model. Returns {panel: metric keys plotted} so the report can say what
    the figure shows."""
    panels = [(name, series(steps, keys)) for name, keys in TRAINING_PANELS[:1]]
    terms = reward_term_keys(steps)
    if terms:
        panels.append((REWARD_TERMS_PANEL, series(steps, terms)))
    panels += [(name, series(steps, keys)) for name, keys in TRAINING_PANELS[1:]]
    panels.append((HELD_OUT_PANEL, held_out_series(eval_rows, base, trained)))
    drawn = plot_panels(panels, out, "training")
    return {name: [k for k, pts in s.items() if pts] for name, s in panels if name in drawn}
