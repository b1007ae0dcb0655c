"""`pmd compare` wiring on the tiny model: variants differ only in their switches; finished runs are skipped."""

import json
from pathlib import Path

import pytest

from pmd.cli import main
from pmd.compare import variant_config
from pmd.compare_tables import comparison_table
from pmd.config import load_config
from pmd.errors import ConfigError


def base_cfg(tmp_path, tiny_model_path, *extra):
    return load_config(None, [
        f"model.name_or_path={tiny_model_path}",
        "env.tasks=[{name: basic_arithmetic, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]",
        "env.train_size=4", "env.eval_size=2", "train.steps=2", "train.prompts_per_step=2", "train.num_generations=2",
        "train.max_completion_length=4", "eval.num_samples=1", "eval.max_new_tokens=4", "eval.every_steps=1",
        "compare.frozen_memory_steps=1", f"compare.out_dir={tmp_path / 'cmp'}", *extra,
    ])


def test_variant_switches(tmp_path, tiny_model_path):
    base = base_cfg(tmp_path, tiny_model_path)
    got = {v: variant_config(base, v, 7) for v in base.compare.variants}
    assert got["grpo"].train.algo == "grpo" and got["sdpo"].train.algo == "sdpo"
    assert got["pmd"].train.algo == "pmd" and got["pmd"].memory.mode == "evolving"
    assert got["pmd-frozen-memory"].memory.mode == "frozen" and got["pmd-frozen-memory"].memory.freeze_after_steps == 1
    assert got["pmd-frozen-teacher"].train.teacher_model_kind == "base"
    assert {c.train.teacher_model_kind for v, c in got.items() if v != "pmd-frozen-teacher"} == {"ema"}
    # issue 25's memory controls: one switch each, every other arm reads the retrieved memory at full scope
    assert got["pmd-placebo"].train.algo == got["pmd-same-problem"].train.algo == "pmd"
    assert (got["pmd-placebo"].memory.content, got["pmd-placebo"].memory.retrieval.scope) == ("placebo", "all")
    assert (got["pmd-same-problem"].memory.content, got["pmd-same-problem"].memory.retrieval.scope) == (
        "retrieved", "same_problem")
    assert {(c.memory.content, c.memory.retrieval.scope) for v, c in got.items()
            if v not in ("pmd-placebo", "pmd-same-problem")} == {("retrieved", "all")}
    controlled = base_cfg(tmp_path, tiny_model_path, "memory.content=placebo", "memory.retrieval.scope=same_problem")
    real = variant_config(controlled, "pmd", 7).memory  # the pmd arm is PMD whatever the base config says
    assert (real.content, real.retrieval.scope) == ("retrieved", "all")
    assert {c.eval.every_steps for c in got.values()} == {1}  # every run's curve, at the one period
    assert variant_config(base_cfg(tmp_path, tiny_model_path, "eval.every_steps=0"), "pmd", 0).eval.every_steps == 4
    assert all(c.train.seed == 7 for c in got.values())
    # same budget everywhere
    assert len({(c.train.steps, c.train.prompts_per_step, c.train.num_generations) for c in got.values()}) == 1
    with pytest.raises(ConfigError, match="unknown variant 'ppo'"):
        variant_config(base, "ppo", 0)


def test_compare_runs_skips_and_tabulates(tmp_path, tiny_model_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    from pmd.config import save_config

    base = base_cfg(tmp_path, tiny_model_path, "compare.variants=[sdpo, pmd]", "compare.seeds=[0, 1]")
    save_config(base, cfg_path)
    assert main(["compare", str(cfg_path)]) == 0
    out = tmp_path / "cmp"
    table = (out / "table.md").read_text()
    assert "| sdpo | 2 |" in table and "| pmd | 2 |" in table
    assert (out / "curves.png").stat().st_size > 0
    # records hold each run's final per-problem outcomes on the base model's held-out problems, paired for intervals
    records = json.loads((out / "records.json").read_text())
    assert set(records["base"]["per_problem"]) == set(records["problems"]) and len(records["problems"]) == 2
    for runs in records["variants"].values():
        assert [set(r["per_problem"]) for r in runs] == [set(records["problems"])] * 2
    assert "Δ strict vs SDPO [95% CI]" in table
    rows = [json.loads(l) for l in (out / "pmd" / "seed-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/greedy_accuracy" in r] == [0, 1, 2]
    summary = out / "pmd" / "seed-0" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    assert main(["compare", str(cfg_path)]) == 0  # everything finished: nothing re-runs
    assert summary.stat().st_mtime_ns == stamp
    # a sub-list of the variants is the same experiment: still reused
    assert main(["compare", str(cfg_path), "--set", "compare.variants=[pmd]"]) == 0
    assert summary.stat().st_mtime_ns == stamp
    # a changed setting must not silently reuse (or resume) runs made with the old one: refused before any work
    assert main(["compare", str(cfg_path), "--set", "train.learning_rate=0.5"]) == 2
    assert "was run with a different config (train.learning_rate)" in capsys.readouterr().err
    assert summary.stat().st_mtime_ns == stamp


def test_table_mean_and_std():
    records = {"pmd": [{"final": {"greedy_accuracy": 0.5}, "cpu_minutes": 1.0, "teacher_active": 1.0},
                       {"final": {"greedy_accuracy": 0.3}, "cpu_minutes": 3.0, "teacher_active": 0.5}]}
    table = comparison_table(records)
    assert "| pmd | 2 | 0.400 ± 0.141 | 0.750 ± 0.354 | 2.000 ± 1.414 |" in table


def _failing_replace(monkeypatch, name: str) -> None:
    """os.replace fails (full disk) for any file called `name`: the moment an atomic write would land."""
    import pmd.rundir

    real = pmd.rundir.os.replace

    def replace(src, dst):
        if Path(dst).name == name:
            raise OSError(28, "No space left on device", str(src))
        return real(src, dst)

    monkeypatch.setattr(pmd.rundir.os, "replace", replace)


def test_compare_writes_are_atomic(tmp_path, tiny_model_path, monkeypatch):
    """Was: compare's config.yaml and each run's summary.json written in place, so a kill or a full disk mid-write
    left half a file (and a half summary.json made a run look finished)."""
    from pmd.compare import run_compare, run_one

    base = base_cfg(tmp_path, tiny_model_path, "compare.variants=[sdpo]", "compare.seeds=[0]")
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "config.yaml").write_text("the earlier comparison's config\n")
    with monkeypatch.context() as m:
        _failing_replace(m, "config.yaml")
        with pytest.raises(OSError, match="No space left"):
            run_compare(base)
    assert (out / "config.yaml").read_text() == "the earlier comparison's config\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"], "no temporary left behind"

    cfg = variant_config(base, "sdpo", 0)
    run_dir = Path(cfg.run_dir)
    base_eval = {"overall": {"greedy_accuracy": 0.5}, "families": {}}
    with monkeypatch.context() as m:
        _failing_replace(m, "summary.json")
        with pytest.raises(OSError, match="No space left"):
            run_one(cfg, base_eval)
    assert (run_dir / "final").is_dir() and not (run_dir / "summary.json").exists(), "not taken as finished"
    assert not list(run_dir.glob(".summary.json*")), "no temporary left behind"
    summary = run_one(cfg, base_eval)  # re-run: from the start (no checkpoints kept), then recorded whole
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["final_eval"]["greedy_accuracy"] == read_last_eval(run_dir) and summary["cpu_minutes"] > 0


def read_last_eval(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/greedy_accuracy" in r]
    assert evals[0]["step"] == 0 and evals[0]["eval/greedy_accuracy"] == 0.5  # the given base evaluation
    return evals[-1]["eval/greedy_accuracy"]


def test_the_memory_control_arms_train_and_log_what_their_teacher_saw(tmp_path, tiny_model_path):
    """pmd-placebo and pmd-same-problem, trained for 2 steps on the tiny model from a memory that holds other
    problems' insights and a pattern of the same family (2 training problems: each step draws both). At step 0 the
    full scope finds that memory, so the placebo teacher reads the note; the same-problem teacher reads nothing. From
    step 1 on memory holds step 0's attempts: the placebo log still holds only the note, the same-problem log only
    items of that very problem. The retrieval log is what each teacher read."""
    from pmd.compare import run_one
    from pmd.memory.store import MemoryStore
    from pmd.prompts import PLACEBO_MEMORY

    seed = tmp_path / "seed.sqlite"
    with MemoryStore(seed) as store:
        others = [store.upsert_insight(f"basic_arithmetic/train/9/{k}", "basic_arithmetic", "lesson",
                                       "Write the result alone on the final line.", "policy", [], 0) for k in (0, 1)]
        store.add_pattern("lesson", "Recompute the result before answering.", others, 2, step=0)
    base = base_cfg(tmp_path, tiny_model_path, "env.train_size=2", "eval.every_steps=2", "eval.num_samples=0",
                    f"memory.load_from={seed}")
    base_eval = {"overall": {"greedy_accuracy": 0.0}, "families": {}}
    logs, owner = {}, {}  # owner: {ref: its problem} in the same-problem run's store
    for variant in ("pmd-placebo", "pmd-same-problem"):
        cfg = variant_config(base, variant, 0)
        run_one(cfg, base_eval)
        with MemoryStore(Path(cfg.run_dir) / "memory.sqlite") as store:
            logs[variant] = store.retrievals()
            owner = {**{f"experience:{e.id}": e.problem_uid for e in store.experiences()},
                     **{f"insight:{i.id}": i.problem_uid for i in store.insights(status=None)}}
        assert {r.step for r in logs[variant]} == {0, 1}
    placebo = logs["pmd-placebo"]
    assert {r.text for r in placebo if r.step == 0} == {PLACEBO_MEMORY}  # activated by other problems' memory
    assert {r.text for r in placebo} == {PLACEBO_MEMORY} and all(r.item_refs == [] for r in placebo)
    same = logs["pmd-same-problem"]
    assert {r.text for r in same if r.step == 0} == {""}  # other problems' insights and the pattern never reach it
    assert [r for r in same if r.text], "its own attempts reached the same-problem teacher"
    assert all(owner.get(ref) == r.problem_uid for r in same for ref in r.item_refs)
