"""The worked example in examples/own_task runs end to end as a user would run it: `pmd train` (2 steps, tiny
model), `pmd eval` of the trained model, and a `pmd compare` whose table is rebuilt with --table-only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from pmd.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_task"


def test_the_example_data_is_what_its_generator_writes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = [json.loads(line) for line in (EXAMPLE / "data.jsonl").read_text().splitlines()]
    assert shipped == module.rows()


def test_train_eval_and_compare_on_the_example(tmp_path, tiny_model_path, monkeypatch, capsys):
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root / "examples" / "own_task")
    monkeypatch.chdir(root)  # the example's paths are relative to the repository root
    cfg = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    cfg["model"]["name_or_path"] = str(tiny_model_path)
    cfg["train"].update(steps=2, save_steps=0, max_completion_length=6, prompts_per_step=2, num_generations=2)
    cfg["eval"].update(num_samples=1, max_new_tokens=6, every_steps=2)
    cfg["compare"].update(out_dir=str(tmp_path / "compare"))
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")

    assert main(["train", "cfg.yaml", "--run-dir", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and "trained_greedy_accuracy" in summary
    trained = json.loads((tmp_path / "run" / "eval_trained.json").read_text())
    assert trained["families"]["unit-conversion"]["n_problems"] == trained["overall"]["n_problems"] > 0

    capsys.readouterr()
    assert main(["eval", "cfg.yaml", "--model", str(tmp_path / "run" / "final")]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["n_problems"] == trained["overall"]["n_problems"]

    assert main(["compare", "cfg.yaml", "--set", "compare.variants=[pmd]"]) == 0
    table = tmp_path / "compare" / "table.md"
    table.unlink()
    assert main(["compare", "cfg.yaml", "--set", "compare.variants=[pmd]", "--table-only"]) == 0
    assert "pmd" in table.read_text()
