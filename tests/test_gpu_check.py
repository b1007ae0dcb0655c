"""The GPU check (benchmarks/gpu_check) runs on a lent GPU at most once per issue: its script must not rot between.
CHECK_SMOKE=1 runs the same run.sh on this CPU with a tiny random Qwen3-shape model and SmolLM2's tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_the_gpu_check_runs_end_to_end_on_the_cpu(smollm2_path, tmp_path):
    env = {**os.environ, "CHECK_SMOKE": "1", "OUT": str(tmp_path / "out"), "CHECK_WORK": str(tmp_path / "work"),
           "CHECK_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check" / "run.sh")], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    runs = summary["runs"]
    assert {label: run["rc"]["rc"] for label, run in runs.items()} == {
        "sdpo": 0, "pmd": 0, "pmd-pure-bf16": 0, "pmd-lora": 0, "pmd-1.5b": 0}
    # what the device call is there to show, read back from the runs themselves
    assert runs["pmd"]["summary"]["precision"]["parameters"] == "float32"
    assert runs["pmd"]["train_end"]["loss_logits"] == ["float32/float32"]
    assert runs["pmd"]["train_end"]["student_changed"] > 0.5  # fp32 master weights move at lr 1e-6 ...
    assert runs["pmd-pure-bf16"]["train_end"]["student_changed"] < 0.1  # ... pure bf16 weights mostly do not
    assert "teacher_model.safetensors" in runs["pmd"]["files"] and "adapter" in runs["pmd-lora"]["files"]
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "PMD / SDPO step time" in text
