"""`pmd compare`'s table.md as a pure function of records.json, so a committed table can be checked against its data.

Two records formats are read:
- format 2 (`{"format": 2, "setup", "base", "problems", "variants"}`, written by `compare.collect`): per-seed,
  per-problem outcomes, so every difference gets a paired-bootstrap 95% interval and a verdict (pmd.stats);
- the old format (`{variant: [per-seed records]}`, before per-problem outcomes were kept): the old columns only.

Format 2 tables each variant against the base model and SDPO, and PMD against each of its memory controls that ran
(`CONTROL_PAIRS`: pmd-placebo, pmd-same-problem), all with paired intervals.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from .stats import DEFAULT_SAMPLES, DEFAULT_SEED, Interval, compare_outcomes

# What the self-teacher saw, averaged over a run's training steps (TRL's and pmd's own step metrics).
TEACHER_KEYS = {"active": "self_distillation/reprompt_sample_fraction",
                "memory_only_active": "pmd/memory_only_active_fraction",
                "experience": "pmd/memory_level_frac/experience", "insight": "pmd/memory_level_frac/insight",
                "pattern": "pmd/memory_level_frac/pattern", "similar": "pmd/memory_level_frac/similar"}

RECORDS_FORMAT = 2
MIN_PROBLEMS = 200  # fewer held-out problems than this cannot resolve differences of a few points (issue 13)
REFERENCE = "sdpo"  # the baseline PMD must beat; its rows are paired with each variant's by seed
# (variant, control) pairs tabled as variant − control when both ran: PMD against its memory controls (issue 25)
CONTROL_PAIRS = (("pmd", "pmd-placebo"), ("pmd", "pmd-same-problem"))
OUTCOMES = {"strict": 0, "lenient": 1, "format": 2}  # positions in a per-problem row [passed, lenient, format_ok]
FLAG_NAMES = {"format": "format collapse", "length": "length blow-up", "accuracy": "accuracy collapse"}


def is_current(records: Mapping) -> bool:
    """Whether `records` is in the current format (else the old {variant: [records]} one)."""
    return records.get("format") == RECORDS_FORMAT


def runs_by_variant(records: Mapping) -> dict[str, list[dict]]:
    """{variant: per-seed records} from either format (what the curves are drawn from)."""
    return dict(records["variants"]) if is_current(records) else dict(records)


def render_table(records: Mapping) -> str:
    """The whole table.md for `records` (either format); nothing else is read."""
    return _render_current(records) if is_current(records) else _render_old(records)


# ------------------------------------------------------------------------------------------------ formatting


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _ci(iv: Interval | None, word: bool = False) -> str:
    if iv is None:
        return "n/a"
    text = f"{iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]"
    return f"{text} {iv.verdict}" if word else text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


# ------------------------------------------------------------------------------------------------ old format


def comparison_table(records: Mapping[str, list[dict]]) -> str:
    """The old records format's table: final metrics (mean ± std over seeds), teacher active, CPU-minutes."""
    keys = sorted({k for recs in records.values() for r in recs for k in r["final"]
                   if k in ("greedy_accuracy", "greedy_format_rate") or k.startswith(("avg@", "pass@"))})
    rows = [[variant, str(len(recs))] + [mean_std([r["final"].get(k, math.nan) for r in recs]) for k in keys] +
            [mean_std([r["teacher_active"] for r in recs]), mean_std([r["cpu_minutes"] for r in recs])]
            for variant, recs in records.items()]
    return "\n".join(_table(["variant", "seeds"] + [f"final {k}" for k in keys] + ["teacher active", "CPU-min/run"],
                            rows))


def _render_old(records: Mapping[str, list[dict]]) -> str:
    runs = [r for recs in records.values() for r in recs]
    starts = sorted({r["curve"][0][1] for r in runs if r["curve"] and r["curve"][0][0] == 0})
    n = sorted({r["final"]["n_problems"] for r in runs if "n_problems" in r["final"]})
    seeds = sorted({r["seed"] for r in runs})
    text = ["# pmd compare", "",
            "Old records format: these records keep neither the setup nor per-problem outcomes, so this table has no "
            "confidence intervals (the run's config is config.yaml beside it).",
            f"Finished seeds: {', '.join(map(str, seeds))}. Final = memory-free held-out evaluation after the last "
            "step (mean ± std over seeds).", ""]
    if len(starts) == 1 and len(n) == 1:
        text += [f"Base model (step 0 of every curve): greedy accuracy {starts[0]:.3f}, n = {n[0]} held-out problems.",
                 ""]
    if n and max(n) < MIN_PROBLEMS:
        text += [_underpowered(max(n)), ""]
    return "\n".join(text + [comparison_table(records), "", "![learning curves](curves.png)", ""])


def _underpowered(n: int) -> str:
    return (f"**Underpowered:** n = {n} held-out problems is fewer than {MIN_PROBLEMS}; differences here are "
            "directions, not measured effects.")


# ------------------------------------------------------------------------------------------------ current format


def outcomes_of(rows: Mapping[str, list[int]] | None, kind: str, uids: set[str] | None = None) -> dict[str, int] | None:
    """{uid: 0/1} of one outcome kind from a compact per-problem mapping (restricted to `uids` if given)."""
    if rows is None:
        return None
    i = OUTCOMES[kind]
    return {u: row[i] for u, row in rows.items() if uids is None or u in uids}


def _rate(rows: Mapping[str, list[int]] | None, kind: str, uids: set[str]) -> float:
    got = outcomes_of(rows, kind, uids)
    return statistics.fmean(got.values()) if got else math.nan


class _Deltas:
    """Bootstrap intervals of one records file, with its B and seed (the table states both)."""

    def __init__(self, records: Mapping):
        boot = records["setup"].get("bootstrap", {})
        self.samples = boot.get("samples", DEFAULT_SAMPLES)
        self.seed = boot.get("seed", DEFAULT_SEED)
        self.base = records["base"].get("per_problem")
        self.ref = {r["seed"]: r for r in records["variants"].get(REFERENCE, [])}

    def vs_base(self, runs: list[dict], kind: str, uids: set[str] | None = None) -> Interval | None:
        outs = [outcomes_of(r.get("per_problem"), kind, uids) for r in runs]
        if self.base is None or not outs or any(o is None for o in outs):
            return None
        return compare_outcomes(outs, outcomes_of(self.base, kind, uids), self.samples, self.seed)

    def vs_reference(self, runs: list[dict], kind: str, uids: set[str] | None = None) -> Interval | None:
        return self.between(runs, self.ref, kind, uids)

    def between(self, runs: list[dict], ref: Mapping[int, dict], kind: str,
                uids: set[str] | None = None) -> Interval | None:
        """`runs` − `ref` ({seed: record}), paired by seed and problem; None where outcomes are missing."""
        paired = [(r, ref[r["seed"]]) for r in runs if r["seed"] in ref]
        outs = [(outcomes_of(a.get("per_problem"), kind, uids), outcomes_of(b.get("per_problem"), kind, uids))
                for a, b in paired]
        if not outs or any(a is None or b is None for a, b in outs):
            return None
        return compare_outcomes([a for a, _ in outs], [b for _, b in outs], self.samples, self.seed)

    def paired_seeds(self, runs: list[dict]) -> list[int]:
        return sorted(r["seed"] for r in runs if r["seed"] in self.ref)


def _collapsed(runs: list[dict]) -> str:
    hit = [f"{r['seed']}: {', '.join(r['diagnostics']['flags'])}" for r in runs
           if r.get("diagnostics", {}).get("flags")]
    return "; ".join(hit) if hit else "none"


def _render_current(records: Mapping) -> str:
    setup, base, variants = records["setup"], records["base"], records["variants"]
    problems: dict[str, str] = records.get("problems", {})
    families = sorted(set(problems.values()))
    deltas = _Deltas(records)
    n = setup["n_heldout"]
    done = sorted({r["seed"] for runs in variants.values() for r in runs})
    text = ["# pmd compare", "",
            f"Model `{setup['model']}`, tasks {', '.join(setup['tasks'])}; {setup['steps']} steps x "
            f"{setup['prompts_per_step']} problems x {setup['num_generations']} rollouts; seeds "
            f"{', '.join(map(str, setup['seeds']))} (finished: {', '.join(map(str, done))}); verifier feedback in the "
            f"teacher prompt: {'on' if setup['feedback'] else 'off'}.",
            "Final = memory-free greedy evaluation on the held-out problems after the last step, mean ± std over "
            "seeds. Strict = correct answer in the required format; lenient = correct value whatever the format "
            "(content); format = strict-format rate.", "",
            f"**Power:** n = {n} held-out problems ({_family_sizes(problems, families)}); finished seeds per "
            f"variant: {', '.join(f'{v} {len(runs)}' for v, runs in variants.items())}. Δ = variant − reference on "
            "the same problems (mean over seeds and problems); [95% CI] from a paired bootstrap over both levels, "
            f"problems and seeds each resampled with replacement, B = {deltas.samples}, percentile interval "
            f"(Generator seed {deltas.seed}). vs base: every seed against the one base-model "
            f"evaluation; vs SDPO: runs of the same seed. win / loss = the interval is entirely above / below 0; "
            f"otherwise no difference shown.", ""]
    if n < MIN_PROBLEMS:
        text += [_underpowered(n), ""]
    single = [v for v, runs in variants.items() if len(runs) == 1]
    if single:
        text += [f"Only one finished seed for {', '.join(single)}: its intervals resample problems only, not seeds.",
                 ""]
    has_ref = REFERENCE in variants
    header = ["variant", "seeds", "strict", "lenient", "format", "Δ strict vs base [95% CI]"]
    header += ["Δ strict vs SDPO [95% CI]"] * has_ref + ["Δ lenient vs base [95% CI]"]
    header += ["Δ lenient vs SDPO [95% CI]"] * has_ref + ["collapsed seeds", "teacher active", "CPU-min/run"]
    bo = base["overall"]
    rows = [["base model", "-"] + [f"{bo[k]:.3f}" if k in bo else "n/a" for k in
                                   ("greedy_accuracy", "greedy_lenient_accuracy", "greedy_format_rate")] +
            ["-"] * (len(header) - 5)]
    for variant, runs in variants.items():
        ref = variant != REFERENCE

        def vs_ref(kind: str, word: bool = False) -> list[str]:
            if not has_ref:
                return []
            if not ref:
                return ["-"]
            cell = _ci(deltas.vs_reference(runs, kind), word)
            kept = deltas.paired_seeds(runs)
            return [cell if len(kept) == len(runs) else f"{cell} (seeds {', '.join(map(str, kept))})"]

        final = [r["final"] for r in runs]
        rows.append([variant, str(len(runs))] +
                    [mean_std([f.get(k, math.nan) for f in final])
                     for k in ("greedy_accuracy", "greedy_lenient_accuracy", "greedy_format_rate")] +
                    [_ci(deltas.vs_base(runs, "strict"), True)] + vs_ref("strict", True) +
                    [_ci(deltas.vs_base(runs, "lenient"))] + vs_ref("lenient") +
                    [_collapsed(runs), mean_std([r["teacher_active"] for r in runs]),
                     mean_std([r["cpu_minutes"] for r in runs])])
    text += ["## Final held-out accuracy", ""] + _table(header, rows) + [""]
    text += _controls_table(variants, deltas)
    text += _diagnostics(variants) + [""]
    text += _teacher_table(variants)
    if families and base.get("per_problem") is not None:
        text += _family_table(variants, base, problems, families, deltas) + [""]
    return "\n".join(text + ["![learning curves](curves.png)", ""])


def _controls_table(variants: Mapping[str, list[dict]], deltas: _Deltas) -> list[str]:
    """Each of `CONTROL_PAIRS` whose two variants both ran, as variant − control with paired intervals."""
    pairs = [(a, b) for a, b in CONTROL_PAIRS if a in variants and b in variants]
    if not pairs:
        return []
    rows = []
    for a, b in pairs:
        ref = {r["seed"]: r for r in variants[b]}
        seeds = sorted(r["seed"] for r in variants[a] if r["seed"] in ref)
        rows.append([f"{a} − {b}", ", ".join(map(str, seeds)) or "none"] +
                    [_ci(deltas.between(variants[a], ref, kind), True) for kind in OUTCOMES])
    return ["## PMD against its controls", "",
            "Each control trains as PMD does and changes only what its memory says. pmd-placebo: wherever PMD's "
            "memory would show something, the teacher reads a fixed note that carries no information, so its teacher "
            "is active on the same rows; PMD − placebo is what memory's content adds beyond activating (and "
            "diluting) the teacher. pmd-same-problem: memory holds only this problem's own past attempts and "
            "insights; PMD − same-problem is what patterns and other problems' insights add. Δ on the same "
            "problems, runs of the same seed, with the interval and verdict as above.", ""] + _table(
        ["pair", "paired seeds", "Δ strict [95% CI]", "Δ lenient [95% CI]", "Δ format [95% CI]"], rows) + [""]


def _family_sizes(problems: Mapping[str, str], families: list[str]) -> str:
    if not families:
        return "per-problem outcomes not recorded for the base model: no intervals vs base, no per-family table"
    sizes = ", ".join(f"{f} {sum(v == f for v in problems.values())}" for f in families)
    return f"{len(families)} families: {sizes}"


def _diagnostics(variants: Mapping[str, list[dict]]) -> list[str]:
    rows = []
    for variant, runs in variants.items():
        for r in runs:
            d = r.get("diagnostics")
            if d is None:
                continue
            rows.append([variant, str(r["seed"]), f"{d['final_format_rate']:.3f}", f"{d['base_format_rate']:.3f}",
                         f"{d['final_accuracy']:.3f}", f"{d.get('early_clipped_ratio', math.nan):.3f}",
                         f"{d['late_clipped_ratio']:.3f}", f"{d['length_growth']:.2f}",
                         ", ".join(FLAG_NAMES[f] for f in d["flags"]) or "none"])
    if not rows:
        return []
    return ["## Collapse checks per seed", "",
            "Format collapse: final format rate 0 or below half the base model's. Length blow-up: over half the "
            "training completions hit the length cap in the last quarter of the steps, or their mean length there "
            "is over 1.5x that of the first quarter. Accuracy collapse: final strict accuracy 0 while the base "
            "model's is above 0.", ""] + _table(
        ["variant", "seed", "final format", "base format", "final strict", "capped, first quarter",
         "capped, last quarter", "length last/first quarter", "flags"], rows)


def _teacher_table(variants: Mapping[str, list[dict]]) -> list[str]:
    """Mean over steps and seeds of what the teacher saw (records with a `teacher` entry only)."""
    rows = []
    for variant, runs in variants.items():
        got = [r["teacher"] for r in runs if r.get("teacher")]
        if got:
            rows.append([variant] + [mean_std([g[k] for g in got if g.get(k) is not None]) for k in TEACHER_KEYS])
    if not rows:
        return []
    return ["## What the teacher saw", "", "Mean over training steps (then mean ± std over seeds): the fraction of "
            "samples with an active teacher, the fraction active through memory alone (no successful sibling, no "
            "feedback), and the fraction of teacher prompts holding each memory level. n/a: not logged (SDPO has "
            "no memory).", ""] + _table(["variant", "teacher active", "active by memory alone", "experience in "
                                         "prompt", "insight in prompt", "pattern in prompt", "similar in prompt"],
                                        rows) + [""]


def _family_table(variants: Mapping[str, list[dict]], base: Mapping, problems: Mapping[str, str],
                  families: list[str], deltas: _Deltas) -> list[str]:
    header = ["family", "n", "base strict", "base lenient"]
    for v in variants:
        header += [f"{v} strict", f"{v} lenient"]
    others = [v for v in variants if v != REFERENCE] if REFERENCE in variants else []
    header += [f"{v} Δ strict vs SDPO [95% CI]" for v in others]
    rows = []
    for fam in families:
        uids = {u for u, f in problems.items() if f == fam}
        row = [fam, str(len(uids)), f"{_rate(base['per_problem'], 'strict', uids):.3f}",
               f"{_rate(base['per_problem'], 'lenient', uids):.3f}"]
        for runs in variants.values():
            for kind in ("strict", "lenient"):
                row.append(mean_std([_rate(r.get("per_problem"), kind, uids) for r in runs]))
        row += [_ci(deltas.vs_reference(variants[v], "strict", uids), True) for v in others]
        rows.append(row)
    return ["## Per family", "", "Accuracy per family: mean ± std over seeds; the interval resamples that family's "
            "problems and the seeds.", ""] + _table(header, rows)
