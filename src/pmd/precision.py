"""Numeric precision: the dtype weights are stored in, and the dtype the forward and backward passes compute in.

The two are separate, as in the HF Trainer and accelerate (`mixed_precision`), because they fail differently:
- storage (`model.dtype`): the trained weights and the optimizer's state. In bf16 (8 bits of mantissa) an update
  smaller than half a unit in the last place is lost: at lr 1e-6, one Adam step changes about 2% of bf16 weights
  of magnitude 0.02. So the default stores fp32 ("master weights"), and pure bf16 is an explicit choice;
- compute (`model.compute_dtype`, accelerate's `mixed_precision`): matrix products under autocast. bf16 autocast
  over fp32 weights is the standard mixed precision of the field (the HF Trainer's `bf16=True` on fp32 weights); it
  is where the speed is.

Three rules hold in every mode, whatever these two say:
- the EMA teacher accumulates in fp32 (ema.py): in bf16, updates at rate 0.05 of small student changes round away
  and the teacher stays near the base model;
- the distillation loss reads fp32 logits (sdpo_loss.fp32_logits): under ZeRO-3 they arrive in bf16, and a
  divergence of bf16 log-probabilities is mostly rounding;
- pure fp16 storage is refused: it needs loss scaling, which the HF Trainer gives only to fp16 autocast.

`resolve_precision` is the decision (pure); `precision_used` reads back from a built trainer what was actually
used, for summary.json and the run's log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

STORAGE = ("auto", "float32", "bfloat16", "float16")
COMPUTE = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Precision:
    """What a run trains with: `storage` for the student's weights and optimizer state, `autocast` for the forward
    and backward passes (None: compute in the storage dtype), `ema_teacher` for the EMA teacher's weights."""

    storage: str  # "float32" | "bfloat16"
    autocast: str | None  # "bfloat16" | "float16" | None
    ema_teacher: str = "float32"

    @property
    def bf16(self) -> bool:
        """TrainingArguments' `bf16` flag: bf16 autocast (a no-op over bf16 weights)."""
        return self.autocast == "bfloat16"

    @property
    def fp16(self) -> bool:
        """TrainingArguments' `fp16` flag: fp16 autocast with the Trainer's loss scaling."""
        return self.autocast == "float16"

    @property
    def inference(self) -> str:
        """The dtype to load a model in that is only run forward (evaluation, a reflector model)."""
        return self.autocast or self.storage


def resolve_precision(dtype: str, compute: str, on_gpu: bool, gpu_bf16: bool = True) -> Precision:
    """`model.dtype` and `model.compute_dtype` as one decision (pure; a ConfigError for what cannot train).

    `auto` storage is fp32. `auto` compute is bf16 autocast on a GPU that supports it, else fp32. On a CPU, even
    one with AVX512-BF16 / AMX-BF16, `auto` stays fp32: bf16 compute there is 1.2-1.4x faster per step with a
    batch-level gradient cosine of 0.9992, but the quickstart trained under it ended lower (strict accuracy -0.12
    [-0.22, -0.04] against fp32 over 6 paired seeds; docs/results/bf16-quickstart), so it is one explicit setting
    away (`model.compute_dtype: bfloat16`) rather than the default."""
    if dtype not in STORAGE:
        raise ConfigError(f"model.dtype: expected one of {', '.join(STORAGE)}, got {dtype!r}")
    if compute not in COMPUTE:
        raise ConfigError(f"model.compute_dtype: expected one of {', '.join(COMPUTE)}, got {compute!r}")
    if dtype == "float16":
        raise ConfigError("model.dtype: float16 would train pure fp16, without the loss scaling fp16 needs "
                          "(gradients underflow); use model.dtype float32 with model.compute_dtype float16, or "
                          "bfloat16")
    storage = "float32" if dtype == "auto" else dtype
    if compute == "auto":
        compute = "bfloat16" if on_gpu and gpu_bf16 else "float32"
    if compute == "float16":
        if not on_gpu:
            raise ConfigError("model.compute_dtype: float16 needs a CUDA GPU (the Trainer's loss scaling is CUDA's); "
                              "use bfloat16 or float32 on the CPU")
        if storage == "bfloat16":
            raise ConfigError("model.compute_dtype: float16 autocast over bfloat16 weights mixes two 16-bit formats; "
                              "use model.dtype float32 with float16, or bfloat16 with bfloat16")
    autocast = None if compute == "float32" or compute == storage else compute
    return Precision(storage=storage, autocast=autocast)


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16 flags); elsewhere torch emulates bf16
    and autocast is slower than fp32 (`cpu_bf16_hint` says which applies to a run)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def run_precision(cfg: Any) -> Precision:
    """`resolve_precision` for a run config on this machine."""
    import torch

    on_gpu = torch.cuda.is_available()
    gpu_bf16 = on_gpu and torch.cuda.is_bf16_supported()
    return resolve_precision(cfg.model.dtype, cfg.model.compute_dtype, on_gpu, gpu_bf16)


def run_cpu_bf16_hint(cfg: Any) -> str | None:
    """`cpu_bf16_hint` for a run config on this machine."""
    import torch

    on_gpu = torch.cuda.is_available()
    return cpu_bf16_hint(run_precision(cfg), on_gpu, not on_gpu and cpu_supports_bf16())


def cpu_bf16_hint(precision: Precision, on_gpu: bool, has_bf16_units: bool) -> str | None:
    """One line for the run's log when bf16 compute on this CPU is worth knowing about (pure): the faster setting
    where the CPU has bf16 units and the run computes in fp32, a warning where it has none and bf16 was asked for."""
    if on_gpu or precision.storage != "float32":
        return None
    if precision.autocast is None and has_bf16_units:
        return ("this CPU has bf16 units (AVX512-BF16/AMX-BF16): --set model.compute_dtype=bfloat16 trains 1.2-1.4x "
                "faster per step; not the default, the quickstart learned less under it (docs/results/bf16-quickstart)")
    if precision.autocast == "bfloat16" and not has_bf16_units:
        return ("model.compute_dtype bfloat16 on a CPU without bf16 units: torch emulates bf16, slower than fp32 "
                "here")
    return None


def _name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


def precision_used(trainer: Any) -> dict[str, Any]:
    """What the built trainer actually holds and runs, read from its objects rather than from the config: the
    student's parameter dtype, the optimizer state's, the EMA teacher's (and whether an fp32 shadow keeps it),
    the logits' dtype at the loss, and autocast."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    out: dict[str, Any] = {"parameters": _name(trainable[0].dtype if trainable else next(model.parameters()).dtype)}
    optimizer = getattr(trainer, "optimizer", None)
    states = [s for s in (optimizer.state.values() if optimizer is not None else []) if "exp_avg" in s]
    out["optimizer_state"] = _name(states[0]["exp_avg"].dtype) if states else None
    ema = getattr(trainer, "ema", None)
    if ema is not None:
        out["ema_teacher"] = ema.accumulates_in()
    out["loss_logits"] = "float32" if hasattr(trainer, "_no_active_token_loss") else None  # sdpo_loss.fp32_logits
    mp = getattr(trainer.accelerator, "mixed_precision", "no")
    out["autocast"] = {"bf16": "bfloat16", "fp16": "float16"}.get(mp)
    return out


def autocast(precision: Precision, device: Any):
    """The forward passes' autocast for `precision` on `device` (a no-op without one). Evaluation and generation
    outside TRL's loss run under it too, so a base model and a trained one are evaluated with the same numerics."""
    import contextlib

    import torch

    if precision.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, precision.autocast))
