"""`pmd compare`'s records.json (format 2), collapse checks and table, on hand-made run folders (no model)."""

import copy
import json
import math

import pytest

from pmd.cli import main
from pmd.compare import collapse_diagnostics, collect, records_json, write_comparison
from pmd.compare_tables import render_table, runs_by_variant
from pmd.config import load_config, save_config
from pmd.errors import PMDError

FAMILIES = ("chain_sum", "gcd")


def uids(n_per_family):
    return [(f"{fam}/eval/0/{i}", fam) for fam in FAMILIES for i in range(n_per_family)]


def eval_result(passed, lenient=None, fmt=None, n_per_family=4):
    """An evaluate.summarise-shaped result from 0/1 vectors over `uids(n_per_family)`."""
    probs = uids(n_per_family)
    lenient = passed if lenient is None else lenient
    fmt = [1] * len(probs) if fmt is None else fmt
    rows = [{"uid": u, "family": f, "passed": bool(p), "format_ok": bool(o), "lenient_correct": bool(l), "chars": 9}
            for (u, f), p, l, o in zip(probs, passed, lenient, fmt, strict=True)]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    overall = {"n_problems": len(rows), "greedy_accuracy": mean(passed), "greedy_format_rate": mean(fmt),
               "greedy_lenient_accuracy": mean(lenient)}
    fams = {fam: {"greedy_accuracy": mean([p for (_, f), p in zip(probs, passed) if f == fam])} for fam in FAMILIES}
    return {"overall": overall, "families": fams, "per_problem": rows}


def train_rows(steps, length=20.0, clipped=0.1, active=1.0):
    return [{"step": s, "completions/mean_length": length, "completions/clipped_ratio": clipped,
             "self_distillation/reprompt_sample_fraction": active} for s in range(1, steps + 1)]


def write_run(run_dir, base, final, steps=4, rows=None, eval_steps=(2, 4), cpu=1.5):
    """A finished run folder as run_one leaves it: metrics.jsonl, evals/eval-step-N.json, summary.json."""
    run_dir.mkdir(parents=True)
    evals = {0: base, **{s: final for s in eval_steps}}
    metrics = [{"step": 0, **{f"eval/{k}": v for k, v in base["overall"].items()}}]
    for row in rows if rows is not None else train_rows(steps):
        metrics.append(row)
        if row["step"] in eval_steps:
            metrics.append({"step": row["step"], **{f"eval/{k}": v for k, v in evals[row["step"]]["overall"].items()}})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    for s in eval_steps:
        (run_dir / "evals").mkdir(exist_ok=True)
        (run_dir / "evals" / f"eval-step-{s}.json").write_text(json.dumps(evals[s]))
    (run_dir / "summary.json").write_text(json.dumps({"final_eval": final["overall"], "cpu_minutes": cpu}))


def cfg_for(tmp_path, *extra):
    return load_config(None, ["compare.variants=[sdpo, pmd]", "compare.seeds=[0, 1]", "train.steps=4",
                              f"compare.out_dir={tmp_path / 'cmp'}", *extra])


BASE = [1, 0, 0, 0, 1, 0, 0, 0]


def section(table, title):
    """{first cell: row} of the table under `## title`."""
    lines = table.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    return {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}


@pytest.fixture
def out(tmp_path):
    """sdpo equals the base model; pmd solves two more problems on every seed (one per family)."""
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    base = eval_result(BASE, lenient=[1, 1, 0, 0, 1, 0, 0, 0], fmt=[1, 0, 1, 1, 1, 1, 1, 1])
    (cmp / "eval_base.json").write_text(json.dumps(base))
    for seed in (0, 1):
        write_run(cmp / "sdpo" / f"seed-{seed}", base, eval_result(BASE))
        write_run(cmp / "pmd" / f"seed-{seed}", base, eval_result([1, 1, 0, 0, 1, 1, 0, 0]), cpu=2.5)
    return cmp


def test_collect_records_setup_base_and_per_problem_outcomes(tmp_path, out):
    records = collect(cfg_for(tmp_path, "train.include_environment_feedback=false"))
    assert records["format"] == 2
    setup = records["setup"]
    assert setup["feedback"] is False and setup["steps"] == 4 and setup["seeds"] == [0, 1]
    assert setup["n_heldout"] == 8 and setup["bootstrap"] == {"samples": 2000, "seed": 0}
    assert records["problems"]["gcd/eval/0/3"] == "gcd" and len(records["problems"]) == 8
    assert records["base"]["per_problem"]["chain_sum/eval/0/1"] == [0, 1, 0]  # [passed, lenient, format]
    pmd = records["variants"]["pmd"]
    assert [r["seed"] for r in pmd] == [0, 1]
    assert pmd[0]["per_problem"]["chain_sum/eval/0/1"] == [1, 1, 1]
    assert pmd[0]["curve"] == [(0, 0.25), (2, 0.5), (4, 0.5)] and pmd[0]["cpu_minutes"] == 2.5
    assert pmd[0]["teacher_active"] == 1.0 and pmd[0]["diagnostics"]["flags"] == []
    # the written form reads back to the same records (curves as lists)
    assert json.loads(records_json(records)) == json.loads(json.dumps(records))


def test_table_shows_intervals_verdicts_families_and_underpowered(tmp_path, out):
    records = json.loads(records_json(collect(cfg_for(tmp_path))))
    table = render_table(records)
    assert table == render_table(copy.deepcopy(records))  # deterministic
    main_rows = section(table, "Final held-out accuracy")
    assert main_rows["base model"].startswith("| base model | - | 0.250 | 0.375 | 0.875 |")
    # sdpo == base on every problem: exactly 0 with a [0, 0] interval
    assert ("| sdpo | 2 | 0.250 ± 0.000 | 0.250 ± 0.000 | 1.000 ± 0.000 | +0.000 [+0.000, +0.000] no difference "
            "shown | - |") in table
    # pmd: +2 of 8 problems on both seeds; a resample can draw none of the two, so 0 stays inside the interval
    pmd = main_rows["pmd"]
    assert "| +0.250 [+0.000, +0." in pmd and "] no difference shown |" in pmd
    assert "| 2 |" in pmd and "2.500 ± 0.000" in pmd
    assert "**Underpowered:** n = 8 held-out problems" in table
    family = section(table, "Per family")["chain_sum"]
    assert family.startswith("| chain_sum | 4 | 0.250 | 0.500 | 0.250 ± 0.000 | 0.250 ± 0.000 | 0.500 ± 0.000 | "
                             "0.500 ± 0.000 | +0.250 [")
    assert "B = 2000" in table and "problems and seeds each resampled with replacement" in table
    assert "Only one finished seed" not in table


def test_partial_seeds_are_paired_on_the_common_ones(tmp_path, out):
    records = collect(cfg_for(tmp_path))
    records["variants"]["sdpo"] = records["variants"]["sdpo"][:1]
    table = render_table(records)
    assert "(seeds 0)" in table and "finished seeds per variant: sdpo 1, pmd 2." in table
    assert "Only one finished seed for sdpo: its intervals resample problems only" in table


def gain_of_one_in_five(tmp_path):
    """A comparison dir with the base evaluation on 240 held-out problems (120 per family, 1 in 5 passed), and the
    base and a result that passes 1 in 5 more (2 in 5), for the runs a test writes."""
    n = 120  # per family: 240 held-out problems
    base_pass = [1 if i % 5 == 0 else 0 for i in range(2 * n)]
    better = [1 if i % 5 in (0, 1) else 0 for i in range(2 * n)]
    base, gain = eval_result(base_pass, n_per_family=n), eval_result(better, n_per_family=n)
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "eval_base.json").write_text(json.dumps(base))
    return cmp, base, gain


def test_a_clear_gain_on_enough_problems_is_a_win(tmp_path):
    cmp, base, gain = gain_of_one_in_five(tmp_path)
    for seed in (0, 1):
        write_run(cmp / "sdpo" / f"seed-{seed}", base, base)
        write_run(cmp / "pmd" / f"seed-{seed}", base, gain)
    table = render_table(collect(cfg_for(tmp_path)))
    pmd = section(table, "Final held-out accuracy")["pmd"]
    assert pmd.count("win") == 2  # vs base and vs SDPO (strict); lenient cells carry no verdict word
    assert "Underpowered" not in table and "n = 240 held-out problems (2 families: chain_sum 120, gcd 120)" in table


def test_old_and_new_runs_mixed_or_without_per_problem_rows_render_without_intervals(tmp_path, out):
    # a run made before per-problem outcomes were kept: no evals/ folder
    run = out / "pmd" / "seed-1"
    for p in (run / "evals").iterdir():
        p.unlink()
    (run / "evals").rmdir()
    records = collect(cfg_for(tmp_path))
    assert records["variants"]["pmd"][1]["per_problem"] is None
    pmd = section(render_table(records), "Final held-out accuracy")["pmd"]
    assert "| n/a |" in pmd


def test_without_a_base_evaluation_file_the_table_says_what_is_missing(tmp_path, out):
    (out / "eval_base.json").unlink()
    records = collect(cfg_for(tmp_path))
    assert records["base"]["overall"] == {"greedy_accuracy": 0.25} and records["base"]["per_problem"] is None
    table = render_table(records)
    assert "| base model | - | 0.250 | n/a | n/a |" in table and "per-problem outcomes not recorded" in table
    rows = section(table, "Final held-out accuracy")
    assert rows["pmd"].split(" | ")[5] == "n/a"  # no interval vs base
    assert "+0.250 [+0.000" in rows["pmd"].split(" | ")[6]  # vs SDPO still paired by seed
    assert "## Per family" not in table


def test_runs_that_cannot_be_paired_are_one_error_and_nothing_written(tmp_path, out):
    (out / "eval_base.json").unlink()
    evals = out / "pmd" / "seed-0" / "evals"
    other = json.loads((evals / "eval-step-4.json").read_text())
    other["per_problem"][0]["uid"] = "chain_sum/eval/9/9"
    (evals / "eval-step-4.json").write_text(json.dumps(other))
    with pytest.raises(PMDError, match="different problem set"):
        write_comparison(cfg_for(tmp_path))
    assert not (out / "table.md").exists() and not (out / "records.json").exists()


def test_runs_on_another_held_out_set_or_a_stale_eval_are_errors(tmp_path, out):
    cfg = cfg_for(tmp_path)
    evals = out / "pmd" / "seed-0" / "evals"
    other = eval_result([1, 1, 0, 0, 1, 1, 0, 0])
    other["per_problem"][0]["uid"] = "chain_sum/eval/9/9"
    (evals / "eval-step-4.json").write_text(json.dumps(other))
    with pytest.raises(PMDError, match="differ from eval_base.json"):
        collect(cfg)
    (evals / "eval-step-4.json").unlink()  # the largest left is step 2: not the final evaluation
    with pytest.raises(PMDError, match="eval-step-2.json is not the final evaluation"):
        collect(cfg)


def test_table_only_writes_table_equal_to_render_of_records(tmp_path, out, capsys):
    cfg_path = tmp_path / "c.yaml"
    save_config(cfg_for(tmp_path), cfg_path)
    assert main(["compare", str(cfg_path), "--table-only"]) == 0
    records = json.loads((out / "records.json").read_text())
    assert (out / "table.md").read_text() == render_table(records)
    assert capsys.readouterr().out.strip() == render_table(records).strip()
    assert (out / "curves.png").stat().st_size > 0
    assert set(runs_by_variant(records)) == {"sdpo", "pmd"}
    assert '"chain_sum/eval/0/0": [1, 1, 1]' in (out / "records.json").read_text()  # one line per problem


def test_nothing_finished_writes_nothing(tmp_path):
    (tmp_path / "cmp").mkdir()
    with pytest.raises(PMDError, match="nothing to tabulate"):
        write_comparison(cfg_for(tmp_path))
    assert list((tmp_path / "cmp").iterdir()) == []


# ------------------------------------------------------------------------------------------------ collapse checks

BASE_OVERALL = {"greedy_accuracy": 0.2, "greedy_format_rate": 0.5}


def run_rows(fmt=0.8, acc=0.3, length=20.0, clipped=0.1, late_length=None, late_clipped=None, steps=8):
    rows = [{"step": 0, "eval/greedy_accuracy": 0.2, "eval/greedy_format_rate": 0.5}]
    for s in range(1, steps + 1):
        late = s > steps * 3 // 4
        rows.append({"step": s, "completions/mean_length": late_length if late and late_length else length,
                     "completions/clipped_ratio": late_clipped if late and late_clipped is not None else clipped})
    rows.append({"step": steps, "eval/greedy_accuracy": acc, "eval/greedy_format_rate": fmt})
    return rows


def test_healthy_run_has_no_flags():
    d = collapse_diagnostics(run_rows(), BASE_OVERALL)
    assert d["flags"] == [] and d["final_format_rate"] == 0.8 and d["length_growth"] == 1.0
    assert d["late_clipped_ratio"] == pytest.approx(0.1) == d["early_clipped_ratio"]


@pytest.mark.parametrize("fmt, flagged", [(0.0, True), (0.24, True), (0.25, False), (0.9, False)])
def test_format_collapse(fmt, flagged):
    assert ("format" in collapse_diagnostics(run_rows(fmt=fmt), BASE_OVERALL)["flags"]) is flagged


def test_format_rate_zero_is_a_collapse_even_when_the_base_is_zero():
    assert collapse_diagnostics(run_rows(fmt=0.0), {"greedy_accuracy": 0.2, "greedy_format_rate": 0.0})["flags"] \
        == ["format"]


@pytest.mark.parametrize("kw, flagged", [({"late_clipped": 0.75}, True), ({"late_clipped": 0.5}, False),
                                         ({"late_length": 31.0}, True), ({"late_length": 29.0}, False)])
def test_length_blow_up(kw, flagged):
    d = collapse_diagnostics(run_rows(**kw), BASE_OVERALL)
    assert ("length" in d["flags"]) is flagged
    assert d["early_clipped_ratio"] == pytest.approx(0.1)  # the first quarter is not the last


def test_accuracy_collapse_only_when_the_base_had_some():
    assert collapse_diagnostics(run_rows(acc=0.0), BASE_OVERALL)["flags"] == ["accuracy"]
    assert collapse_diagnostics(run_rows(acc=0.0), {"greedy_accuracy": 0.0, "greedy_format_rate": 0.5})["flags"] == []


def test_no_training_rows_or_evals_flag_nothing():
    d = collapse_diagnostics([], {})
    assert d["flags"] == [] and math.isnan(d["length_growth"]) and math.isnan(d["final_format_rate"])


def test_collapsed_seeds_are_named_in_the_table(tmp_path, out):
    records = collect(cfg_for(tmp_path))
    records["variants"]["pmd"][1]["diagnostics"]["flags"] = ["format", "length"]
    table = render_table(records)
    assert "| 1: format, length |" in table
    assert "| pmd | 1 | 1.000 | 0.875 | 0.500 | 0.100 | 0.100 | 1.00 | format collapse, length blow-up |" in table


def test_teacher_diagnostics_average_over_steps_and_mark_unlogged_metrics():
    from pmd.compare import teacher_diagnostics

    rows = [{"step": 1, "self_distillation/reprompt_sample_fraction": 0.5, "pmd/memory_level_frac/pattern": 0.0},
            {"step": 2, "self_distillation/reprompt_sample_fraction": 1.0, "pmd/memory_level_frac/pattern": 0.5},
            {"step": 2, "eval/greedy_accuracy": 0.3}]
    got = teacher_diagnostics(rows)
    assert got["active"] == 0.75 and got["pattern"] == 0.25
    assert got["memory_only_active"] is None and got["insight"] is None


def test_teacher_table_lists_memory_levels_only_for_runs_that_logged_them():
    from pmd.compare_tables import _teacher_table

    variants = {"sdpo": [{"seed": 0, "teacher": {"active": 0.3, "memory_only_active": None, "experience": None,
                                                 "insight": None, "pattern": None, "similar": None}}],
                "pmd": [{"seed": 0, "teacher": {"active": 0.8, "memory_only_active": 0.4, "experience": 0.9,
                                                "insight": 0.5, "pattern": 0.25, "similar": 0.1}},
                        {"seed": 1, "teacher": {"active": 0.6, "memory_only_active": 0.2, "experience": 0.9,
                                                "insight": 0.5, "pattern": 0.75, "similar": 0.1}}]}
    lines = _teacher_table(variants)
    sdpo = next(line for line in lines if line.startswith("| sdpo"))
    pmd = next(line for line in lines if line.startswith("| pmd"))
    assert sdpo.split(" | ")[1] == "0.300" and "n/a" in sdpo
    assert "0.700 ± 0.141" in pmd and "0.500 ± 0.354" in pmd
    assert _teacher_table({"sdpo": [{"seed": 0}]}) == []


# ------------------------------------------------------------------------------------------- issue 25's controls


def test_table_shows_pmd_against_each_control_with_paired_intervals(tmp_path):
    """PMD solves 1 in 5 more problems than the placebo on both seeds (a win); the same-problem control equals PMD
    on every problem (exactly 0); the control finished on one seed only is paired on that seed."""
    cmp, base, gain = gain_of_one_in_five(tmp_path)
    for seed in (0, 1):
        write_run(cmp / "sdpo" / f"seed-{seed}", base, base)
        write_run(cmp / "pmd" / f"seed-{seed}", base, gain)
        write_run(cmp / "pmd-placebo" / f"seed-{seed}", base, base)
    write_run(cmp / "pmd-same-problem" / "seed-1", base, gain)
    cfg = cfg_for(tmp_path, "compare.variants=[sdpo, pmd, pmd-placebo, pmd-same-problem]")
    table = render_table(collect(cfg))
    rows = section(table, "PMD against its controls")
    assert list(rows) == ["pair", "pmd − pmd-placebo", "pmd − pmd-same-problem"]
    placebo = rows["pmd − pmd-placebo"].split(" | ")
    assert placebo[1] == "0, 1" and placebo[2].startswith("+0.200 [+0.1") and placebo[2].endswith("] win")
    assert placebo[3].endswith("] win") and placebo[4] == "+0.000 [+0.000, +0.000] no difference shown |"
    same = rows["pmd − pmd-same-problem"].split(" | ")
    assert same[1] == "1" and same[2] == "+0.000 [+0.000, +0.000] no difference shown"
    # the main table is unchanged by them: each control is a variant row of its own, against the base and SDPO
    assert "pmd-placebo" in section(table, "Final held-out accuracy")
    without = render_table(collect(cfg_for(tmp_path, "compare.variants=[sdpo, pmd, pmd-placebo]")))
    assert list(section(without, "PMD against its controls")) == ["pair", "pmd − pmd-placebo"]


def test_no_controls_section_without_pmd_and_a_control(tmp_path, out):
    assert "PMD against its controls" not in render_table(collect(cfg_for(tmp_path)))
    write_run(out / "pmd-placebo" / "seed-0", eval_result(BASE), eval_result(BASE))
    only_control = cfg_for(tmp_path, "compare.variants=[sdpo, pmd-placebo]")
    assert "PMD against its controls" not in render_table(collect(only_control))
