"""LoRA the TRL way: `train.lora_*` reach PEFT's LoraConfig, and bad values fail at load."""

from __future__ import annotations

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
    ("train.lora_r=-1", r"^train\.lora_r: expected >= 0"),
    ("train.lora_alpha=-8", r"^train\.lora_alpha: expected > 0, or 0 for 2 x train\.lora_r, got -8$"),
    ("train.lora_alpha=1.5", r"^train\.lora_alpha: expected an integer"),
    ("train.lora_dropout=1.0", r"^train\.lora_dropout: expected a value in \[0, 1\), got 1\.0$"),
    ("train.lora_dropout=-0.1", r"^train\.lora_dropout: expected a value in \[0, 1\)"),
    ("train.lora_target_modules=q_proj", r"^train\.lora_target_modules: expected 'all-linear' or a list of module "
                                         r"names, got 'q_proj' \(for one module write \[q_proj\]\)$"),
    ("train.lora_target_modules=[]", r"^train\.lora_target_modules: expected 'all-linear' or a non-empty list"),
    ("train.lora_target_modules=['']", r"^train\.lora_target_modules\[0\]: expected a module name"),
    ("train.lora_target_modules=[q_proj, ' v_proj']", r"^train\.lora_target_modules\[1\]: expected a module name"),
    ("train.lora_target_modules=[q_proj, q_proj]", r"^train\.lora_target_modules: \['q_proj', 'q_proj'\] names a "
                                                   r"module twice$"),
    ("train.lora_target_modules=[all-linear, q_proj]", r"^train\.lora_target_modules: 'all-linear' stands alone"),
    ("train.lora_target_modules=[1, 2]", r"^train\.lora_target_modules: expected"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[o for o, _ in BAD])
def test_bad_lora_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, ["train.lora_r=4", override])
    assert "\n" not in str(info.value)
