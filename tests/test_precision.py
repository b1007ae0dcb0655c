"""Precision: storage and autocast decided together (pure), fp32 master weights that move at lr 1e-6, an EMA
teacher that tracks its fp32 reference, fp32 logits at the loss, and a record of what was actually used."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pmd.config import load_config
from pmd.ema import EMATeacher
from pmd.envs import EnvironmentSuite
from pmd.errors import ConfigError
from pmd.precision import Precision, cpu_bf16_hint, cpu_supports_bf16, resolve_precision

ARITH = ["env.tasks=[{name: basic_arithmetic, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]"]


# ------------------------------------------------------------------------------------------ the decision (pure)

@pytest.mark.parametrize("dtype, compute, on_gpu, expected", [
    ("auto", "auto", True, Precision("float32", "bfloat16")),  # GPU default: fp32 master + bf16 compute
    ("auto", "auto", False, Precision("float32", None)),  # CPU default, bf16 units or not: end-to-end parity unshown
    ("auto", "bfloat16", False, Precision("float32", "bfloat16")),  # bf16 compute on a CPU, asked for
    ("auto", "float32", True, Precision("float32", None)),  # fp32 one setting away on a GPU
    ("bfloat16", "auto", True, Precision("bfloat16", None)),  # pure bf16, asked for explicitly
    ("bfloat16", "float32", False, Precision("bfloat16", None)),
    ("float32", "float16", True, Precision("float32", "float16")),  # fp16 autocast + the Trainer's scaling
])
def test_resolve_precision(dtype, compute, on_gpu, expected):
    got = resolve_precision(dtype, compute, on_gpu, gpu_bf16=True)
    assert got == expected and got.ema_teacher == "float32"
    assert got.bf16 == (expected.autocast == "bfloat16") and got.fp16 == (expected.autocast == "float16")


def test_a_gpu_without_bf16_defaults_to_fp32_not_fp16():
    assert resolve_precision("auto", "auto", True, gpu_bf16=False) == Precision("float32", None)


@pytest.mark.parametrize("dtype, compute, on_gpu, message", [
    ("float16", "auto", True, "model.dtype: float16 would train pure fp16, without the loss scaling"),
    ("float16", "float16", True, "model.dtype: float16"),
    ("auto", "float16", False, "model.compute_dtype: float16 needs a CUDA GPU"),
    ("bfloat16", "float16", True, "mixes two 16-bit formats"),
    ("float64", "auto", False, "model.dtype: expected one of"),
    ("auto", "tf32", False, "model.compute_dtype: expected one of"),
])
def test_what_cannot_train_is_refused_in_one_line(dtype, compute, on_gpu, message):
    with pytest.raises(ConfigError, match=message) as info:
        resolve_precision(dtype, compute, on_gpu)
    assert "\n" not in str(info.value)


def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n")
    assert cpu_supports_bf16.__wrapped__(str(cpuinfo))
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not cpu_supports_bf16.__wrapped__(str(cpuinfo))
    assert not cpu_supports_bf16.__wrapped__(str(tmp_path / "missing"))


@pytest.mark.parametrize("compute, on_gpu, has_units, wanted", [
    ("float32", False, True, "--set model.compute_dtype=bfloat16 trains 1.2-1.4x faster"),  # the faster setting
    ("float32", False, False, None),  # nothing faster on this CPU
    ("bfloat16", False, False, "torch emulates bf16, slower than fp32"),  # asked for, and slow here
    ("bfloat16", False, True, None),
    ("bfloat16", True, False, None),  # GPUs: no CPU hint
])
def test_the_log_names_bf16_compute_where_it_matters_on_a_cpu(compute, on_gpu, has_units, wanted):
    hint = cpu_bf16_hint(resolve_precision("auto", compute, on_gpu), on_gpu, has_units)
    assert hint == wanted if wanted is None else wanted in hint


def test_trl_args_get_fp32_weights_and_the_asked_autocast(tmp_path):
    from pmd.trl_args import trl_config

    cfg = load_config(None, ARITH + ["train.algo=sdpo", "train.prompts_per_step=2", "train.num_generations=2"])
    args = trl_config(cfg, str(tmp_path))
    assert args.model_init_kwargs["dtype"] == torch.float32 and args.model_init_kwargs["device_map"] is None
    assert not args.bf16 and not args.fp16  # auto on a CPU: fp32 compute (bf16 autocast is the GPU default)
    cfg.model.compute_dtype = "bfloat16"
    args = trl_config(cfg, str(tmp_path))
    assert args.bf16 and not args.fp16 and args.model_init_kwargs["dtype"] == torch.float32
    cfg.model.dtype = "float16"
    with pytest.raises(ConfigError, match="model.dtype: float16"):
        trl_config(cfg, str(tmp_path))


def test_train_trl_bf16_points_at_the_precision_setting(tmp_path):
    with pytest.raises(ConfigError, match="model.compute_dtype"):
        load_config(None, ARITH + ["train.trl.bf16=true"])


# ------------------------------------------------------------------------------------------ master weights, EMA

def adam_step_changed_fraction(dtype: torch.dtype, lr: float = 1e-6) -> float:
    """The fraction of weights (magnitude ~0.02) one AdamW step at `lr` changes, with weights stored in `dtype`."""
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter((0.02 * torch.randn(4096, generator=g)).to(dtype))
    before = w.detach().clone()
    w.grad = torch.randn(4096, generator=g).to(dtype)
    torch.optim.AdamW([w], lr=lr, weight_decay=0.0).step()
    return (w.detach() != before).float().mean().item()


def test_fp32_master_weights_move_at_lr_1e6_where_pure_bf16_does_not():
    assert adam_step_changed_fraction(torch.float32) > 0.99
    assert adam_step_changed_fraction(torch.bfloat16) < 0.1  # why pure bf16 is not the default


def ema_run(teacher_dtype: torch.dtype, steps: int = 200, rate: float = 0.05, pmd: bool = True) -> float:
    """An fp32 student drifting by Adam-sized steps at lr 1e-6; the fraction of the fp32 EMA's drift (the same
    student sequence) that a teacher stored in `teacher_dtype` covers after `steps` updates."""
    g = torch.Generator().manual_seed(0)
    start = 0.02 * torch.randn(2048, generator=g)
    student = torch.nn.Linear(2048, 1, bias=False)
    teacher = torch.nn.Linear(2048, 1, bias=False).to(teacher_dtype)
    with torch.no_grad():
        student.weight.copy_(start)
        teacher.weight.copy_(start)
    reference = start.clone()
    ema = EMATeacher(lambda: student.parameters(), teacher, rate)
    drift = torch.sign(torch.randn(2048, generator=g)) * 1e-6
    for _ in range(steps):
        with torch.no_grad():
            student.weight += drift
        reference.mul_(1 - rate).add_(student.weight.detach().float().flatten(), alpha=rate)
        if pmd:
            ema.update()
        else:  # TRL's SyncRefModelCallback: in place, in the teacher's dtype
            with torch.no_grad():
                teacher.weight.mul_(1 - rate).add_(student.weight, alpha=rate)
    moved = (teacher.weight.detach().float().flatten() - start)
    wanted = reference - start
    return float((moved @ wanted) / (wanted @ wanted))


def test_the_ema_teacher_tracks_its_fp32_reference():
    assert ema_run(torch.float32) == pytest.approx(1.0, abs=1e-4)  # pmd's fp32 teacher
    assert ema_run(torch.bfloat16) == pytest.approx(1.0, abs=0.02)  # bf16 storage, fp32 shadow (DeepSpeed)
    assert ema_run(torch.bfloat16, pmd=False) < 0.2  # TRL's in-place bf16 update: near the base model


# ------------------------------------------------------------------------------------------ in the trainer

def build(tmp_path, tiny_model_path, *overrides):
    from pmd.trainer import build_trainer

    cfg = load_config(None, ARITH + ["env.train_size=4", "env.eval_size=2", "train.algo=sdpo", "train.steps=1",
                                     "train.prompts_per_step=2", "train.num_generations=2",
                                     "train.max_completion_length=6", f"run_dir={tmp_path / 'run'}", *overrides])
    return build_trainer(cfg, str(tiny_model_path), EnvironmentSuite.from_config(cfg.env), Path(cfg.run_dir))[0]


def test_pure_bf16_keeps_an_fp32_ema_teacher_updated_by_pmd(tmp_path, tiny_model_path):
    from trl.experimental.sdpo.teacher_sync import SyncTeacherModelCallback

    from pmd.ema import EMATeacherCallback

    tr = build(tmp_path, tiny_model_path, "model.dtype=bfloat16")
    assert next(tr.model.parameters()).dtype == torch.bfloat16
    assert {p.dtype for p in tr.teacher_model.parameters()} == {torch.float32}
    kinds = [type(cb) for cb in tr.callback_handler.callbacks]
    assert EMATeacherCallback in kinds and SyncTeacherModelCallback not in kinds
    assert tr.ema.accumulates_in() == "float32"


def test_the_loss_reads_fp32_logits_under_bf16_autocast_and_the_run_records_it(tmp_path, tiny_model_path,
                                                                                 monkeypatch):
    import trl.experimental.sdpo.sdpo_trainer as trl_sdpo

    from pmd.trainer import train

    seen = []
    real = trl_sdpo.compute_topk_self_distillation_loss

    def recording(student_logits, teacher_logits, **kwargs):
        seen.append((student_logits.dtype, teacher_logits.dtype))
        return real(student_logits, teacher_logits, **kwargs)

    monkeypatch.setattr(trl_sdpo, "compute_topk_self_distillation_loss", recording)
    cfg = load_config(None, ARITH + ["env.train_size=4", "env.eval_size=2", "train.algo=sdpo", "train.steps=2",
                                     "train.prompts_per_step=2", "train.num_generations=2", "train.learning_rate=1e-6",
                                     "train.max_completion_length=6", "model.compute_dtype=bfloat16",
                                     "train.seed=0",
                                     f"run_dir={tmp_path / 'run'}"])
    suite = EnvironmentSuite.from_config(cfg.env)
    # a success in every group, so the loss runs: the reward is 1 for every rollout
    real_verify = suite.verify_batch
    monkeypatch.setattr(suite, "verify_batch", lambda *a, **k: [dataclasses.replace(v, reward=1.0, passed=True)
                                                                 for v in real_verify(*a, **k)])
    summary = train(cfg, Path(cfg.run_dir), str(tiny_model_path), suite)
    assert seen and set(seen) == {(torch.float32, torch.float32)}
    assert summary["precision"] == {"parameters": "float32", "optimizer_state": "float32",
                                    "ema_teacher": "float32", "loss_logits": "float32", "autocast": "bfloat16"}
