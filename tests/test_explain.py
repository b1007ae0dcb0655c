"""`pmd explain` on a tiny PMD run: memory shifts are computed on the logged rollouts."""

import math
from pathlib import Path

import pytest

from pmd.cli import main
from pmd.config import save_config
from pmd.envs import EnvironmentSuite
from pmd.errors import PMDError
from pmd.explain import check_run, completion_logprobs, explain
from pmd.trainer import train
from test_trainer_tiny import make_cfg


def test_explain_reports_token_shifts(tmp_path, tiny_model_path, capsys):
    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.steps=3", "train.prompts_per_step=4")
    train(cfg, Path(cfg.run_dir), str(tiny_model_path), EnvironmentSuite.from_config(cfg.env))
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")  # as `pmd train` does
    items = explain(Path(cfg.run_dir), limit=2, top=3)
    assert 1 <= len(items) <= 2 and len({i.problem_uid for i in items}) == len(items)
    for item in items:
        assert item.memory and len(item.top) <= 3
        assert math.isclose(item.total_delta, item.total_delta)  # finite
    assert main(["explain", cfg.run_dir, "--limit", "1"]) == 0
    assert "Memory the teacher saw" in capsys.readouterr().out


def test_completion_logprobs_match_a_manual_forward(tiny_model_path):
    import torch

    from pmd.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_path), device="cpu")
    msgs = [{"role": "user", "content": "Calculate 2 + 3 ."}]
    ids, lps = completion_logprobs(model, tok, msgs, "Answer : 5")
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = torch.tensor([prompt + ids])
    logits = model(full).logits[0]
    manual = torch.log_softmax(logits[len(prompt) - 1], -1)[ids[0]]  # the position that predicts the first token
    assert torch.isclose(lps[0], manual, atol=1e-5)
    assert len(ids) == len(lps) == 3


def test_check_run_needs_config_memory_and_final_weights_unless_a_model_is_given(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  steps: 1\n")
    with pytest.raises(PMDError, match="not a PMD run directory"):  # no memory.sqlite
        check_run(run)
    (run / "memory.sqlite").write_bytes(b"")
    with pytest.raises(PMDError, match=r"run/final: no final weights .*checkpoint under .*run/checkpoints"):
        check_run(run)
    assert check_run(run, "some/checkpoint") is None  # --model names other weights: final is not needed
    (run / "final").mkdir()
    assert check_run(run) is None


def test_explain_says_so_when_memory_never_fired(tmp_path, tiny_model_path, capsys):
    """One step: every teacher call was made on an empty store, so there is nothing to explain, and it says why."""
    from pmd.explain import why_nothing

    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.steps=1")
    train(cfg, Path(cfg.run_dir), str(tiny_model_path), EnvironmentSuite.from_config(cfg.env))
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")
    assert explain(Path(cfg.run_dir)) == []
    assert main(["explain", cfg.run_dir]) == 0
    out = capsys.readouterr().out
    assert "memory never fired: all" in out and "logged teacher calls were shown no memory" in out
    # a store with no teacher call at all (e.g. a run that never trained a step) says that instead
    from pmd.memory.store import MemoryStore

    empty = tmp_path / "empty"
    empty.mkdir()
    MemoryStore(empty / "memory.sqlite").close()
    assert "no teacher call was logged" in why_nothing(empty)


def test_explain_numbers_steps_as_metrics_do(tmp_path):
    from pmd.explain import Explanation, format_explanations

    text = format_explanations([Explanation("p1", 0, "m", "r", 1.0, 0.5, [])])
    assert text.startswith("## p1 (step 1, reward 1.00)")  # memory's step 0 is metrics.jsonl's step 1
