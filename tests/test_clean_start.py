"""A start that fails before its first training step leaves no run directory behind, and options TRL refuses are one
line with exit code 2 (issue 26, item 2). Tiny random model, CPU."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import snapshot
from pmd.cli import main
from pmd.config import config_from_dict, load_config
from pmd.errors import ConfigError
from pmd.pipeline import run_training
from pmd.rundir import FIRST_PROMPT_END

PARAMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def data(model: Path, run_dir: Path, **train) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "env": {"tasks": [{"name": "basic_arithmetic", "params": PARAMS}], "train_size": 4, "eval_size": 2},
        "train": {"algo": "sdpo", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4, "learning_rate": 0.01, **train},
        "eval": {"num_samples": 1, "max_new_tokens": 4},
        "run_dir": str(run_dir),
    }


def cli_one_line(capsys, code: int, progress: bool = False) -> str:
    """The one `pmd: error:` line; `progress`: an error found once the model is loading may follow its progress
    bar, but nothing else (no traceback, no warning)."""
    err = capsys.readouterr().err
    assert code == 2, err
    if progress:  # the run printed its first prompt (run.Run.show_first_prompt) before the trainer was built
        err = re.sub(r"pmd: the first training prompt.*?" + re.escape(FIRST_PROMPT_END) + r"\n", "", err, flags=re.S)
    lines = [line for line in err.strip().splitlines() if not (progress and line.startswith("Loading weights:"))]
    assert len(lines) == 1 and lines[0].startswith("pmd: error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------ train.trl.reward_weights


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_reward_weights_is_refused_at_load_pointing_at_the_terms_weight(algo):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.algo={algo}", "train.trl={reward_weights: [1.0, 0.5]}"])
    text = str(info.value)
    assert "train.trl.reward_weights: " in text and "`weight:`" in text and "rewards" in text and "\n" not in text


def test_reward_weights_through_pmd_train_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_model_path, capsys,
                                                                                 monkeypatch):
    """Was: the config check passed, config.yaml and checkpoints/ were written, then TRL's ValueError (exit 1), and
    both the retry and --resume were refused."""
    monkeypatch.chdir(tmp_path)
    cfg = data(tiny_model_path, tmp_path / "run", trl={"reward_weights": [1.0]})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    before = snapshot(tmp_path)
    line = cli_one_line(capsys, main(["train", "cfg.yaml", "--no-eval"]))
    assert "train.trl.reward_weights" in line and "weight:" in line
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_an_option_trl_refuses_when_it_builds_the_trainer_is_one_line_and_leaves_no_run_dir(tmp_path, tiny_model_path,
                                                                                            capsys, monkeypatch):
    """SDPOConfig takes use_teacher_server; SDPOTrainer's constructor refuses it without vLLM. That check runs after
    the run directory exists: the error is still one line, exit 2, and the directory goes again."""
    monkeypatch.chdir(tmp_path)
    cfg = data(tiny_model_path, tmp_path / "run", distillation_normalization="all_samples",
               trl={"use_teacher_server": True})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    before = snapshot(tmp_path)
    line = cli_one_line(capsys, main(["train", "cfg.yaml", "--no-eval"]), progress=True)
    assert "train.trl: TRL's SDPOTrainer rejected ['use_teacher_server']: " in line and "use_vllm" in line
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ failing before step 1


def _fail(*args, **kwargs):
    raise RuntimeError("forced failure")


def test_a_failure_building_the_trainer_leaves_no_run_dir_and_the_retry_works(tmp_path, tiny_model_path,
                                                                              monkeypatch):
    import pmd.trainer

    run = tmp_path / "runs" / "a"  # two levels created by this start: both go again
    cfg = config_from_dict(data(tiny_model_path, run))
    with monkeypatch.context() as patch:
        patch.setattr(pmd.trainer, "build_trainer", _fail)
        with pytest.raises(RuntimeError, match="forced failure"):
            run_training(cfg, evaluate_models=False)
    assert not (tmp_path / "runs").exists()
    summary = run_training(cfg, evaluate_models=False)  # the same command again: not "already holds a run"
    assert summary["steps"] == 2 and (run / "final").is_dir() and (run / "config.yaml").is_file()


def test_a_failure_in_the_base_evaluation_keeps_what_the_directory_held_before(tmp_path, tiny_model_path,
                                                                               monkeypatch):
    """A directory that existed (with a user's file in it) stays, with exactly what it held; what the start wrote
    (config.yaml, the lock mark) goes."""
    import pmd.run

    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    monkeypatch.setattr(pmd.run, "evaluate_model", _fail)
    with pytest.raises(RuntimeError, match="forced failure"):
        run_training(config_from_dict(data(tiny_model_path, run)))
    assert snapshot(tmp_path) == before and sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_failure_after_the_first_step_keeps_the_run(tmp_path, tiny_model_path, monkeypatch):
    """The rule stops at the first optimizer step: from then on the directory holds training to resume or read."""
    import pmd.trainer

    run = tmp_path / "run"
    monkeypatch.setattr(pmd.trainer, "_save_final", _fail)
    with pytest.raises(RuntimeError, match="forced failure"):
        run_training(config_from_dict(data(tiny_model_path, run, save_steps=1)), evaluate_models=False)
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "checkpoint-2").is_dir()
    assert (run / "metrics.jsonl").read_text().strip()


def test_a_resumed_run_that_fails_before_its_first_step_keeps_its_contents(tmp_path, tiny_model_path, monkeypatch):
    import pmd.trainer

    run = tmp_path / "run"
    run_training(config_from_dict(data(tiny_model_path, run, save_steps=1)), evaluate_models=False)
    kept = {p for p in snapshot(run) if not p.startswith("metrics")}  # resume drops the end-of-training row
    monkeypatch.setattr(pmd.trainer, "build_trainer", _fail)
    with pytest.raises(RuntimeError, match="forced failure"):
        run_training(config_from_dict(data(tiny_model_path, run, save_steps=1, steps=3)), evaluate_models=False,
                     resume=True)
    assert kept <= set(snapshot(run))


@pytest.mark.slow  # a torchrun launch of two ranks, ~10 s
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed beside this Python")
def test_two_ranks_refused_by_trls_trainer_say_it_once_and_leave_no_run_dir(tiny_model_path, tmp_path):
    """Every rank builds the same trainer, so every rank stops at TRL's refusal: rank 0 says it once, takes back
    the directory, and the ranks leave together (a rank leaving alone could let the launcher kill rank 0 first)."""
    from test_multiprocess import torchrun, write_config

    cfg = write_config(tmp_path, tiny_model_path, algo="sdpo")
    proc = torchrun(tmp_path / "log", "train", str(cfg), "--run-dir", str(tmp_path / "run"), "--no-eval",
                    "--set", "train.distillation_normalization=all_samples",
                    "--set", "train.trl={use_teacher_server: true}")
    # two processes share stderr: the other rank's progress bar (no newline of its own) may precede the line
    errors = re.findall(r"pmd: error: .*", proc.stderr)
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and "TRL's SDPOTrainer rejected ['use_teacher_server']" in errors[0], proc.stderr[-3000:]
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr  # torchrun's own stays
    assert not (tmp_path / "run").exists()
