"""Run-directory integrity (issue 16), on the tiny random Llama (CPU):

- one writer per run directory: a second `pmd train`, a `--resume` while the first still runs, or a `pmd compare`
  sub-run on a directory another process holds stop with one line and write nothing; a killed holder's lock is gone;
- a run killed after its last step (final evaluation, final save, report) or resumed once finished ends where an
  uninterrupted run ends, without training past `train.steps`;
- read commands (`pmd memory show/stats/export`, `report`, `explain`) leave the store byte-for-byte as it was and
  create no -wal/-shm; export refuses any file it would destroy; `report` checks its inputs before it writes;
- the disk's own failures (full, read-only) and impossible run dirs are one line, with nothing left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import snapshot
import pmd.report
import pmd.trainer
from pmd.rundir import LOCK_FILE, RunDirLock, check_run_dir
from pmd.cli import disk_error, export_refusal, main
from pmd.config import config_from_dict
from pmd.errors import CheckpointError, ConfigError
from pmd.memory.store import MemoryStore
from pmd.pipeline import run_training

STEPS = 3
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(pmd.report.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def run_config(model: Path, run_dir: Path, **train) -> dict:
    """PMD, 3 steps, a checkpoint every step (so the last one is at the last step), every memory level used."""
    params = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    return {
        "model": {"name_or_path": str(model)},
        "env": {"tasks": [{"name": "basic_arithmetic", "params": params}], "train_size": 4, "eval_size": 2},
        "train": {"algo": "pmd", "steps": STEPS, "save_steps": 1, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4, "learning_rate": 0.01, **train},
        "memory": {"reflect_every": 1, "consolidate_every": 1},
        "eval": {"num_samples": 1, "max_new_tokens": 4},
        "run_dir": str(run_dir),
    }


def one_line_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pmd: error: "), err
    assert "Traceback" not in err
    return lines[0]


def memory_dump(run: Path) -> list[dict]:
    out: list[dict] = []

    class Sink:
        def write(self, line: str) -> None:
            out.append(json.loads(line))

    with MemoryStore.open_existing(run / "memory.sqlite", read_only=True) as store:
        store.export_jsonl(Sink())
    return out


def end_state(run: Path) -> dict:
    """What a finished run leaves, less what only says how long the last session took."""
    summary = json.loads((run / "summary.json").read_text())
    from pmd.report import PHASE_ORDER

    report = [line for line in (run / "report.md").read_text().splitlines() if "wall time" not in line
              and not line.startswith(("| phase ", *(f"| {p} |" for p in PHASE_ORDER)))]  # seconds per phase
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "summary": {k: Path(v).name if k in ("final_model", "report") else v for k, v in summary.items()
                    if k not in ("train_seconds", "eval_seconds")},
        "eval_base": json.loads((run / "eval_base.json").read_text()),
        "eval_trained": json.loads((run / "eval_trained.json").read_text()),
        "steps": [{k: v for k, v in r.items() if not k.startswith("time/")}  # wall-clock seconds per phase
                  for r in rows if "train_runtime" not in r],
        "memory": memory_dump(run),
        "report": report,
        "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
        "leftovers": sorted(p.name for p in run.iterdir() if p.name.endswith((".tmp", ".trash"))),
    }


def assert_same_end(reference: Path, run: Path) -> None:
    a, b = end_state(reference), end_state(run)
    assert b["summary"]["steps"] == STEPS, "no step past train.steps"
    assert [r["step"] for r in b["steps"]] == list(range(1, STEPS + 1))
    assert sum(d["level"] == "experience" for d in b["memory"]) == STEPS * 2 * 2  # prompts x generations
    assert b["leftovers"] == []
    for r in (reference, run):  # the Trainer's end-of-training row, also after a resume with no step left (was: 0)
        rows = [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in rows if "train_runtime" in row] == [STEPS], r
    for key in a:
        assert a[key] == b[key], key
    wa, wb = load_file(reference / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def finished(tiny_model_path, tmp_path_factory) -> Path:
    """The reference: 3 steps without interruption, evaluated before and after."""
    run = tmp_path_factory.mktemp("finished") / "run"
    run_training(config_from_dict(run_config(tiny_model_path, run)))
    return run


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing catches it."""


# ------------------------------------------------------------------------------------------ kills after the last step

def test_a_finished_run_resumed_again_ends_the_same_and_trains_no_fourth_step(finished, tiny_model_path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    cfg = config_from_dict(run_config(tiny_model_path, run))
    for _ in range(2):  # idempotent
        summary = run_training(cfg, resume=True)
        assert summary["steps"] == STEPS and summary["memory"]["experiences"] == 12
        assert_same_end(finished, run)


def test_killed_during_the_final_evaluation_resumes_to_the_same_end(finished, tiny_model_path, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = config_from_dict(run_config(tiny_model_path, run))

    def killed(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr(pmd.trainer, "evaluate_policy", killed)
        with pytest.raises(Killed):
            run_training(cfg)
    assert (run / "checkpoints" / f"checkpoint-{STEPS}").is_dir() and not (run / "final").exists()
    assert not (run / "summary.json").exists()
    run_training(cfg, resume=True)
    assert_same_end(finished, run)


def test_killed_during_the_final_save_resumes_to_the_same_end(finished, tiny_model_path, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = config_from_dict(run_config(tiny_model_path, run))

    def killed(trainer, final: Path, base_model: str, cfg) -> None:
        half = final.with_name(".final-0badc0de.tmp")  # what _save_final leaves when killed mid-write
        half.mkdir()
        (half / "model.safetensors").write_bytes(b"\0" * 100)
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr(pmd.trainer, "_save_final", killed)
        with pytest.raises(Killed):
            run_training(cfg)
    assert (run / ".final-0badc0de.tmp").is_dir() and not (run / "final").exists()
    run_training(cfg, resume=True)
    assert_same_end(finished, run)


def test_killed_while_writing_the_report_resumes_to_the_same_end(finished, tiny_model_path, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = config_from_dict(run_config(tiny_model_path, run))

    def killed(run_dir: Path, title=None) -> Path:
        (run_dir / ".report.md.0badc0de.tmp").write_text("# PMD training ru")  # torn
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr(pmd.report, "write_report", killed)
        with pytest.raises(Killed):
            run_training(cfg)
    assert (run / "summary.json").is_file() and not (run / "report.md").exists()
    run_training(cfg, resume=True)
    assert_same_end(finished, run)


def _train_cmd(config: Path, *extra: str, hook: str = "") -> list[str]:
    """`pmd train` in a fresh interpreter; `hook` runs first (it can replace a function to stop the run there)."""
    code = f"import sys, os, signal, time\n{hook}\nfrom pmd.cli import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "train", str(config), *extra]


@pytest.mark.slow  # two `pmd train` processes: ~12 s
def test_kill_9_during_the_final_save_then_resume(finished, tiny_model_path, tmp_path):
    """A real SIGKILL of `pmd train` inside the final save: its lock dies with it, and --resume ends the same."""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, run)))
    hook = "import pmd.trainer as t\nt._save_final = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)"
    killed = subprocess.run(_train_cmd(config, hook=hook), env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (run / "checkpoints" / f"checkpoint-{STEPS}").is_dir() and not (run / "final").exists()
    resumed = subprocess.run(_train_cmd(config, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_end(finished, run)


# ------------------------------------------------------------------------------------------ one writer per run dir

def test_a_held_run_dir_refuses_a_fresh_start_and_a_resume_and_writes_nothing(finished, tiny_model_path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    empty = tmp_path / "empty"
    empty.mkdir()
    for target, resume in ((run, True), (run, False), (empty, False)):
        with RunDirLock(target) as lock:
            lock.mark()
            before = snapshot(target)
            with pytest.raises(CheckpointError, match=rf"another pmd process \(pid {os.getpid()}\) is writing"):
                run_training(config_from_dict(run_config(tiny_model_path, target)), resume=resume)
            assert snapshot(target) == before
    with RunDirLock(empty):  # released: it can be taken again
        pass


@pytest.mark.slow  # concurrent `pmd train` processes: ~25 s
def test_a_second_train_and_a_concurrent_resume_stop_while_the_first_trains(tiny_model_path, tmp_path):
    """The first `pmd train` holds its run dir (parked before its final save, every step trained); a second
    `pmd train` and a `--resume` exit 2 with one line and write nothing; the first then ends with each step once."""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, run)))
    gate = tmp_path / "go"
    hook = ("import pmd.trainer as t\nsave = t._save_final\n"
            f"def parked(*a, **k):\n    open({str(tmp_path / 'parked')!r}, 'w').close()\n"
            f"    while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n    return save(*a, **k)\n"
            "t._save_final = parked")
    first = subprocess.Popen(_train_cmd(config, "--no-eval", hook=hook), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "parked").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "parked").exists(), "the first run never reached its final save"
        before = snapshot(run)
        others = [subprocess.Popen(_train_cmd(config, "--no-eval", *extra), env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for extra in ([], ["--resume"])]
        for other in others:  # started together: each would have trained into the same directory
            out, err = other.communicate(timeout=300)
            lines = err.strip().splitlines()
            assert other.returncode == 2 and len(lines) == 1 and out == "", err[-2000:]
            assert f"another pmd process (pid {first.pid}) is writing this run directory" in lines[0]
        assert snapshot(run) == before
    finally:
        gate.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "train_runtime" not in line]
    assert steps == list(range(1, STEPS + 1))
    with MemoryStore.open_existing(run / "memory.sqlite", read_only=True) as store:
        assert store.counts()["experiences"] == 12
        records = [(r.step, r.problem_uid, r.sample_index) for r in store.retrievals()]
        assert len(records) == len(set(records)), "no retrieval logged twice"


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path):
    code = (f"from pmd.rundir import RunDirLock\nRunDirLock({str(tmp_path)!r}).acquire().mark()\n"
            "print('held', flush=True)\nimport time\ntime.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=rf"pid {holder.pid}"):
            RunDirLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with RunDirLock(tmp_path) as lock:
        assert lock.held


def test_a_compare_sub_run_takes_its_run_dirs_lock(tiny_model_path, tmp_path):
    from pmd.compare import run_isolated, run_one, variant_config

    base = config_from_dict({**run_config(tiny_model_path, tmp_path / "unused"),
                             "compare": {"out_dir": str(tmp_path / "cmp"), "variants": ["pmd"], "seeds": [0]}})
    cfg = variant_config(base, "pmd", 0)
    Path(cfg.run_dir).mkdir(parents=True)
    with RunDirLock(cfg.run_dir):
        before = snapshot(tmp_path / "cmp")
        for call in (run_isolated, run_one):
            with pytest.raises(CheckpointError, match="another pmd process"):
                call(cfg, {})
        assert snapshot(tmp_path / "cmp") == before


# ------------------------------------------------------------------------------------------ read commands never write

def _sidecars(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name + "-"))


def _stores(finished: Path, tmp_path: Path) -> list[Path]:
    """A checkpoint's copy (rollback journal, header bytes 18-19 = 1) and a closed live store (WAL, = 2)."""
    ckpt = tmp_path / "ckpt.sqlite"
    shutil.copy(finished / "checkpoints" / f"checkpoint-{STEPS}" / "memory.sqlite", ckpt)
    live = tmp_path / "live" / "memory.sqlite"
    live.parent.mkdir()
    shutil.copy(finished / "memory.sqlite", live)
    assert ckpt.read_bytes()[18:20] == b"\x01\x01" and live.read_bytes()[18:20] == b"\x02\x02"
    return [ckpt, live]


@pytest.mark.parametrize("argv", [["memory", "stats"], ["memory", "show"], ["memory", "show", "--level", "retrievals"],
                                  ["memory", "export"]], ids=["stats", "show", "show-retrievals", "export"])
def test_memory_commands_leave_the_store_byte_for_byte(argv, finished, tmp_path, capsys):
    for db in _stores(finished, tmp_path):
        before, mtime = db.read_bytes(), db.stat().st_mtime_ns
        assert main([*argv[:2], str(db), *argv[2:]]) == 0
        assert capsys.readouterr().out
        assert db.read_bytes() == before and db.stat().st_mtime_ns == mtime, db
        assert _sidecars(db) == [], "no -wal/-shm created"


def test_report_and_explain_leave_the_store_byte_for_byte(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    db = run / "memory.sqlite"
    before = db.read_bytes()
    assert main(["report", str(run)]) == 0
    assert main(["explain", str(run), "--limit", "1"]) == 0
    assert "Largest shifts" in capsys.readouterr().out
    assert db.read_bytes() == before and _sidecars(db) == []


def test_a_run_being_trained_can_be_inspected_and_reported(finished, tmp_path, capsys):
    """A writer holds the store open (its WAL beside it): readers see its rows and change nothing of its file."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    db = run / "memory.sqlite"
    writer = MemoryStore(db)
    try:
        writer.meta_set("probe", 1)  # committed, in the WAL
        assert (run / "memory.sqlite-wal").exists()
        before = db.read_bytes()
        assert main(["memory", "stats", str(run)]) == 0
        assert json.loads(capsys.readouterr().out)["experiences"] == 12
        assert main(["report", str(run)]) == 0
        assert db.read_bytes() == before
    finally:
        writer.close()


def test_a_read_only_store_refuses_writes(finished, tmp_path):
    db = _stores(finished, tmp_path)[0]
    with MemoryStore.open_existing(db, read_only=True) as store:
        with pytest.raises(Exception, match="readonly"):
            store.meta_set("x", 1)


# ------------------------------------------------------------------------------------------ export

@pytest.mark.parametrize("target", ["same", "dot", "symlink", "hardlink", "wal", "other_store", "config"])
def test_export_refuses_a_file_it_would_destroy(target, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    db = run / "memory.sqlite"
    out = {"same": db, "dot": run / "." / "memory.sqlite", "symlink": tmp_path / "link.sqlite",
           "hardlink": tmp_path / "hard.jsonl", "wal": run / "memory.sqlite-wal",
           "other_store": run / "checkpoints" / f"checkpoint-{STEPS}" / "memory.sqlite",
           "config": run / "config.yaml"}[target]
    if target == "symlink":
        out.symlink_to(db)
    if target == "hardlink":
        os.link(db, out)
    before = snapshot(run)
    line = one_line_error(capsys, main(["memory", "export", str(run), "--out", str(out)]))
    assert f"--out {out}" in line and ("memory store being exported" in line or "would destroy it" in line)
    assert snapshot(run) == before and _sidecars(db) == []


def test_export_replaces_an_earlier_export_and_writes_whole_files_only(finished, tmp_path, capsys, monkeypatch):
    out = tmp_path / "memory.jsonl"
    assert main(["memory", "export", str(finished), "--out", str(out)]) == 0
    first = out.read_text()
    assert main(["memory", "export", str(finished), "--out", str(out), "--limit", "1"]) == 0
    assert out.read_text() != first and json.loads(out.read_text().splitlines()[0])["level"] == "experience"
    capsys.readouterr()

    def full(self, fh, limit=None):
        fh.write('{"level": "experience"')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MemoryStore, "export_jsonl", full)
    kept = out.read_bytes()
    for path in (out, tmp_path / "new.jsonl"):
        line = one_line_error(capsys, main(["memory", "export", str(finished), "--out", str(path)]))
        assert "No space left on device" in line and "nothing written" in line
    assert out.read_bytes() == kept and not (tmp_path / "new.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.jsonl"], "no temporary file left"


def test_export_refusal_is_a_pure_decision(tmp_path):
    db = tmp_path / "memory.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + b"\0" * 100)
    (tmp_path / "old.jsonl").write_text('{"level": "meta", "key": "k", "value": 1}\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("my notes\n")
    assert export_refusal(tmp_path / "new.jsonl", db) is None
    assert export_refusal(tmp_path / "old.jsonl", db) is None
    assert export_refusal(tmp_path / "empty.jsonl", db) is None
    assert "being exported" in export_refusal(db, db)
    assert "being exported" in export_refusal(tmp_path / "memory.sqlite-shm", db)
    assert "would destroy" in export_refusal(tmp_path / "notes.txt", db)


# ------------------------------------------------------------------------------------------ report

def _report_files(run: Path) -> dict:
    return {name: snapshot(run).get(name) for name in ("report.md", "training.png", "memory.png")}


@pytest.mark.parametrize("damage", ["foreign_db", "corrupt_db", "summary_list", "summary_steps_text",
                                    "summary_seconds_text", "summary_truncated", "eval_overall_number",
                                    "eval_metric_text"])
def test_report_refuses_bad_inputs_before_it_rewrites_anything(damage, finished, tmp_path, capsys):
    import sqlite3

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert all(_report_files(run).values())
    db, summary = run / "memory.sqlite", json.loads((run / "summary.json").read_text())
    if damage == "foreign_db":
        db.unlink()
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.commit()
    elif damage == "corrupt_db":
        data = bytearray(db.read_bytes())
        data[100:4096] = b"\xff" * (4096 - 100)
        db.write_bytes(bytes(data))
    elif damage == "summary_list":
        (run / "summary.json").write_text("[]")
    elif damage == "summary_steps_text":
        (run / "summary.json").write_text(json.dumps({**summary, "steps": "three"}))
    elif damage == "summary_seconds_text":
        (run / "summary.json").write_text(json.dumps({**summary, "train_seconds": "fast"}))
    elif damage == "summary_truncated":
        (run / "summary.json").write_text(json.dumps(summary)[:40])
    elif damage == "eval_overall_number":
        (run / "eval_base.json").write_text(json.dumps({"overall": 1, "families": {}}))
    else:
        evaluated = json.loads((run / "eval_trained.json").read_text())
        evaluated["overall"]["greedy_accuracy"] = "high"
        (run / "eval_trained.json").write_text(json.dumps(evaluated))
    before = snapshot(run)
    line = one_line_error(capsys, main(["report", str(run)]))
    assert str(run) in line
    assert snapshot(run) == before, "nothing rewritten"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]



# issue 27: memory files and run dir

def test_report_skips_metrics_rows_it_cannot_show_and_still_reports(finished, tmp_path, capsys):
    """Was: a traceback (OverflowError / ValueError / UnicodeDecodeError) for a memory count of Infinity or NaN
    (Python's json writes and reads both) or a line that is not UTF-8 in metrics.jsonl."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    counts = {k: 1 for k in pmd.report.MEMORY_KEYS}
    with (run / "metrics.jsonl").open("ab") as fh:
        fh.write(json.dumps({"step": 7, **counts, "memory/experiences": float("inf")}).encode() + b"\n")
        fh.write(json.dumps({"step": 8, **counts, "memory/insights": float("nan")}).encode() + b"\n")
        fh.write(b'{"step": 9, "loss": "caf\xe9"}\n')
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.md")
    table = [line for line in (run / "report.md").read_text().splitlines()
             if line.startswith("| ") and "|---" not in line]
    assert not any(line.startswith(("| 7 |", "| 8 |", "| 9 |")) for line in table)
    assert any(line.startswith(f"| {STEPS} |") for line in table)


def test_a_resume_from_a_checkpoint_whose_trainer_state_is_damaged_is_one_line_and_writes_nothing(
        finished, tiny_model_path, tmp_path, capsys):
    """Was: the run directory put back to the checkpoint (memory replaced, metrics cut), then a JSONDecodeError
    traceback from transformers. The manifest checks sizes, so a same-size overwrite passed it."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = run / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json"
    state.write_bytes(b"x" * state.stat().st_size)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(run_config(tiny_model_path, run)))
    before = snapshot(run)
    line = one_line_error(capsys, main(["train", str(tmp_path / "cfg.yaml"), "--resume"]))
    assert str(state) in line and "unreadable" in line and "damaged" in line
    assert snapshot(run) == before


def test_pmd_report_on_a_run_a_live_train_holds_is_refused_and_writes_nothing(finished, tmp_path, capsys):
    """Was: exit 0, and report.md and both PNGs rewritten inside the run directory the live train holds."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    with RunDirLock(run) as lock:
        lock.mark()
        line = one_line_error(capsys, main(["report", str(run)]))
        assert f"another pmd process (pid {os.getpid()}) is writing" in line and f"pmd report {run}" in line
    assert snapshot(run) == {**before, LOCK_FILE: snapshot(run)[LOCK_FILE]}
    assert main(["report", str(run)]) == 0  # once the holder has gone


def test_pmd_eval_out_replaces_an_earlier_evaluation_only_and_whole(tmp_path):
    """The decision `pmd eval --out` makes (pure): what it may replace, what it must not."""
    from pmd.outpaths import eval_refusal

    cfg, db = tmp_path / "cfg.yaml", tmp_path / "memory.sqlite"
    cfg.write_text("train: {steps: 1}\n")
    db.write_bytes(b"SQLite format 3\x00" + b"\0" * 100)
    (tmp_path / "old.json").write_text(json.dumps({"overall": {}, "families": {}, "per_problem": []}))
    (tmp_path / "other.json").write_text(json.dumps({"overall": 1}))
    (tmp_path / "empty.json").write_text("")
    assert eval_refusal(tmp_path / "new.json", cfg, None) is None
    assert eval_refusal(tmp_path / "old.json", cfg, None) is None
    assert eval_refusal(tmp_path / "empty.json", cfg, None) is None
    assert "config file" in eval_refusal(cfg, cfg, None)
    assert "memory store this evaluation reads" in eval_refusal(tmp_path / "memory.sqlite-wal", None, db)
    assert "SQLite database" in eval_refusal(db, None, None)
    assert "not an earlier pmd evaluation" in eval_refusal(tmp_path / "other.json", None, None)


# ------------------------------------------------------------------------------------------ other commands

def test_eval_without_a_config_file_honours_set_and_memory(finished, tiny_model_path, tmp_path, capsys):
    db = finished / "memory.sqlite"
    before = db.read_bytes()
    out = tmp_path / "eval.json"
    argv = ["eval", "--set", f"model.name_or_path={tiny_model_path}", "--set", "env.eval_size=3",
            "--set", "eval.num_samples=1", "--set", "eval.max_new_tokens=2", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["overall"]["n_problems"] == 3 and result["num_samples"] == 1  # not the defaults (32 and 4)
    assert result["memory_at_inference"] is False
    assert main([*argv, "--set", "eval.memory_at_inference=true", "--memory", str(finished)]) == 0
    assert json.loads(out.read_text())["memory_at_inference"] is True
    assert db.read_bytes() == before
    capsys.readouterr()


def test_explain_a_relative_run_without_final_is_one_line_and_never_looks_for_a_model(finished, tmp_path, capsys,
                                                                                     monkeypatch):
    import pmd.models

    (tmp_path / "run").mkdir()
    for name in ("config.yaml", "memory.sqlite"):
        shutil.copy(finished / name, tmp_path / "run" / name)

    def no_model(*args, **kwargs):
        raise AssertionError("explain looked for a model")

    monkeypatch.setattr(pmd.models, "load_model_and_tokenizer", no_model)
    monkeypatch.setattr(pmd.models, "resolve_model", no_model)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    line = one_line_error(capsys, main(["explain", "run"]))
    assert time.monotonic() - t0 < 5
    assert "run/final: no final weights" in line and "--model" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("run_dir, needle", [("", "empty"), ("   ", "empty"),  # config.py or check_run_dir says it
                                             ("/proc/x", "kernel pseudo-filesystem"),
                                             ("/sys/pmd-run", "kernel pseudo-filesystem")],
                         ids=["empty", "blank", "proc", "sys"])
def test_impossible_run_dirs_are_refused_before_any_write(run_dir, needle, tiny_model_path, tmp_path, capsys,
                                                          monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, Path("unused"))))
    data = yaml.safe_load(config.read_text())
    data["run_dir"] = run_dir
    config.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    line = one_line_error(capsys, main(["train", str(config)]))
    assert "run_dir" in line and needle in line
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]
    assert not Path("/proc/x").exists()


def test_check_run_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    check_run_dir(tmp_path / "new" / "run")  # created later, under a writable directory
    check_run_dir(tmp_path)
    for bad, needle in [("", "empty"), (tmp_path / "file", "not a directory"),
                        (tmp_path / "file" / "run", "is not a directory"), ("/proc/self/x", "pseudo-filesystem"),
                        ("/dev/shm/../pts/run", "pseudo-filesystem")]:
        with pytest.raises(ConfigError, match=needle):
            check_run_dir(bad)


def test_disk_error_finds_the_disk_in_an_exception_chain():
    try:
        try:
            raise OSError(28, "No space left on device", "/x/optimizer.pt")
        except OSError as exc:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from exc
    except RuntimeError as exc:
        assert disk_error(exc) == "/x/optimizer.pt: No space left on device"
    assert "database or disk is full" in disk_error(Exception("database or disk is full"))
    assert disk_error(ValueError("a bug")) is None


def test_a_full_disk_while_writing_the_config_leaves_nothing(tiny_model_path, tmp_path, capsys, monkeypatch):
    import pmd.rundir

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, tmp_path / "runs" / "a")))
    real = os.replace

    def full(src, dst):
        if str(dst).endswith("config.yaml"):
            raise OSError(28, "No space left on device", str(src))
        return real(src, dst)

    monkeypatch.setattr(pmd.rundir.os, "replace", full)
    line = one_line_error(capsys, main(["train", str(config), "--no-eval"]))
    assert "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"], "the run dir it created is gone"


# ------------------------------------------------------------------------------------------ real full / read-only disks

@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (root only; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    with open(mnt / "filler", "wb") as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()


def test_a_full_disk_is_one_line_and_leaves_no_temporary_or_empty_file(finished, tiny_model_path, tmpfs, tmp_path,
                                                                         capsys):
    run = tmpfs / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("checkpoints", "final"))
    _fill(tmpfs)
    before = snapshot(run)
    line = one_line_error(capsys, main(["memory", "export", str(run), "--out", str(tmpfs / "m.jsonl")]))
    assert "No space left on device" in line and not (tmpfs / "m.jsonl").exists()
    line = one_line_error(capsys, main(["report", str(run)]))
    assert "No space left on device" in line
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, tmpfs / "fresh")))
    line = one_line_error(capsys, main(["train", str(config), "--no-eval"]))
    assert "No space left on device" in line and not (tmpfs / "fresh").exists()
    assert snapshot(run) == before
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "run"]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_read_only_run_dir_is_one_line_and_still_readable(finished, tiny_model_path, tmpfs, tmp_path, capsys):
    run = tmpfs / "run"
    shutil.copytree(finished, run)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    before = snapshot(run)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, run)))
    line = one_line_error(capsys, main(["train", str(config), "--resume"]))
    assert "not writable" in line
    line = one_line_error(capsys, main(["report", str(run)]))
    assert "Read-only file system" in line
    line = one_line_error(capsys, main(["memory", "export", str(run), "--out", str(run / "m.jsonl")]))
    assert "Read-only file system" in line
    assert main(["memory", "stats", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["experiences"] == 12
    assert snapshot(run) == before and LOCK_FILE in os.listdir(run)


def test_a_missing_reflector_model_is_refused_before_the_run_dir_exists(tiny_model_path, tmp_path, capsys):
    data = run_config(tiny_model_path, tmp_path / "run")
    data["memory"]["reflector"] = str(tmp_path / "no-such-reflector")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    line = one_line_error(capsys, main(["train", str(config)]))
    assert "memory.reflector: model path" in line and "does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_a_disk_that_fills_during_training_is_one_line_and_the_run_resumes_once_there_is_room(
        finished, tiny_model_path, tmpfs, tmp_path, capsys):
    """200 KB hold the config, the memory and the metrics but not a checkpoint: training stops with one line at
    its first save (a half checkpoint, like a kill's); with room again, --resume ends where an uninterrupted run
    does."""
    subprocess.run(["mount", "-o", "remount,size=200k", str(tmpfs)], check=True)
    run = tmpfs / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, run)))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("pmd: error: ") and "No space left on device" in err
    assert "then pmd train --resume" in err and not (run / "summary.json").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    assert main(["train", str(config), "--resume"]) == 0
    assert_same_end(finished, run)
