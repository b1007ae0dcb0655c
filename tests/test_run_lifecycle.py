"""A run's life after it starts: evaluation during training through the Trainer's log, bounded checkpoints,
weights-only checkpoints, and extending a run with --resume (tiny random model, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from pmd.checkpoint import read_manifest
from pmd.config import config_from_dict
from pmd.envs import EnvironmentSuite
from pmd.errors import CheckpointError, ConfigError
from pmd.pipeline import run_training
from pmd.report import read_metrics
from pmd.trainer import train


def data(model: Path, run_dir: Path, **train) -> dict:
    params = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    return {
        "model": {"name_or_path": str(model)},
        "env": {"tasks": [{"name": "basic_arithmetic", "params": params}], "train_size": 4, "eval_size": 2},
        "train": {"algo": "sdpo", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4, "learning_rate": 0.01, **train},
        "eval": {"num_samples": 1, "max_new_tokens": 4},
        "run_dir": str(run_dir),
    }


class Logs(TrainerCallback):
    """What a report_to tracker sees: every on_log call."""

    def __init__(self):
        self.rows = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.rows.append((state.global_step, dict(logs or {})))


def test_evaluation_during_training_goes_through_the_trainers_log(tiny_model_path, tmp_path):
    cfg = config_from_dict(data(tiny_model_path, tmp_path / "run", steps=3, logging_steps=2))
    tracker = Logs()
    train(cfg, tmp_path / "run", str(tiny_model_path), EnvironmentSuite.from_config(cfg.env), callbacks=[tracker],
          eval_every=2)
    seen = {step: logs for step, logs in tracker.rows if "eval/greedy_accuracy" in logs}
    assert sorted(seen) == [2, 3]  # every 2 steps and at the last, although logging_steps (2) skips step 3
    assert "loss" in seen[2] and "eval/avg@1" in seen[2]  # one row with the step's training metrics
    rows = {r["step"]: r for r in read_metrics(tmp_path / "run") if "eval/greedy_accuracy" in r}
    assert sorted(rows) == [2, 3] and "loss" in rows[2]


def test_save_total_limit_keeps_the_newest_checkpoints_and_refuses_one(tiny_model_path, tmp_path):
    cfg = config_from_dict(data(tiny_model_path, tmp_path / "run", steps=3, save_steps=1))
    assert cfg.train.save_total_limit == 2
    train(cfg, tmp_path / "run", str(tiny_model_path), EnvironmentSuite.from_config(cfg.env))
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["checkpoint-2", "checkpoint-3"]
    with pytest.raises(ConfigError, match="train.save_total_limit: expected 0 .* or >= 2, got 1"):
        config_from_dict(data(tiny_model_path, tmp_path / "x", save_total_limit=1))


def test_weights_only_checkpoints_are_smaller_and_refuse_resume(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    run_training(config_from_dict(data(tiny_model_path, run, save_steps=1, save_optimizer=False)),
                 evaluate_models=False)
    ckpt = run / "checkpoints" / "checkpoint-2"
    assert not (ckpt / "optimizer.pt").exists() and read_manifest(ckpt).resumable is False
    with pytest.raises(CheckpointError, match="checkpoint-2: holds weights only .* cannot continue from it"):
        run_training(config_from_dict(data(tiny_model_path, run, save_steps=1, save_optimizer=False, steps=3)),
                     evaluate_models=False, resume=True)


def test_extending_a_run_learns_in_the_new_steps_and_keeps_the_original_config(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    run_training(config_from_dict(data(tiny_model_path, run, save_steps=1)), evaluate_models=False)
    original = (run / "config.yaml").read_text()
    at_two = load_file(run / "checkpoints" / "checkpoint-2" / "model.safetensors")
    summary = run_training(config_from_dict(data(tiny_model_path, run, save_steps=1, steps=3)),
                           evaluate_models=False, resume=True)
    assert summary["steps"] == 3 and summary["extended"] == {"from_steps": 2, "to_steps": 3, "at_step": 2}
    assert json.loads((run / "summary.json").read_text())["extended"]["to_steps"] == 3
    at_three = load_file(run / "final" / "model.safetensors")
    # with the checkpoint's learning rate (0 at the end of a 2-step linear schedule) step 3 would change nothing
    assert any(not torch.equal(at_two[k], at_three[k]) for k in at_two)
    assert (run / "config.yaml").read_text() == original and yaml.safe_load(original)["train"]["steps"] == 2


def test_resume_refuses_any_other_changed_setting_and_writes_nothing(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    run_training(config_from_dict(data(tiny_model_path, run, save_steps=1)), evaluate_models=False)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"--resume: train.learning_rate, train.temperature differ from the run's "
                                          r"config.yaml; .*only train.steps may change"):
        run_training(config_from_dict(data(tiny_model_path, run, save_steps=1, learning_rate=0.02,
                                           temperature=0.7)), evaluate_models=False, resume=True)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


STAGES = ["preflight", "prepare", "evaluate_base", "train", "evaluate_trained", "write_summary", "report"]


def test_pmd_train_and_a_compare_sub_run_go_through_the_same_run(tiny_model_path, tmp_path, monkeypatch):
    """Was: compare.run_one, a second orchestrator with its own lock, config and summary writes. Both now execute
    `run.Run`'s stages, in the same order; only their options differ."""
    from pmd.compare import run_one, variant_config
    from pmd.run import Run

    seen: list[tuple[str, str]] = []
    for name in STAGES:
        real = getattr(Run, name)
        monkeypatch.setattr(Run, name, lambda self, _real=real, _name=name: (
            seen.append((self.cfg.run_dir, _name)), _real(self))[1])
    cfg = config_from_dict(data(tiny_model_path, tmp_path / "train"))
    summary = run_training(cfg, evaluate_models=False)
    assert [name for _, name in seen] == STAGES and Path(summary["report"]).is_file()
    assert "final_eval" not in summary and "cpu_minutes" not in summary  # pmd train's summary keys, unchanged

    seen.clear()
    unused = data(tiny_model_path, tmp_path / "unused")
    base = config_from_dict({**unused, "eval": {**unused.get("eval", {}), "every_steps": 1},
                             "compare": {"out_dir": str(tmp_path / "cmp"), "variants": ["sdpo"], "seeds": [0]}})
    sub = variant_config(base, "sdpo", 0)
    recorded = run_one(sub, {"overall": {"greedy_accuracy": 0.25}, "families": {}})
    assert seen == [(sub.run_dir, name) for name in STAGES]
    assert "report" not in recorded and not (Path(sub.run_dir) / "report.md").exists()  # a comparison's option
    evals = [(r["step"], r["eval/greedy_accuracy"]) for r in read_metrics(Path(sub.run_dir))
             if "eval/greedy_accuracy" in r]
    assert [step for step, _ in evals] == [0, 1, 2] and evals[0][1] == 0.25  # the given base evaluation is step 0
    assert recorded["final_eval"]["greedy_accuracy"] == evals[-1][1] and recorded["cpu_minutes"] > 0
