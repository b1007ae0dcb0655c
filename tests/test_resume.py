"""Resume is exact: a run killed after a checkpoint and resumed ends with the same memory and per-step metrics as an
uninterrupted run (tiny random Llama, CPU, same seed). Also: partial checkpoints are skipped, torn metrics lines
dropped, and a real `kill -9` of `pmd train` is recovered with `--resume`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

from pmd.checkpoint import MANIFEST_FILE, TEACHER_FILE, last_complete_checkpoint, read_manifest
from pmd.rundir import restore_run_state, truncate_metrics
from pmd.config import config_from_dict
from pmd.envs import EnvironmentSuite
from pmd.errors import CheckpointError
from pmd.memory.store import MemoryStore
from pmd.trainer import train

STEPS, SAVE = 4, 2
# Timing and whole-run aggregates differ by construction between one train() call and two.
NOT_PER_STEP = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")


def run_config(tiny_model_path: Path, run_dir: Path) -> dict:
    """PMD on two tiny arithmetic families: 4 problems, 2 per step, so the resume at step 2 starts epoch 1."""
    params = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}  # copied per task: one shared
    return {  # dict would be written by yaml.safe_dump as an anchor and alias, which user configs may not use
        "model": {"name_or_path": str(tiny_model_path)},
        "env": {"tasks": [{"name": "basic_arithmetic", "params": params},
                          {"name": "chain_sum", "params": dict(params)}],  # no shared dict: YAML would alias it
                "train_size": 2, "eval_size": 2},
        "train": {"algo": "pmd", "steps": STEPS, "save_steps": SAVE, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 6, "learning_rate": 0.001},
        "memory": {"reflect_every": 1, "consolidate_every": 1},
        "run_dir": str(run_dir),
    }


class StopAt(TrainerCallback):
    """Ends training after `step` (its checkpoint is still written): the in-process stand-in for a kill."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _train(data: dict, model: Path, **kwargs) -> dict:
    cfg = config_from_dict(data)
    return train(cfg, Path(cfg.run_dir), str(model), EnvironmentSuite.from_config(cfg.env), **kwargs)


def step_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in NOT_PER_STEP and not k.startswith("time/")}  # wall-clock
            for r in rows if "train_runtime" not in r]


def memory_dump(run_dir: Path) -> list[dict]:
    """Every level of the store, ids included (a restored store continues the same autoincrement sequence)."""
    out = []

    class Sink:
        def write(self, line: str) -> None:
            out.append(json.loads(line))

    with MemoryStore.open_existing(run_dir / "memory.sqlite") as store:
        store.export_jsonl(Sink())
    return out


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = step_rows(a), step_rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == list(range(1, STEPS + 1))
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-5, abs=1e-12), (x["step"], key)
            else:
                assert y[key] == value, (x["step"], key)
    da, db = memory_dump(a), memory_dump(b)
    levels = {d["level"] for d in da}
    assert {"experience", "insight", "pattern", "retrieval"} <= levels, "the run exercises all memory levels"
    assert da == db
    retrieved = [(d["step"], d["problem_uid"], d["sample_index"]) for d in db if d["level"] == "retrieval"]
    assert len(retrieved) == len(set(retrieved)), "no retrieval logged twice"


@pytest.fixture(scope="module")
def straight(tiny_model_path, tmp_path_factory) -> Path:
    """The reference: STEPS steps without interruption."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    _train(run_config(tiny_model_path, run_dir), tiny_model_path)
    return run_dir


def test_resumed_run_matches_uninterrupted(straight, tiny_model_path, tmp_path):
    data = run_config(tiny_model_path, tmp_path / "run")
    _train(data, tiny_model_path, callbacks=[StopAt(SAVE)])
    run = tmp_path / "run"
    ckpt = last_complete_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"checkpoint-{SAVE}"
    manifest = read_manifest(ckpt)
    assert manifest.has_memory and manifest.has_teacher and (ckpt / TEACHER_FILE).is_file()
    assert manifest.loop_stats["reflections"] == SAVE
    _train(data, tiny_model_path, resume_from=str(ckpt))
    assert_same_run(straight, run)


def test_partial_checkpoint_is_skipped_and_removed(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    last = run / "checkpoints" / f"checkpoint-{STEPS}"
    (last / MANIFEST_FILE).unlink()  # as if killed while saving
    ckpt = last_complete_checkpoint(run)
    assert ckpt == run / "checkpoints" / f"checkpoint-{SAVE}"
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 5, "loss": 0.')  # a torn line from a kill mid-write

    manifest = restore_run_state(run, ckpt)
    assert manifest.step == SAVE
    assert not last.exists(), "the partial checkpoint is removed, so it is rewritten cleanly"
    assert [r["step"] for r in step_rows(run)] == [1, 2]
    with MemoryStore.open_existing(run / "memory.sqlite") as store:
        assert {e.step for e in store.experiences()} == {0, 1}
    with pytest.raises(CheckpointError, match="incomplete"):
        restore_run_state(run, last)


def test_tampered_checkpoint_is_incomplete(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    last = run / "checkpoints" / f"checkpoint-{STEPS}"
    with (last / "optimizer.pt").open("ab") as fh:
        fh.write(b"\0")  # a file whose size no longer matches the manifest
    assert read_manifest(last) is None
    assert last_complete_checkpoint(run).name == f"checkpoint-{SAVE}"


def test_fresh_start_refuses_complete_checkpoints(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="resume"):
        restore_run_state(run, None)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_truncate_metrics_keeps_rows_up_to_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "eval/x": 1}\n{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n'
                    '{"step": 2, "train_runtime": 3}\nnot json\n{"step": 3, "loss": 3}\n')
    assert truncate_metrics(path, 2) == 3
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [0, 1, 2]
    assert truncate_metrics(path, 2) == 0


@pytest.mark.slow  # three `pmd train` processes: ~25 s
def test_kill_9_then_resume_matches_uninterrupted(straight, tiny_model_path, tmp_path):
    """A real `pmd train` process SIGKILLed after its first checkpoint, in the middle of the next save interval
    (memory and metrics already hold a step the checkpoint does not), then `--resume`d."""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tiny_model_path, run)))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pmd.cli", "train", str(config), "--no-eval"]
    marker = run / "checkpoints" / f"checkpoint-{SAVE}" / MANIFEST_FILE

    def logged_after_checkpoint() -> bool:
        lines = (run / "metrics.jsonl").read_text().splitlines() if marker.exists() else []
        return any(line.startswith('{"step": %d,' % (SAVE + 1)) for line in lines)

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not logged_after_checkpoint() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert logged_after_checkpoint()
    assert not (run / "checkpoints" / f"checkpoint-{STEPS}" / MANIFEST_FILE).exists()
    with MemoryStore.open_existing(run / "memory.sqlite") as store:
        assert max(e.step for e in store.experiences()) >= SAVE, "memory holds rows the checkpoint does not"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr, "a fresh start must not overwrite the killed run"

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS
    assert_same_run(straight, run)
