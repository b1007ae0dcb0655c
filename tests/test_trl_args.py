"""Our config -> TRL's args: the global batch layout, dtype, and what reaches TRL."""

from __future__ import annotations

import pytest

from pmd.config import load_config
from pmd.errors import ConfigError
from pmd.trl_args import BatchLayout, batch_layout, trl_config

# ------------------------------------------------------------------------------------------ batch_layout

# (prompts_per_step, num_generations, world_size, per_device, grad_accum) -> (per_device, grad_accum, per_rank)
LAYOUTS = [
    # derived: one micro-batch per step, G / world per device
    ((4, 4, 1, 0, 0), (16, 1, 16)),
    ((4, 4, 2, 0, 0), (8, 1, 8)),
    ((32, 8, 8, 0, 0), (32, 1, 32)),
    # per-device micro-batch given: accumulation derived
    ((4, 4, 1, 4, 0), (4, 4, 16)),
    ((4, 4, 2, 2, 0), (2, 4, 8)),
    ((32, 8, 8, 2, 0), (2, 16, 32)),
    ((32, 8, 8, 32, 0), (32, 1, 32)),
    # accumulation given: micro-batch derived
    ((4, 4, 1, 0, 8), (2, 8, 16)),
    ((4, 4, 2, 0, 2), (4, 2, 8)),
    ((32, 8, 8, 0, 4), (8, 4, 32)),
    # both given and consistent
    ((4, 4, 1, 4, 4), (4, 4, 16)),
    ((4, 4, 2, 1, 8), (1, 8, 8)),
    ((32, 8, 8, 2, 16), (2, 16, 32)),
]


@pytest.mark.parametrize("given, expected", LAYOUTS, ids=[str(g) for g, _ in LAYOUTS])
def test_batch_layout_splits_the_global_step(given, expected):
    prompts, gens, world, pd, ga = given
    layout = batch_layout(prompts, gens, world, pd, ga)
    assert (layout.per_device_batch_size, layout.gradient_accumulation_steps, layout.sequences_per_rank) == expected
    assert layout.sequences_per_step == prompts * gens
    # the invariant: every sequence of the step lands in exactly one micro-batch of one rank
    assert layout.per_device_batch_size * layout.gradient_accumulation_steps * world == prompts * gens


BAD_LAYOUTS = [
    ((4, 3, 5, 2, 0), "train.prompts_per_step x train.num_generations = 4 x 3 = 12 sequences do not split over "
                      "5 ranks x train.per_device_batch_size 2 (12 is not a multiple of 10)"),
    ((4, 3, 5, 0, 0), "= 12 sequences do not split over 5 ranks (12 is not a multiple of 5)"),
    ((4, 4, 2, 0, 3), "do not split over 2 ranks x train.gradient_accumulation_steps 3 (16 is not a multiple of 6)"),
    ((4, 4, 8, 4, 0), "do not split over 8 ranks x train.per_device_batch_size 4 (16 is not a multiple of 32)"),
    ((4, 4, 2, 2, 2), "= 16 sequences per step, but train.per_device_batch_size 2 x train.gradient_accumulation_steps "
                      "2 x 2 ranks = 8"),
    ((32, 8, 8, 2, 8), "= 256 sequences per step, but train.per_device_batch_size 2 x "
                       "train.gradient_accumulation_steps 8 x 8 ranks = 128"),
    ((4, 4, 1, -1, 0), "train.per_device_batch_size: expected >= 0"),
    ((4, 4, 1, 0, -2), "train.gradient_accumulation_steps: expected >= 0"),
]


@pytest.mark.parametrize("given, message", BAD_LAYOUTS, ids=[str(g) for g, _ in BAD_LAYOUTS])
def test_batch_layout_errors_show_the_arithmetic(given, message):
    with pytest.raises(ConfigError) as info:
        batch_layout(*given)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_batch_layout_is_a_plain_value():
    assert batch_layout(2, 2, 1) == BatchLayout(per_device_batch_size=4, gradient_accumulation_steps=1,
                                                sequences_per_step=4, sequences_per_rank=4)


@pytest.mark.parametrize("overrides, needle", [
    (["train.per_device_batch_size=3"], "16 sequences do not split into train.per_device_batch_size 3 on any number "
                                        "of ranks"),
    (["train.per_device_batch_size=4", "train.gradient_accumulation_steps=8"],
     "train.per_device_batch_size 4 x train.gradient_accumulation_steps 8 on any number of ranks (16 is not a "
     "multiple of 32)"),
    (["train.gradient_accumulation_steps=-1"], "train.gradient_accumulation_steps: expected >= 0"),
])
def test_batch_options_that_fit_no_world_size_fail_at_load(overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert needle in str(info.value)


def test_batch_options_that_fit_some_world_size_load():
    cfg = load_config(None, ["train.prompts_per_step=32", "train.num_generations=8", "train.per_device_batch_size=2",
                             "train.gradient_accumulation_steps=16"])
    assert (cfg.train.per_device_batch_size, cfg.train.gradient_accumulation_steps) == (2, 16)


# ------------------------------------------------------------------------------------------ trl_config


def make_cfg(tmp_path, *overrides):
    return load_config(None, ["train.prompts_per_step=4", "train.num_generations=2", f"run_dir={tmp_path / 'run'}",
                              *overrides])


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_one_rank_gets_the_whole_step_in_one_micro_batch_by_default(tmp_path, algo):
    args = trl_config(make_cfg(tmp_path, f"train.algo={algo}"), str(tmp_path / "out"))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 1)
    assert args.generation_batch_size == 8 and args.steps_per_generation == 1
    assert not (tmp_path / "out").exists(), "trl_config writes nothing (so a preflight can call it)"


def _first_generation_round(args, dataset_size: int) -> list[int]:
    """The prompt indices of the first generation round, as TRL's trainer draws them: its own RepeatSampler, built
    as `_get_train_sampler` builds it; the ranks' dataloaders take consecutive slices of its order, so the first
    `generation_batch_size` indices are the round over all ranks."""
    from trl.trainer.utils import RepeatSampler

    sampler = RepeatSampler(list(range(dataset_size)), mini_repeat_count=args.num_generations,
                            batch_size=args.generation_batch_size // args.num_generations,
                            repeat_count=args.steps_per_generation, seed=args.seed)
    return list(sampler)[:args.generation_batch_size]


@pytest.mark.parametrize("algo", ["grpo", "pmd"])
@pytest.mark.parametrize("micro", [[], ["train.per_device_batch_size=2"], ["train.gradient_accumulation_steps=4"]],
                         ids=["derived", "per-device-2", "accum-4"])
def test_two_ranks_share_one_round_of_prompts_per_step_prompts(tmp_path, monkeypatch, algo, micro):
    """With world_size=2 (TRL told it runs on 2 ranks), one optimizer step is one generation round of exactly
    train.prompts_per_step distinct prompts over both ranks, not per rank."""
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    cfg = make_cfg(tmp_path, f"train.algo={algo}", *micro)
    args = trl_config(cfg, str(tmp_path / "out"), world_size=2)
    layout = batch_layout(4, 2, 2, cfg.train.per_device_batch_size, cfg.train.gradient_accumulation_steps)
    assert args.per_device_train_batch_size == layout.per_device_batch_size
    assert args.gradient_accumulation_steps == layout.gradient_accumulation_steps
    # TRL's own derivation: the generation batch over 2 ranks is the global step
    assert args.generation_batch_size == args.per_device_train_batch_size * 2 * args.steps_per_generation == 8
    assert args.steps_per_generation == args.gradient_accumulation_steps  # one round per optimizer step
    first_round = _first_generation_round(args, dataset_size=16)
    assert len(set(first_round)) == cfg.train.prompts_per_step == 4
    assert all(first_round.count(i) == cfg.train.num_generations for i in set(first_round))


def test_world_size_must_be_the_launched_one(tmp_path):
    with pytest.raises(RuntimeError, match="runs with 1 ranks"):
        trl_config(make_cfg(tmp_path), str(tmp_path / "out"), world_size=2)


def test_a_world_size_the_step_does_not_split_over_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="8 sequences do not split over 3 ranks"):
        trl_config(make_cfg(tmp_path), str(tmp_path / "out"), world_size=3)


# ------------------------------------------------------------------------------------------ dtype


@pytest.mark.parametrize("dtype, expected", [("bfloat16", "bfloat16"), ("float32", "float32"), ("auto", None)])
def test_model_dtype_reaches_trl_model_init_kwargs(tmp_path, dtype, expected):
    import torch

    args = trl_config(make_cfg(tmp_path, f"model.dtype={dtype}"), str(tmp_path / "out"))
    if expected is None:  # auto: bfloat16 on GPU, float32 on CPU
        expected = "bfloat16" if torch.cuda.is_available() else "float32"
    assert args.model_init_kwargs["dtype"] is getattr(torch, expected)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_trainer_built_from_a_path_loads_the_configured_dtype(tmp_path, tiny_model_path, dtype):
    """TRL loads a model given as a path in float32 unless model_init_kwargs says otherwise."""
    from pathlib import Path

    import torch

    from pmd.envs import EnvironmentSuite
    from pmd.trainer import build_trainer

    cfg = load_config(None, ["train.algo=sdpo", "train.prompts_per_step=2", "train.num_generations=2",
                             "env.train_size=2", "env.eval_size=1", f"model.dtype={dtype}",
                             f"run_dir={tmp_path / 'run'}"])
    suite = EnvironmentSuite.from_config(cfg.env)
    trainer, _ = build_trainer(cfg, str(tiny_model_path), suite, Path(cfg.run_dir))
    assert trainer.model.dtype == getattr(torch, dtype)


# ------------------------------------------------------------------------------------------ train.trl

FAKE_FIELDS = {"warmup_steps", "weight_decay", "learning_rate", "output_dir", "model_init_kwargs", "beta", "use_cpu"}


@pytest.mark.parametrize("overrides, message", [
    ({"warmup_stpes": 3}, "train.trl.warmup_stpes: not a field of TRL's SDPOConfig (did you mean warmup_steps?)"),
    ({"zzz": 1}, "train.trl.zzz: not a field of TRL's SDPOConfig"),
    ({"learning_rate": 0.1}, "train.trl.learning_rate: set train.learning_rate instead"),
    ({"output_dir": "x"}, "train.trl.output_dir: pmd sets this itself: checkpoints go to <run_dir>/checkpoints"),
    ({"use_cpu": True}, "train.trl.use_cpu: pmd sets this itself"),
    ({"model_init_kwargs": {"dtype": "float16"}}, "train.trl.model_init_kwargs.dtype: set model.dtype instead"),
    ({"model_init_kwargs": {"torch_dtype": "float16"}}, "train.trl.model_init_kwargs.torch_dtype: set model.dtype"),
    ({"model_init_kwargs": "eager"}, "train.trl.model_init_kwargs: expected a mapping"),
    ({1: 2}, "train.trl: keys must be TRL field names (strings), got 1"),
    ({"max_reprompt_len": 9}, "it belongs to GRPOConfig (train.algo grpo)"),
])
def test_check_trl_keys_rejects_with_one_line(overrides, message):
    from pmd.trl_args import check_trl_keys

    with pytest.raises(ConfigError) as info:
        check_trl_keys("sdpo", overrides, FAKE_FIELDS, other_fields={"max_reprompt_len"})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_check_trl_keys_accepts_other_fields_and_pmd_defaults():
    from pmd.trl_args import check_trl_keys

    check_trl_keys("grpo", {"warmup_steps": 0.1, "weight_decay": 0.0, "beta": 0.04,
                            "model_init_kwargs": {"attn_implementation": "sdpa"}}, FAKE_FIELDS)


@pytest.mark.parametrize("algo", ["grpo", "sdpo"])
def test_pmd_tables_name_real_trl_fields_and_cover_every_field_pmd_sets(tmp_path, monkeypatch, algo):
    """The tables must follow TRL: a renamed field would otherwise be silently passed twice or never blocked."""
    import pmd.trl_args as ta

    real = ta.trl_config_class(algo)
    fields = ta.trl_fields(algo)
    both = fields | ta.trl_fields("sdpo" if algo == "grpo" else "grpo")
    assert set(ta.PMD_OPTION_FOR) | set(ta.PMD_DECIDES) | set(ta.PMD_DEFAULTS) <= both
    seen = {}

    def recording(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(ta, "trl_config_class", lambda a: recording)
    trl_config(make_cfg(tmp_path, f"train.algo={algo}"), str(tmp_path / "out"))
    assert seen and set(seen) <= set(ta.PMD_OPTION_FOR) | set(ta.PMD_DECIDES) | set(ta.PMD_DEFAULTS)


@pytest.mark.parametrize("algo, trl, needle", [
    ("pmd", "{warmup_ratio: 0.05}", "train.trl.warmup_ratio: not a field of TRL's SDPOConfig (did you mean "
                                    "warmup_steps?)"),
    ("grpo", "{learning_rate: 0.1}", "train.trl.learning_rate: set train.learning_rate instead"),
    ("grpo", "{num_iterations: 2}", "train.trl.num_iterations: pmd sets this itself"),
    ("sdpo", "{per_device_train_batch_size: 2}", "set train.per_device_batch_size instead"),
    ("sdpo", "{bf16: true}", "train.trl.bf16: set model.dtype instead"),
    ("grpo", "{teacher_update_rate: 0.1}", "train.trl.teacher_update_rate: not a field of TRL's GRPOConfig"),
])
def test_train_trl_keys_are_checked_when_the_config_loads(algo, trl, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.algo={algo}", f"train.trl={trl}"])
    assert needle in str(info.value)


def test_train_trl_values_reach_trl(tmp_path):
    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.trl={warmup_steps: 0.05, lr_scheduler_type: constant, "
                                               "weight_decay: 0.01, save_total_limit: 2, teacher_update_rate: 0.1}")
    args = trl_config(cfg, str(tmp_path / "out"))
    assert args.warmup_steps == 0.05 and args.weight_decay == 0.01 and args.save_total_limit == 2
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "constant"
    assert args.teacher_update_rate == 0.1
    default = trl_config(make_cfg(tmp_path, "train.algo=pmd"), str(tmp_path / "out"))
    assert default.save_total_limit is None and default.weight_decay == 0.0  # the values above were not defaults


def test_train_trl_overrides_pmd_defaults_and_merges_model_init_kwargs(tmp_path):
    import torch

    cfg = make_cfg(tmp_path, "train.algo=grpo", "model.dtype=bfloat16",
                   "train.trl={beta: 0.04, loss_type: grpo, model_init_kwargs: {attn_implementation: eager}}")
    args = trl_config(cfg, str(tmp_path / "out"))
    assert args.beta == 0.04 and args.loss_type == "grpo"
    assert args.model_init_kwargs == {"attn_implementation": "eager", "dtype": torch.bfloat16}
    assert trl_config(make_cfg(tmp_path, "train.algo=grpo"), str(tmp_path / "out")).loss_type == "dapo"


@pytest.mark.parametrize("algo, trl, needle", [
    ("grpo", "{lr_scheduler_type: sometimes}", "sometimes"),
    ("grpo", "{auto_find_batch_size: true}", "auto_find_batch_size is not supported by GRPO"),
    ("pmd", "{distillation_alpha: 0.3}", "requires `distillation_alpha=1.0`"),
])
def test_a_value_trl_rejects_is_a_config_error_naming_train_trl(tmp_path, algo, trl, needle):
    cfg = make_cfg(tmp_path, f"train.algo={algo}", "train.distillation_mode=sampled_token", f"train.trl={trl}")
    with pytest.raises(ConfigError) as info:
        trl_config(cfg, str(tmp_path / "out"))
    text = str(info.value)
    assert text.startswith("train.trl: TRL's ") and needle in text and "\n" not in text


def test_loading_a_config_imports_neither_torch_nor_trl(tmp_path):
    """Config loading stays fast: TRL is imported only to check a non-empty train.trl."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pmd

    env = {**os.environ, "PYTHONPATH": str(Path(pmd.__file__).resolve().parents[1])}  # this checkout's pmd
    code = ("import sys; from pmd.config import load_config; load_config(None, ['train.per_device_batch_size=4']); "
            "print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
