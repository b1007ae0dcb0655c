"""LoRA the TRL way: `train.lora_*` reach PEFT's LoraConfig, bad values fail at load, and a LoRA run leaves both
the merged model (`final/`, plain transformers) and the adapter (`final/adapter/`, PEFT) that computes the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pmd.config import load_config
from pmd.errors import ConfigError
from pmd.trl_args import lora_config

# ------------------------------------------------------------------------------------------ config -> LoraConfig


def test_lora_is_off_at_rank_zero():
    assert lora_config(load_config(None, [])) is None
    # the other lora_* keys alone do not switch it on: lora_r is the one switch
    assert lora_config(load_config(None, ["train.lora_alpha=8", "train.lora_dropout=0.1"])) is None


def test_defaults_keep_alpha_twice_the_rank_on_all_linear_layers():
    lc = lora_config(load_config(None, ["train.lora_r=8"]))
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, lc.target_modules) == (8, 16, 0.0, "all-linear")
    assert lc.task_type == "CAUSAL_LM"


def test_alpha_dropout_and_targets_reach_the_lora_config():
    cfg = load_config(None, ["train.lora_r=4", "train.lora_alpha=32", "train.lora_dropout=0.05",
                             "train.lora_target_modules=[q_proj, v_proj]"])
    lc = lora_config(cfg)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (4, 32, 0.05)
    assert set(lc.target_modules) == {"q_proj", "v_proj"}


def test_lora_keys_round_trip_through_yaml(tmp_path):
    from pmd.config import save_config

    cfg = load_config(None, ["train.lora_r=4", "train.lora_target_modules=[o_proj]", "train.lora_alpha=4"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert (again.train.lora_r, again.train.lora_alpha, again.train.lora_target_modules) == (4, 4, ["o_proj"])


BAD = [
    ("train.lora_r=-1", r"(?:^|: )train\.lora_r: expected >= 0"),
    ("train.lora_alpha=-8", r"(?:^|: )train\.lora_alpha: expected > 0, or 0 for 2 x train\.lora_r, got -8$"),
    ("train.lora_alpha=1.5", r"(?:^|: )train\.lora_alpha: expected an integer"),
    ("train.lora_dropout=1.0", r"(?:^|: )train\.lora_dropout: expected a value in \[0, 1\), got 1\.0$"),
    ("train.lora_dropout=-0.1", r"(?:^|: )train\.lora_dropout: expected a value in \[0, 1\)"),
    ("train.lora_target_modules=q_proj", r"(?:^|: )train\.lora_target_modules: expected 'all-linear' or a list of module "
                                         r"names, got 'q_proj' \(for one module write \[q_proj\]\)$"),
    ("train.lora_target_modules=[]", r"(?:^|: )train\.lora_target_modules: expected 'all-linear' or a non-empty list"),
    ("train.lora_target_modules=['']", r"(?:^|: )train\.lora_target_modules\[0\]: expected a module name"),
    ("train.lora_target_modules=[q_proj, ' v_proj']", r"(?:^|: )train\.lora_target_modules\[1\]: expected a module name"),
    ("train.lora_target_modules=[q_proj, q_proj]", r"(?:^|: )train\.lora_target_modules: \['q_proj', 'q_proj'\] names a "
                                                   r"module twice$"),
    ("train.lora_target_modules=[all-linear, q_proj]", r"(?:^|: )train\.lora_target_modules: 'all-linear' stands alone"),
    ("train.lora_target_modules=[1, 2]", r"(?:^|: )train\.lora_target_modules: expected"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[o for o, _ in BAD])
def test_bad_lora_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, ["train.lora_r=4", override])
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ a tiny LoRA run

TARGETS = ["q_proj", "v_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_path):
    """One 2-step PMD run with LoRA on chosen modules (PMD: the EMA teacher is a second adapter, which must not
    leak into the saved one). The learning rate is large so that the adapter moves the logits measurably."""
    from pmd.envs import EnvironmentSuite
    from pmd.trainer import train

    run_dir = tmp_path_factory.mktemp("lora") / "run"
    cfg = load_config(None, [
        "env.tasks=[{name: basic_arithmetic, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]",
        "env.train_size=4", "env.eval_size=2", "train.algo=pmd", "train.steps=2", "train.prompts_per_step=2",
        "train.num_generations=2", "train.max_completion_length=6", "train.learning_rate=0.01",
        "train.lora_r=4", "train.lora_alpha=16", f"train.lora_target_modules={TARGETS}",
        "memory.reflect_every=1", "memory.consolidate_every=1", f"run_dir={run_dir}",
    ])
    summary = train(cfg, run_dir, str(tiny_model_path), EnvironmentSuite.from_config(cfg.env))
    return Path(summary["final_model"])


def _logits(model, tiny_model_path):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    ids = tok("Calculate 3 + 4 = 7 . Answer : 7", return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow  # a Python process loading the model: ~6 s
def test_final_holds_a_merged_model_that_loads_without_peft(lora_run):
    assert lora_run.name == "final"
    assert not (lora_run / "adapter_config.json").exists()  # else transformers would load final/ as an adapter
    # a fresh interpreter in which `import peft` fails: final/ is an ordinary transformers model
    script = ("import sys; sys.modules['peft'] = None\n"
              "from transformers import AutoModelForCausalLM\n"
              f"m = AutoModelForCausalLM.from_pretrained({str(lora_run)!r})\n"
              "assert not any('lora_' in n for n, _ in m.named_parameters())\n"
              "print('loaded', type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded LlamaForCausalLM" in done.stdout


def test_adapter_holds_the_trained_lora_config(lora_run):
    adapter = lora_run / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert (saved["peft_type"], saved["r"], saved["lora_alpha"]) == ("LORA", 4, 16)
    assert set(saved["target_modules"]) == set(TARGETS)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "teacher").exists()  # SDPO's EMA teacher adapter is training state, not saved

    from safetensors.torch import load_file

    weights = load_file(adapter / "adapter_model.safetensors")
    modules = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights}
    assert modules == set(TARGETS)
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k), "B starts at 0: training moved it"


def test_peft_loads_the_adapter_and_matches_the_merged_model(lora_run, tiny_model_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = _logits(AutoModelForCausalLM.from_pretrained(lora_run), tiny_model_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    untrained = _logits(base, tiny_model_path)
    adapted = _logits(PeftModel.from_pretrained(base, lora_run / "adapter"), tiny_model_path)
    assert (merged - untrained).abs().max() > 1e-3, "the adapter changes the model"
    torch.testing.assert_close(adapted, merged, rtol=1e-5, atol=1e-5)


def test_adapter_readme_is_the_filled_card_not_peft_template(lora_run, tiny_model_path):
    """PEFT writes an empty template whose `base_model` is the local path training loaded; pmd replaces it."""
    import yaml

    text = (lora_run / "adapter" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    # the card names the model the config names (the fixture's config keeps the built-in default while it trains
    # the tiny model from a path): its Hub id, never the local folder that was loaded
    assert (meta["library_name"], meta["base_model"]) == ("peft", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert str(tiny_model_path) not in text and "[More Information Needed]" not in text
    assert "LoRA r=4, alpha=16" in text and "PeftModel.from_pretrained" in text
    assert "Not evaluated: these weights were saved by training" in text  # trainer.train alone: no evaluation
    assert yaml.safe_load((lora_run / "README.md").read_text().split("---\n")[1])["library_name"] == "transformers"
