"""Every `pmd` command path ends a user error in one line `pmd: error: ...` with exit code 2 and writes nothing;
a closed stdout (`| head`) stops quietly; `--limit` holds for every listing it is given with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import snapshot
import pmd
from pmd.cli import main
from pmd.config import RunConfig, save_config
from pmd.memory.store import Experience, MemoryStore, RetrievalRecord

N_EXPERIENCES = 10_000  # output far larger than a pipe's buffer (64 KiB), even for one problem, so
# `| head -1` closes it mid-write


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with config.yaml and a memory store holding every level (no weights: not needed here)."""
    run = tmp_path_factory.mktemp("run")
    save_config(RunConfig(), run / "config.yaml")
    with MemoryStore(run / "memory.sqlite") as store:
        ids = store.add_experiences([
            Experience(problem_uid=f"p{i % 7}", family="arith", prompt=f"q{i % 7}", response=f"answer {i} " + "x" * 80,
                       reward=float(i % 2), passed=bool(i % 2), feedback="wrong" if i % 2 == 0 else "",
                       step=i // 7, sample_index=i % 4)
            for i in range(N_EXPERIENCES)])
        insight_ids = [store.upsert_insight(f"p{i % 7}", "arith", "lesson" if i % 2 else "strategy",
                                            f"insight number {i}", "test", [ids[i]], i) for i in range(12)]
        for i in range(6):
            store.add_pattern("lesson", f"pattern number {i}", insight_ids[:2], 2, i)
        store.log_retrieval([RetrievalRecord(step=s, problem_uid="p1", sample_index=0, text=f"memory at step {s}",
                                             item_refs=["i1"], n_tokens=4) for s in range(9)])
    return run


def one_line_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pmd: error: "), err
    assert "Traceback" not in err and out == ""
    return lines[0]


# ------------------------------------------------------------------------------------------ missing paths

def _cases(tmp: Path, run: Path) -> list[tuple[list[str], list[str]]]:
    """(argv, words the one-line message must hold) for every command path that takes a path."""
    missing = tmp / "no" / "such"
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "plain.txt").write_text("not a run")
    (tmp / "cfg.yaml").write_text(f"compare:\n  out_dir: {tmp / 'cmp'}\n")
    (tmp / "half").mkdir(exist_ok=True)  # a run that never finished: config and memory, no final/
    (tmp / "half" / "config.yaml").write_text((run / "config.yaml").read_text())
    (tmp / "half" / "memory.sqlite").write_bytes((run / "memory.sqlite").read_bytes())
    return [
        (["report", str(missing)], [str(missing), "no such run directory"]),
        (["report", str(tmp / "plain.txt")], ["plain.txt", "not a PMD run directory"]),
        (["report", str(tmp / "empty")], ["empty", "not a PMD run directory"]),
        (["memory", "show", str(missing)], [str(missing), "no memory store"]),
        (["memory", "stats", str(missing)], [str(missing), "no memory store"]),
        (["memory", "export", str(missing)], [str(missing), "no memory store"]),
        (["memory", "show", str(tmp / "empty")], ["empty/memory.sqlite", "no memory store"]),
        (["memory", "stats", str(tmp / "empty" / "m.sqlite")], ["m.sqlite", "no memory store"]),
        (["memory", "export", str(run), "--out", str(missing / "x.jsonl")], ["--out", str(missing), "does not exist"]),
        (["memory", "export", str(run), "--out", str(tmp / "empty")], ["--out", "is a directory"]),
        (["explain", str(missing)], [str(missing), "not a PMD run directory"]),
        (["explain", str(tmp / "half")], ["half/final", "no final weights", "--model"]),
        (["eval", "--memory", str(missing), "--set", "eval.memory_at_inference=true"],
         ["--memory", str(missing), "no memory store"]),
        (["eval", "--memory", str(run)], ["--memory", "eval.memory_at_inference"]),
        (["eval", "--set", "eval.memory_at_inference=true"], ["needs --memory"]),
        (["eval", "--out", str(missing / "e.json")], ["--out", "does not exist"]),
        (["eval", str(missing / "c.yaml")], ["c.yaml", "config file not found"]),
        (["train", str(missing / "c.yaml")], ["c.yaml", "config file not found"]),
        (["compare", str(missing / "c.yaml")], ["c.yaml", "config file not found"]),
        (["compare", str(tmp / "cfg.yaml"), "--table-only"], ["nothing to tabulate", str(tmp / "cmp")]),
    ]


@pytest.mark.parametrize("index", range(20))
def test_a_missing_path_is_one_line_exit_2_and_writes_nothing(index, tmp_path, run_dir, capsys):
    cases = _cases(tmp_path, run_dir)
    assert len(cases) == 20
    argv, words = cases[index]
    before, run_before = snapshot(tmp_path), snapshot(run_dir)
    line = one_line_error(capsys, main(argv))
    for word in words:
        assert word in line, (word, line)
    assert snapshot(tmp_path) == before and snapshot(run_dir) == run_before


def test_table_only_with_an_empty_out_dir_writes_nothing(tmp_path, capsys):
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cfg.yaml").write_text(f"compare:\n  out_dir: {tmp_path / 'cmp'}\n")
    line = one_line_error(capsys, main(["compare", str(tmp_path / "cfg.yaml"), "--table-only"]))
    assert f"nothing to tabulate under compare.out_dir {tmp_path / 'cmp'}" in line
    assert list((tmp_path / "cmp").iterdir()) == []


def test_table_only_names_a_damaged_summary(tmp_path, capsys):
    seed = tmp_path / "cmp" / "pmd" / "seed-0"
    seed.mkdir(parents=True)
    (seed / "summary.json").write_text("{not json")
    (tmp_path / "cfg.yaml").write_text(f"compare:\n  out_dir: {tmp_path / 'cmp'}\n  variants: [pmd]\n  seeds: [0]\n")
    line = one_line_error(capsys, main(["compare", str(tmp_path / "cfg.yaml"), "--table-only"]))
    assert str(seed / "summary.json") in line and "unreadable" in line


def test_report_names_a_damaged_json_file(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("{}\n")
    (tmp_path / "eval_base.json").write_text('{"overall": ')
    before = snapshot(tmp_path)
    line = one_line_error(capsys, main(["report", str(tmp_path)]))
    assert str(tmp_path / "eval_base.json") in line and "unreadable" in line
    assert snapshot(tmp_path) == before


def test_compare_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "cmp").write_text("a file")
    (tmp_path / "cfg.yaml").write_text(f"compare:\n  out_dir: {tmp_path / 'cmp'}\n")
    for extra in ([], ["--table-only"]):
        line = one_line_error(capsys, main(["compare", str(tmp_path / "cfg.yaml"), *extra]))
        assert f"compare.out_dir {tmp_path / 'cmp'}: exists and is not a directory" in line


def test_export_refuses_to_overwrite_the_store_it_reads(run_dir, capsys):
    before = snapshot(run_dir)
    line = one_line_error(capsys, main(["memory", "export", str(run_dir), "--out", str(run_dir / "memory.sqlite")]))
    assert "is the memory store being exported" in line
    assert snapshot(run_dir) == before


def test_a_problem_that_is_not_in_memory_is_named(run_dir, capsys):
    line = one_line_error(capsys, main(["memory", "show", str(run_dir), "--problem", "p99"]))
    assert "no problem 'p99'" in line


def test_report_on_a_run_directory_still_works(run_dir, capsys, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.md") and (run / "report.md").is_file()


# ------------------------------------------------------------------------------------------ the command line itself

@pytest.mark.parametrize("argv, needle", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["memory", "show", "RUN", "--limit", "0"], "argument --limit: expected an integer >= 1, got 0"),
    (["memory", "show", "RUN", "--limit", "ten"], "argument --limit: expected an integer >= 1, got 'ten'"),
    (["explain", "RUN", "--top", "-1"], "argument --top: expected an integer >= 1, got -1"),
    (["memory", "show"], "the following arguments are required: run"),
])
def test_a_bad_command_line_is_one_line_exit_2(argv, needle, capsys):
    line = one_line_error(capsys, main(argv))
    assert needle in line and "--help" in line


@pytest.mark.parametrize("argv, needle", [
    (["memory", "stats", "{run}", "--limit", "3"], "--limit does not apply to `pmd memory stats`"),
    (["memory", "stats", "{run}", "--problem", "p1"], "--problem does not apply to `pmd memory stats`"),
    (["memory", "show", "{run}", "--out", "x.jsonl"], "--out does not apply to `pmd memory show`"),
    (["memory", "export", "{run}", "--level", "insights"], "--level does not apply to `pmd memory export`"),
])
def test_options_a_memory_action_would_ignore_are_refused(argv, needle, run_dir, capsys):
    line = one_line_error(capsys, main([a.format(run=run_dir) for a in argv]))
    assert needle in line


def test_set_errors_through_the_cli_name_the_set(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  steps: 2\n")
    line = one_line_error(capsys, main(["train", str(cfg), "--set", "train.learning_rate=fast"]))
    assert line == "pmd: error: --set train.learning_rate=fast: train.learning_rate: expected a number, got 'fast'"
    line = one_line_error(capsys, main(["train", str(cfg), "--set", "env.tasks[1].params.max_terms=3"]))
    assert line.startswith("pmd: error: --set env.tasks[1].params.max_terms=3: env.tasks[1]: index out of range")
    line = one_line_error(capsys, main(["compare", str(cfg), "--set", "env.tasks.0.name=x"]))
    assert line.startswith("pmd: error: --set env.tasks.0.name=x: '.0' is not a key")
    assert list(tmp_path.iterdir()) == [cfg]


# ------------------------------------------------------------------------------------------ --limit everywhere

def _show(run_dir: Path, capsys, *extra: str) -> dict[str, list[str]]:
    """`pmd memory show` output as {header: entry lines} (an entry starts with '[')."""
    assert main(["memory", "show", str(run_dir), *extra]) == 0
    sections: dict[str, list[str]] = {}
    header = ""
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("# "):
            header = line[2:]
            sections[header] = []
        elif line.startswith("["):
            sections[header].append(line)
    return sections


def test_limit_holds_for_every_listing_of_memory_show(run_dir, capsys):
    every = _show(run_dir, capsys, "--limit", "2")
    assert [h.split(" (")[0] for h in every] == ["insights", "patterns", "experiences"]
    assert all(len(lines) == 2 for lines in every.values()), every
    latest = every[f"experiences (latest 2 of {N_EXPERIENCES}; --limit N for more)"]
    assert latest[-1].startswith(f"[step {(N_EXPERIENCES - 1) // 7 + 1}]")  # shown as metrics.jsonl numbers it
    retrievals = _show(run_dir, capsys, "--level", "retrievals", "--limit", "3")
    assert list(retrievals) == ["retrievals (latest 3 of 9; --limit N for more)"]
    assert [line.split("]")[0] for line in retrievals["retrievals (latest 3 of 9; --limit N for more)"]] == \
        ["[step 7", "[step 8", "[step 9"]
    one = _show(run_dir, capsys, "--problem", "p1", "--limit", "2")  # one problem's history: every part limited
    assert [h.split(" (")[0] for h in one] == ["problem p1", "attempts", "insights", "what its teacher saw"]
    assert [len(v) for k, v in one.items() if k != "problem p1"] == [2, 2, 2]
    default = _show(run_dir, capsys)
    assert len(default[f"experiences (latest 20 of {N_EXPERIENCES}; --limit N for more)"]) == 20
    assert len(_show(run_dir, capsys, "--level", "insights", "--limit", "50")["insights"]) == 12  # all: no note


def test_limit_holds_for_memory_export(run_dir, tmp_path, capsys):
    assert main(["memory", "export", str(run_dir), "--limit", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    levels = [r["level"] for r in rows if r["level"] != "meta"]
    assert levels == ["experience"] * 2 + ["insight"] * 2 + ["pattern"] * 2 + ["retrieval"] * 2
    assert [r["id"] for r in rows if r["level"] == "experience"] == [1, 2]  # the first, in id order
    assert main(["memory", "export", str(run_dir), "--out", str(tmp_path / "all.jsonl")]) == 0  # default: all
    assert f"wrote {N_EXPERIENCES + 12 + 6 + 9 + len([r for r in rows if r['level'] == 'meta'])} rows" in \
        capsys.readouterr().out


# ------------------------------------------------------------------------------------------ a closed stdout

@pytest.mark.parametrize("command", ["memory show RUN --limit 100000", "memory show RUN --problem p1 --limit 100000",
                                     "memory export RUN"])
def test_a_closed_stdout_stops_quietly(command, run_dir):
    """`pmd ... | head -1`: no traceback, nothing on stderr, exit code 32 (EPIPE), as `python -m json.tool` does."""
    env = {**os.environ, "PYTHONPATH": str(Path(pmd.__file__).resolve().parents[1])}
    script = (f"{sys.executable} -m pmd.cli {command.replace('RUN', str(run_dir))} | head -1; "
              "echo \"status=${PIPESTATUS[0]}\" >&2")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "status=32", proc.stderr
