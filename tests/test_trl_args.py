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
    ({"lerning_rate": 0.1}, "train.trl.lerning_rate: not a field of TRL's SDPOConfig (did you mean "
                            "train.learning_rate?)"),  # the near field is pmd's own option: suggest that
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
    """Accepted because TRL has the field and pmd leaves it to the user (beta and model_init_kwargs are pmd
    defaults a user may override), not because nothing is checked: the same key is refused once TRL lacks it."""
    from pmd.trl_args import PMD_DEFAULTS, PMD_DECIDES, PMD_OPTION_FOR, check_trl_keys

    accepted = {"warmup_steps": 0.1, "weight_decay": 0.0, "beta": 0.04,
                "model_init_kwargs": {"attn_implementation": "sdpa"}}
    assert {"beta", "model_init_kwargs"} <= set(PMD_DEFAULTS) and not set(accepted) & (set(PMD_OPTION_FOR) |
                                                                                       set(PMD_DECIDES))
    assert check_trl_keys("grpo", accepted, FAKE_FIELDS) is None
    for key, value in accepted.items():
        with pytest.raises(ConfigError, match=rf"^train\.trl\.{key}: not a field of TRL's GRPOConfig"):
            check_trl_keys("grpo", {key: value}, FAKE_FIELDS - {key})


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
    ("sdpo", "{bf16: true}", "train.trl.bf16: set model.compute_dtype instead"),
    ("grpo", "{teacher_update_rate: 0.1}", "train.trl.teacher_update_rate: not a field of TRL's GRPOConfig"),
])
def test_train_trl_keys_are_checked_when_the_config_loads(algo, trl, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.algo={algo}", f"train.trl={trl}"])
    assert needle in str(info.value)


def test_train_trl_values_reach_trl(tmp_path):
    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.trl={warmup_steps: 0.05, lr_scheduler_type: constant, "
                                               "weight_decay: 0.01, max_grad_norm: 0.5, teacher_update_rate: 0.1}")
    args = trl_config(cfg, str(tmp_path / "out"))
    assert args.warmup_steps == 0.05 and args.weight_decay == 0.01 and args.max_grad_norm == 0.5
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "constant"
    assert args.teacher_update_rate == 0.1
    default = trl_config(make_cfg(tmp_path, "train.algo=pmd"), str(tmp_path / "out"))
    assert default.max_grad_norm == 1.0 and default.weight_decay == 0.0  # the values above were not defaults


def test_train_trl_overrides_pmd_defaults_and_merges_model_init_kwargs(tmp_path):
    import torch

    cfg = make_cfg(tmp_path, "train.algo=grpo", "model.dtype=bfloat16",
                   "train.trl={beta: 0.04, loss_type: grpo, model_init_kwargs: {attn_implementation: eager}}")
    args = trl_config(cfg, str(tmp_path / "out"))
    assert args.beta == 0.04 and args.loss_type == "grpo"
    assert args.model_init_kwargs == {"attn_implementation": "eager", "dtype": torch.bfloat16, "device_map": None}
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


# ------------------------------------------------------------------------------------------ report_to, integrations


def test_integration_table_matches_transformers():
    """Every name transformers accepts in report_to, and only those (a transformers bump that adds one fails here)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from pmd.integrations import INTEGRATIONS

    assert set(INTEGRATIONS) == set(INTEGRATION_TO_CALLBACK)


@pytest.mark.parametrize("value, names", [("none", []), ("all", []), ([], []), ("wandb", ["wandb"]),
                                          (["wandb", "tensorboard"], ["wandb", "tensorboard"])])
def test_report_to_accepts_none_one_or_a_list(value, names):
    from pmd.integrations import check_report_to

    assert check_report_to(value) == names


@pytest.mark.parametrize("value, needle", [
    ("wandbb", "train.report_to: unknown integration 'wandbb' (did you mean 'wandb'? valid: 'none', 'all', "),
    (["tensorboard", "mlfow"], "unknown integration 'mlfow' (did you mean 'mlflow'?"),
    ("nothing-like-it", "unknown integration 'nothing-like-it' (valid: 'none', 'all', 'azure_ml'"),
    (["none", "wandb"], "train.report_to: 'none' stands alone, not in a list"),
    (["wandb", "wandb"], "names an integration twice"),
])
def test_report_to_typos_name_the_nearest_integration(value, needle):
    from pmd.integrations import check_report_to

    with pytest.raises(ConfigError) as info:
        check_report_to(value)
    assert needle in str(info.value)


def test_report_to_is_checked_when_the_config_loads_and_reaches_trl(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        load_config(None, ["train.report_to=tensorbord"])
    cfg = make_cfg(tmp_path, "train.report_to=[wandb, tensorboard]")
    assert cfg.train.report_to == ["wandb", "tensorboard"]
    assert trl_config(cfg, str(tmp_path / "out")).report_to == ["wandb", "tensorboard"]
    assert trl_config(make_cfg(tmp_path), str(tmp_path / "out")).report_to == []  # "none"


def set_importable(monkeypatch, **modules: bool) -> None:
    """Make each module importable (a stub with a spec) or not (None in sys.modules: find_spec says absent)."""
    import importlib.machinery
    import sys
    import types

    for name, present in modules.items():
        name = name.replace("__", ".")
        if present:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            monkeypatch.setitem(sys.modules, name, stub)
        else:
            monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("report_to, modules, message", [
    ("wandb", {"wandb": False}, "train.report_to: 'wandb' needs the wandb package: "
                                "pip install 'procedural-memory-distillation[wandb]'"),
    ("trackio", {"trackio": False}, "train.report_to: 'trackio' needs the trackio package: "
                                    "pip install 'procedural-memory-distillation[trackio]'"),
    (["wandb", "tensorboard"], {"wandb": True, "tensorboard": False, "tensorboardX": False},
     "train.report_to: 'tensorboard' needs the tensorboard or tensorboardX package: "
     "pip install 'procedural-memory-distillation[tensorboard]'"),
    ("mlflow", {"mlflow": False}, "train.report_to: 'mlflow' needs the mlflow package: pip install mlflow"),
    ("dagshub", {"dagshub": True, "mlflow": False}, "'dagshub' needs the mlflow package"),
    ("flyte", {"flytekit": True, "flytekitplugins": False}, "'flyte' needs the flytekitplugins.deck package"),
])
def test_check_integrations_names_the_missing_package_and_its_install(tmp_path, monkeypatch, report_to, modules,
                                                                      message):
    from pmd.integrations import check_integrations

    set_importable(monkeypatch, **modules)
    cfg = make_cfg(tmp_path)
    cfg.train.report_to = report_to
    with pytest.raises(ConfigError) as info:
        check_integrations(cfg)
    assert str(info.value).startswith("train.report_to: ") and message in str(info.value)


@pytest.mark.parametrize("report_to, modules, looked_up", [
    ("none", {"wandb": False}, []),
    ("wandb", {"wandb": True}, [("wandb", True)]),
    (["tensorboard", "trackio"], {"tensorboard": False, "tensorboardX": True, "trackio": True},
     [("tensorboard", False), ("tensorboardX", True), ("trackio", True)]),  # either tensorboard package will do
    ("flyte", {"flytekit": True, "flytekitplugins": True, "flytekitplugins__deck": True},
     [("flytekit", True), ("flytekitplugins.deck", True)]),
])
def test_check_integrations_passes_when_the_packages_import(tmp_path, monkeypatch, report_to, modules, looked_up):
    """Passes having looked up each package its integrations need, and found it."""
    import pmd.integrations as ta

    set_importable(monkeypatch, **modules)
    asked: list[tuple[str, bool]] = []
    importable = ta._importable
    monkeypatch.setattr(ta, "_importable", lambda m: asked.append((m, importable(m))) or asked[-1][1])
    cfg = make_cfg(tmp_path)
    cfg.train.report_to = report_to
    assert ta.check_integrations(cfg) is None
    assert asked == looked_up


def test_kubeflow_needs_its_environment_variable(tmp_path, monkeypatch):
    from pmd.integrations import check_integrations

    cfg = make_cfg(tmp_path, "train.report_to=kubeflow")
    monkeypatch.delenv("KUBEFLOW_TRAINER_SERVER_URL", raising=False)
    with pytest.raises(ConfigError, match="'kubeflow' needs the KUBEFLOW_TRAINER_SERVER_URL environment variable"):
        check_integrations(cfg)
    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_URL", "https://example.invalid")
    check_integrations(cfg)


@pytest.mark.parametrize("cuda, vllm, message", [
    (False, True, "train.use_vllm: true needs a CUDA GPU and none is visible; set train.use_vllm=false"),
    (False, False, "train.use_vllm: true needs a CUDA GPU"),
    (True, False, "train.use_vllm: true needs the vllm package: pip install 'procedural-memory-distillation[vllm]'"),
    (True, True, None),
])
def test_use_vllm_needs_cuda_and_vllm(tmp_path, monkeypatch, cuda, vllm, message):
    import pmd.integrations as ta

    monkeypatch.setattr(ta, "_cuda_available", lambda: cuda)
    set_importable(monkeypatch, vllm=vllm)
    cfg = make_cfg(tmp_path, "train.use_vllm=true")
    if message is None:
        ta.check_integrations(cfg)
        return
    with pytest.raises(ConfigError) as info:
        ta.check_integrations(cfg)
    assert message in str(info.value)
    cfg.train.use_vllm = False
    ta.check_integrations(cfg)  # nothing asked, nothing needed


def test_every_install_hint_names_a_pinned_extra():
    """`pip install 'procedural-memory-distillation[x]'` in a message must name an extra pyproject.toml defines, with
    exact pins."""
    import re
    import tomllib
    from pathlib import Path

    from pmd.integrations import INTEGRATIONS, VLLM_INSTALL

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    hinted = {m for _, hint in INTEGRATIONS.values() for m in re.findall(r"distillation\[(\w+)\]", hint)}
    hinted |= set(re.findall(r"distillation\[(\w+)\]", VLLM_INSTALL))
    assert hinted == {"wandb", "tensorboard", "trackio", "vllm"}
    for name in hinted | {"deepspeed"}:
        assert extras[name] and all("==" in req for req in extras[name]), (name, extras[name])
    assert "trl[vllm]==1.16.0" in extras["vllm"]  # TRL's own extra, at TRL's pin


@pytest.mark.parametrize("override, needle", [
    ("train.trl={max_grad_norm: .nan}", "train.trl.max_grad_norm: expected a finite number, got nan"),
    ("train.trl={epsilon: .inf}", "train.trl.epsilon: expected a finite number, got inf"),
    ("train.trl={model_init_kwargs: {x: [1, -.inf]}}", "train.trl.model_init_kwargs.x[1]: expected a finite number"),
])
def test_trl_values_must_be_finite(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert needle in str(info.value)
    assert load_config(None, ["train.trl={max_grad_norm: 0.5}"]).train.trl == {"max_grad_norm": 0.5}


def test_checkpointing_is_passed_under_the_name_the_installed_transformers_knows(monkeypatch, tmp_path):
    import dataclasses

    import transformers

    import pmd.trl_args as ta

    assert ta.checkpointing_field() == "activation_checkpointing"  # the pinned 5.24
    real = dataclasses.fields

    def without_new_name(cls):  # transformers 5.17's TrainingArguments
        fields = real(cls)
        return tuple(f for f in fields if f.name != "activation_checkpointing") if cls is transformers.TrainingArguments else fields

    monkeypatch.setattr(dataclasses, "fields", without_new_name)
    assert ta.checkpointing_field() == "gradient_checkpointing"
