"""Reports from a run directory: markdown with base vs trained held-out accuracy, memory growth and examples.

Reads only files the run wrote (config.yaml, metrics.jsonl, eval_*.json, memory.sqlite), so a report can be
regenerated at any time with `pmd report RUN_DIR` (but not into a run a live `pmd train` holds: that run writes its
own report when it ends): the memory store is opened read-only and the report's own files are replaced
atomically, only after every input and every target passed its checks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from . import plots
from .plots import plot_curves


# The fraction of rollouts with an active teacher, under TRL's name (TRL's own inactive-teacher warning reads it).
TEACHER_ACTIVE = "self_distillation/reprompt_sample_fraction"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl that are steps. A damaged line (cut by a kill mid-write, bytes that are not
    UTF-8) is skipped: the rest of the log is still usable."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for raw in path.read_bytes().splitlines():
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        if line:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write; the rest of the log is still usable
            if isinstance(row, dict) and _is_int(row.get("step", 0)):  # a foreign or damaged row is no step
                rows.append(_current_names(row))
    return rows


# Metrics a run logged under another name before: an older run's rows read as a new run's.
RENAMED_METRICS = {"self_distillation/teacher_active_fraction": TEACHER_ACTIVE}  # pmd's copy of TRL's value


def _current_names(row: dict[str, Any]) -> dict[str, Any]:
    for old, new in RENAMED_METRICS.items():
        if old in row:
            value = row.pop(old)
            row.setdefault(new, value)
    return row


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    """A number that can be shown as a whole count (JSON's Infinity and NaN cannot)."""
    return _is_number(v) and math.isfinite(v)


def _fmt(v: Any) -> str:
    """Three decimals, except for magnitudes three decimals would hide or bloat (a 5e-06 loss is not 0.000)."""
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3f}" if v == 0 or 1e-3 <= abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


def eval_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per (model, family), greedy accuracy, avg@k, pass@k, format rate."""
    # every metric any evaluation has (a base model evaluated with eval.num_samples > 0 and a trained one
    # without: avg@k / pass@k show as n/a where missing)
    keys = list(dict.fromkeys(k for res in results.values() for m in [res["overall"], *res["families"].values()]
                              for k in m if k != "n_problems"))
    lines = ["| model | family | n | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    for label, res in results.items():
        fams = dict(res["families"])
        fams["(all)"] = res["overall"]
        for fam, m in fams.items():
            lines.append(f"| {label} | {fam} | {m['n_problems']} | " + " | ".join(_fmt(m.get(k, math.nan)) for k in keys) + " |")
    return "\n".join(lines)


def training_rows(rows: list[dict]) -> list[dict]:
    """The per-step training rows, one per step (the last one logged for it), in step order.

    metrics.jsonl also holds the Trainer's end-of-training row (`train_runtime`, whole-run aggregates, and the
    memory counts again) and, under `pmd compare`, periodic-evaluation rows that carry only `eval/...` keys;
    neither is a training step, and counting them would repeat or hide the last step."""
    by_step: dict[int, dict] = {}
    for r in rows:
        if "step" not in r or "train_runtime" in r:
            continue
        if any(k not in ("step", "epoch") and not k.startswith("eval/") for k in r):
            by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]


def eval_rows(rows: list[dict]) -> list[dict]:
    """Rows of the periodic held-out evaluation (`pmd compare`'s eval_every), one per step."""
    by_step = {r["step"]: r for r in rows if "step" in r and "eval/greedy_accuracy" in r}
    return [by_step[s] for s in sorted(by_step)]


# TRL logs the distillation loss twice, under both names, with the same value; the report shows it once.
DUPLICATE_KEYS = {"sdpo/distillation_loss": "self_distillation/distillation_loss"}
LAST_STEP_PREFIXES = ("loss", "grad_norm", "reward", "rewards/", "frac_reward_zero_std", "entropy",
                      "completions/mean_length", "completions/clipped_ratio", "self_distillation/", "sdpo/", "pmd/",
                      "env/")


def plot_training(rows: list[dict], out: Path, base: dict | None = None,
                  trained: dict | None = None) -> dict[str, list[str]]:
    """training.png from metrics.jsonl's rows (plots.plot_training), the base model's evaluation (`base`,
    eval_base.json) at step 0 and the trained model's (`trained`, eval_trained.json) at its step. Returns {panel:
    metric keys plotted}."""
    return plots.plot_training(training_rows(rows), eval_rows(rows), out, base, trained)


def last_step_table(rows: list[dict]) -> list[str]:
    """Markdown table of the last training step's metrics (not the end-of-training row), each value once."""
    steps = training_rows(rows)
    if not steps:
        return []
    last = steps[-1]
    keys = [k for k in sorted(last) if k.startswith(LAST_STEP_PREFIXES)
            and not (k in DUPLICATE_KEYS and DUPLICATE_KEYS[k] in last)]
    if not keys:
        return []
    return ([f"| metric (last training step: {last['step']}) | value |", "|---|---|"]
            + [f"| {k} | {_fmt(last[k])} |" for k in keys])


# The step's phases in the order they run (step.py); a phase not listed (a new one) comes last, by name.
PHASE_ORDER = ("generate", "reward", "teacher_context", "retrieve", "plan", "render", "prepare_batch", "loss_forward",
               "backward", "optimizer", "ema_sync", "record", "reflect", "consolidate", "eval", "save")


def phase_table(rows: list[dict]) -> list[str]:
    """Markdown table of where a training step's time goes: each phase's mean seconds per step (`time/<phase>`,
    exclusive of the phases inside it) and its share of their sum, in step order."""
    steps = training_rows(rows)
    names = {k[len("time/"):] for r in steps for k in r if k.startswith("time/")}
    if not names:
        return []
    mean = {n: sum(r.get(f"time/{n}", 0.0) for r in steps) / len(steps) for n in names}
    total = sum(mean.values()) or 1.0
    order = sorted(names, key=lambda n: (PHASE_ORDER.index(n) if n in PHASE_ORDER else len(PHASE_ORDER), n))
    return ([f"| phase (mean over {len(steps)} steps) | seconds per step | share |", "|---|---|---|"]
            + [f"| {n} | {mean[n]:.3f} | {mean[n] / total:.0%} |" for n in order])


MEMORY_KEYS = ["memory/experiences", "memory/insights", "memory/patterns_active", "memory/patterns_retired"]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# summary.json keys the report reads, and the type each must have when present.
_SUMMARY_TYPES: dict[str, tuple[str, Any]] = {
    "steps": ("an integer", _is_int), "train_seconds": ("a number", _is_number),
    "eval_seconds": ("a number", _is_number), "algo": ("a string", lambda v: isinstance(v, str)),
    "model": ("a string", lambda v: isinstance(v, str)), "reflector": ("a string", lambda v: isinstance(v, str)),
}


def input_problem(name: str, data: Any) -> str | None:
    """What is wrong with the parsed content of a run file the report reads whole (summary.json, eval_base.json,
    eval_trained.json), or None. Pure: `check_inputs` turns it into an error naming the file."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    if name == "summary.json":
        for key, (what, ok) in _SUMMARY_TYPES.items():
            if data.get(key) is not None and not ok(data[key]):
                return f"'{key}' is {data[key]!r}, expected {what}"
        return None
    overall, families = data.get("overall"), data.get("families")
    if not isinstance(overall, dict) or not isinstance(families, dict):
        return "expected an evaluation with 'overall' and 'families' objects"
    if "step" in data and not _is_int(data["step"]):
        return f"'step' is {data['step']!r}, expected an integer"
    for family, metrics in [("overall", overall), *families.items()]:
        if not isinstance(metrics, dict):
            return f"family '{family}': expected an object of metrics"
        if not _is_int(metrics.get("n_problems")):
            return f"'{family}': 'n_problems' is {metrics.get('n_problems')!r}, expected an integer"
        bad = next((k for k, v in metrics.items() if not _is_number(v)), None)
        if bad is not None:
            return f"'{family}': '{bad}' is {metrics[bad]!r}, expected a number"
    missing = [k for k in ("greedy_accuracy", "greedy_format_rate") if k not in overall]
    return f"'overall' has no {', '.join(missing)}" if missing else None


# What the report writes into the run directory (each replaced whole, by a rename).
REPORT_FILES = ("report.md", "training.png", "memory.png")


def target_problem(path: Path) -> str | None:
    """Why the report cannot replace `path` (one of REPORT_FILES), or None: a rename cannot replace a directory,
    and finding out at the last file would leave the others already replaced. Reads only."""
    if path.is_dir() and not path.is_symlink():
        return "is a directory, where the report writes a file; move it away, then pmd report again"
    return None


def check_inputs(run_dir: Path) -> None:
    """Raise PMDError (one line, naming the file) unless every JSON file the report reads whole is readable and of
    the shape it expects, config.yaml is text, and every file the report replaces can be replaced. Called before
    the report writes anything."""
    from .errors import PMDError

    for name in REPORT_FILES:
        problem = target_problem(run_dir / name)
        if problem:
            raise PMDError(f"{run_dir / name}: {problem}")
    config = run_dir / "config.yaml"
    if config.is_file():
        try:
            config.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PMDError(f"{config}: unreadable ({exc.__class__.__name__}: {exc})") from None

    for name in ("summary.json", "eval_base.json", "eval_trained.json"):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PMDError(f"{path}: unreadable ({exc.__class__.__name__}: {exc})") from None
        problem = input_problem(name, data)
        if problem:
            raise PMDError(f"{path}: {problem}")


def _read_config(run_dir: Path) -> dict:
    """config.yaml as plain data (no validation: a report of an older run must not fail on a renamed option)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def run_identity(run_dir: Path, rows: list[dict] | None = None) -> dict[str, Any]:
    """Algorithm, model and steps of a run, from what it wrote: summary.json when training finished, else
    config.yaml and the last logged step. `finished` is False when there is no summary.json."""
    summary = _read_json(run_dir / "summary.json")
    cfg = _read_config(run_dir)
    train_cfg = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    steps = summary.get("steps")
    if steps is None:
        logged = training_rows(rows if rows is not None else read_metrics(run_dir))
        steps = logged[-1]["step"] if logged else 0
    return {"algo": summary.get("algo") or train_cfg.get("algo"),
            "model": summary.get("model") or model_cfg.get("name_or_path"),
            "steps": steps, "configured_steps": train_cfg.get("steps"), "finished": bool(summary)}


def report_title(identity: dict[str, Any]) -> str:
    """The report's title, from the run directory alone, so `pmd train` and `pmd report` write the same one."""
    algo = identity.get("algo")
    return f"{str(algo).upper()} training run" if algo else "Training run"


def trained_label(evaluated: dict, summary: dict, steps: int | None) -> tuple[str, str | None]:
    """What to call eval_trained.json's model, and a warning when it is not the weights training ended with.

    eval_trained.json records the step it evaluated (`step`); a run that was resumed with --no-eval keeps the
    previous session's file, so it can be older than the training. Without `step` (runs written before it was
    recorded) the step is unknown; a summary.json without `trained_greedy_accuracy` still shows that the last
    session did not evaluate, so the file belongs to an earlier one."""
    step = evaluated.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        if steps is None or step == steps:
            return f"trained (step {step})", None
        if step < steps:
            return (f"trained (step {step}; training continued to step {steps} without evaluation)",
                    f"The trained model was evaluated at step {step}; training then continued to step {steps} "
                    f"without evaluation, so `final/` (step {steps}) has not been evaluated.")
        return (f"trained (step {step}; the run records {steps} steps)",
                f"eval_trained.json says step {step} but the run records {steps} steps: it may belong to another run.")
    if summary and "trained_greedy_accuracy" not in summary:
        return (f"trained (step unknown; training continued to step {steps} without evaluation)",
                f"eval_trained.json is from an earlier session (it does not record its step); the last session "
                f"trained to step {steps} without evaluation, so `final/` (step {steps}) has not been evaluated.")
    return "trained (step unknown)", None


def write_report(run_dir: Path, title: str | None = None) -> Path:
    """Write `run_dir/report.md` (and PNG curves) from what the run recorded.

    The title and header come from the run directory (summary.json, config.yaml), never from the caller, so a
    report written at the end of `pmd train` and one regenerated by `pmd report` are the same. `title` is
    accepted and ignored only so that existing callers keep working.

    Nothing in the run directory changes until every input has been read and checked (the JSON files' shapes,
    the memory store through a read-only connection): report.md and the PNGs are written aside and then renamed
    into place, so a bad input or a kill leaves the previous report whole."""
    del title
    run_dir = Path(run_dir)
    check_inputs(run_dir)
    staged: dict[str, Path] = {}  # file name -> its new content, written aside; renamed into place at the end
    try:
        text = _render(run_dir, staged)
        _stage_text(run_dir, "report.md", text, staged)
        for name, tmp in staged.items():  # every input has passed: only now does the run directory change
            os.replace(tmp, run_dir / name)
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return run_dir / "report.md"


def _staging(run_dir: Path, name: str, staged: dict[str, Path]) -> Path:
    """A temporary path beside `name` (swept by resume as a leftover if a kill leaves it), recorded in `staged`."""
    staged[name] = run_dir / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    return staged[name]


def _stage_text(run_dir: Path, name: str, text: str, staged: dict[str, Path]) -> None:
    _staging(run_dir, name, staged).write_text(text, encoding="utf-8")


def _render(run_dir: Path, staged: dict[str, Path]) -> str:
    """The report's markdown; its figures are written to staged temporary files. The memory store is read (read
    only) before any figure is drawn, so a foreign or corrupt store stops the report before it writes anything."""
    rows = read_metrics(run_dir)
    examples = _memory_examples(run_dir) if memory_rows(rows) else None
    summary = _read_json(run_dir / "summary.json")
    ident = run_identity(run_dir, rows)
    parts = [f"# {report_title(ident)}", ""]
    steps_text = f"{ident['steps']}"
    if not ident["finished"]:
        configured = ident["configured_steps"]
        steps_text += (f" logged of {configured} configured" if configured else " logged")
        steps_text += " (no summary.json: training has not finished)"
    parts += [f"- algorithm: **{ident['algo'] or 'unknown'}**, steps: {steps_text}, model: `{ident['model']}`"]
    if summary:
        # a resumed run's summary times only the session that finished it
        parts.append(f"- wall time of the last session: train {summary.get('train_seconds', 0):.0f} s, "
                     f"eval {summary.get('eval_seconds', 0):.0f} s")
    parts.append("")
    if summary.get("reflector"):
        parts += [f"- insight source (reflector): **{summary['reflector']}**", ""]
    evals: dict[str, dict] = {}
    warning = None
    base = _read_json(run_dir / "eval_base.json")
    if base:
        evals["base"] = base
    trained = _read_json(run_dir / "eval_trained.json")
    if trained:
        label, warning = trained_label(trained, summary, ident["steps"])
        evals[label] = trained
    if evals:
        parts += ["## Held-out accuracy (memory-free)", ""]
        if warning:
            parts += [f"> **Note:** {warning}", ""]
        if base and trained:
            b, t = base["overall"], trained["overall"]
            parts += [f"**Greedy accuracy: base {_fmt(b['greedy_accuracy'])} -> {label} "
                      f"{_fmt(t['greedy_accuracy'])}** (format rate {_fmt(b['greedy_format_rate'])} -> "
                      f"{_fmt(t['greedy_format_rate'])}"
                      + (f"; content (lenient) accuracy {_fmt(b['greedy_lenient_accuracy'])} -> "
                         f"{_fmt(t['greedy_lenient_accuracy'])}" if "greedy_lenient_accuracy" in b
                         and "greedy_lenient_accuracy" in t else "") + ").", ""]
        parts += [eval_table(evals), ""]
    steps = training_rows(rows)
    if steps:
        plotted = plot_training(rows, _staging(run_dir, "training.png", staged), base or None, trained or None)
        if not plotted:
            staged.pop("training.png")
        if plotted:
            parts += ["## Training", "", "![training](training.png)", "",
                      "Panels: " + "; ".join(f"{name} ({', '.join(f'`{k}`' for k in keys)})"
                                             for name, keys in plotted.items()), ""]
        for table in (last_step_table(rows), phase_table(rows)):
            if table:
                parts += table + [""]
        active = _mean_of(steps, TEACHER_ACTIVE)
        if active is not None:
            line = f"Mean teacher-active fraction over the run: **{active:.3f}**"
            sdpo = _mean_of(steps, "pmd/sdpo_teacher_active_fraction")
            if sdpo is not None:
                only = _mean_of(steps, "pmd/memory_only_active_fraction") or 0.0
                line += (f" (SDPO's rule on the same rollouts, sibling success or feedback: **{sdpo:.3f}**; "
                         f"active through memory alone: {only:.3f})")
            parts += [line, ""]
    if examples is not None:
        parts += _memory_section(run_dir, rows, examples, staged)
    return "\n".join(parts)


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if _is_number(r.get(key))]
    return sum(values) / len(values) if values else None


def memory_rows(rows: list[dict]) -> list[dict]:
    """One row of memory counts per step, in step order. The end-of-training row repeats the last step's counts
    (taken after that step's memory update), so for each step the last row logged wins."""
    by_step = {r["step"]: r for r in rows if "step" in r and all(_is_count(r.get(k)) for k in MEMORY_KEYS)}
    return [by_step[s] for s in sorted(by_step)]


def _memory_examples(run_dir: Path) -> tuple[list, list]:
    """A few insights and patterns from the run's store, read through a read-only connection (never written)."""
    db = run_dir / "memory.sqlite"
    if not db.is_file():
        return [], []
    from .memory.store import MemoryStore

    with MemoryStore.open_existing(db, read_only=True) as store:
        return store.insights()[:5], store.patterns(status=None)[:5]


def _memory_section(run_dir: Path, rows: list[dict], examples: tuple[list, list],
                    staged: dict[str, Path]) -> list[str]:
    parts = ["## Memory", ""]
    counts = memory_rows(rows)
    if plot_curves(counts, _staging(run_dir, "memory.png", staged), MEMORY_KEYS, "memory growth"):
        parts += ["![memory growth](memory.png)", ""]
    else:
        staged.pop("memory.png")
    parts += ["| step | experiences | insights | patterns (active) | patterns (retired) |", "|---|---|---|---|---|"]
    for r in counts:
        parts.append(f"| {r['step']} | {int(r['memory/experiences'])} | {int(r['memory/insights'])} | "
                     f"{int(r['memory/patterns_active'])} | {int(r['memory/patterns_retired'])} |")
    parts.append("")
    insights, patterns = examples
    if insights:
        parts += ["Example insights:", ""] + [
            f"- [{i.kind}, {i.problem_uid}, support {i.support}] {i.text}" for i in insights] + [""]
    if patterns:
        parts += ["Example patterns:", ""] + [
            f"- [{p.kind}, {p.status}, {p.support_problems} problems] {p.text}" for p in patterns] + [""]
    return parts
