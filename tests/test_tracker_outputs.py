"""Where trackers' files go: tensorboard's events into RUN/tb (tiny random model, CPU)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from transformers.integrations import TensorBoardCallback

from pmd.trainer import TENSORBOARD_DIR, tensorboard_into


def _tb_callback(logging_dir):
    """A TensorBoardCallback as the Trainer builds it (tensorboard itself need not be installed for this)."""
    cb = object.__new__(TensorBoardCallback)
    cb.logging_dir, cb.tb_writer = logging_dir, None
    return cb


def test_tensorboard_events_go_to_the_run_directory_unless_the_user_chose(tmp_path):
    ours, theirs, other = _tb_callback(None), _tb_callback("/elsewhere"), object()
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[other, ours, theirs]))
    tensorboard_into(trainer, tmp_path / TENSORBOARD_DIR)
    assert ours.logging_dir == str(tmp_path / "tb")
    assert theirs.logging_dir == "/elsewhere"  # TENSORBOARD_LOGGING_DIR, transformers' own switch, still wins


# --- the completions table for SDPO and PMD ------------------------------------------------------------------------

ARITH = "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}"


def _cfg(model, run_dir, algo, *extra):
    from pmd.config import load_config

    return load_config(None, [f"env.tasks=[{{name: basic_arithmetic, params: {ARITH}}}]", "env.train_size=2",
                              "env.eval_size=2", "train.steps=2", "train.save_steps=0", "train.prompts_per_step=2",
                              "train.num_generations=2", "train.max_completion_length=4", f"train.algo={algo}",
                              f"model.name_or_path={model}", f"run_dir={run_dir}", *extra])


@pytest.mark.parametrize("algo", ["sdpo", "pmd"])
def test_log_completions_writes_each_steps_rollouts_with_the_teachers_context(tiny_model_path, tmp_path, algo,
                                                                                capsys):
    from pmd.envs import EnvironmentSuite
    from pmd.report import read_metrics
    from pmd.trainer import train

    run = tmp_path / "run"
    cfg = _cfg(tiny_model_path, run, algo, "train.trl.log_completions=true", "train.trl.num_completions_to_print=1",
               # a teacher on every rollout: the feedback of a failed one, TRL's rule (SDPO) or pmd's (PMD)
               "train.include_environment_feedback=true")
    train(cfg, run, str(tiny_model_path), EnvironmentSuite.from_config(cfg.env))
    metrics = {r["step"]: r for r in read_metrics(run) if "loss" in r}
    for step in (1, 2):
        rows = [json.loads(line) for line in (run / "completions" / f"step-{step:05d}.jsonl").read_text().splitlines()]
        assert len(rows) == 2 * 2 and {r["step"] for r in rows} == {step}
        train_uids = {p.uid for p in EnvironmentSuite.from_config(cfg.env).problems("train")}
        assert {r["problem_id"] for r in rows} <= train_uids
        active = [r["teacher_active"] for r in rows]
        assert sum(active) / len(rows) == pytest.approx(metrics[step]["self_distillation/reprompt_sample_fraction"])
        for r in rows:
            assert isinstance(r["completion"], str) and isinstance(r["reward"], float) and r["feedback"]
            assert (r["teacher_context"] is not None) == r["teacher_active"]
            if r["teacher_active"]:  # the teacher read the reprompt (the tiny tokenizer decodes word by word)
                assert "Correctly solve the original question" in r["teacher_context"]
                assert r["teacher_context"].startswith("<|im_start|>")
            assert ("memory" in r) == (algo == "pmd")
    assert any(r["teacher_active"] for r in rows)
    assert "Step 2" in capsys.readouterr().out  # TRL's console table


def test_log_completions_is_checked_and_left_to_trl_for_grpo(tmp_path):
    from pmd.errors import ConfigError
    from pmd.trl_args import trl_config

    with pytest.raises(ConfigError, match="train.trl.log_completions: expected true or false"):
        _cfg("m", tmp_path, "sdpo", "train.trl.log_completions=1")
    with pytest.raises(ConfigError, match="num_completions_to_print: expected a whole number"):
        _cfg("m", tmp_path, "pmd", "train.trl.num_completions_to_print=0")
    assert not hasattr(trl_config(_cfg("m", tmp_path, "sdpo", "train.trl.log_completions=true"), str(tmp_path)),
                       "log_completions")  # kept from TRL's SDPOConfig, which has no such field
    grpo = trl_config(_cfg("m", tmp_path, "grpo", "train.trl.log_completions=true"), str(tmp_path))
    assert grpo.log_completions is True  # GRPO: TRL's own table


def test_completions_table_reaches_trackio_and_wandb_as_a_table(tmp_path, monkeypatch):
    """As TRL logs GRPO's: {"completions": backend.Table(dataframe=...)}; lists and dicts as JSON text cells."""
    import sys
    import types

    from pmd.completions import CompletionsLog

    logged = {}

    def fake(name, run=True):
        mod = types.ModuleType(name)
        mod.Table = lambda dataframe: ("table", dataframe)
        mod.log = lambda data: logged.setdefault(name, data)
        mod.run = object() if run else None
        monkeypatch.setitem(sys.modules, name, mod)

    fake("trackio")
    fake("wandb", run=False)  # no wandb run open: nothing logged there, as TRL
    rows = [{"step": 3, "problem_id": "p", "prompt": [{"role": "user", "content": "q"}], "completion": "c",
             "reward": 1.0, "reward_terms": {"exact": 1.0}, "passed": True, "feedback": "ok", "teacher_active": True,
             "teacher_context": "t"}]
    path = CompletionsLog(tmp_path, None, ["wandb", "trackio"]).write(3, rows)
    assert path == tmp_path / "completions" / "step-00003.jsonl" and json.loads(path.read_text()) == rows[0]
    kind, df = logged["trackio"]["completions"]
    assert kind == "table" and list(df["teacher_active"]) == [True] and json.loads(df["prompt"][0])[0]["content"] == "q"
    assert "wandb" not in logged
