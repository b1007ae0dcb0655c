"""Parameters that ZeRO-3 or FSDP may shard over the ranks: the part a rank holds, the whole EMA teacher for a
checkpoint, and the policy ready to generate outside TRL's loop.

Three layouts, one rule each:
- plain (one process, DDP): every rank holds every tensor;
- DeepSpeed ZeRO-3: a parameter's `ds_tensor` is this rank's partition; the whole tensor exists only inside
  `deepspeed.zero.GatheredParameters`;
- FSDP2 (`fully_shard`, pmd's choice, configs/accelerate/fsdp.yaml): parameters are DTensors sharded along dim 0;
  the whole state dict comes from torch.distributed.checkpoint's `get_model_state_dict(full_state_dict=True)`.
  FSDP1's flat parameters are still handled where TRL handles them (`summon_full_params`), but not chosen: its
  flat buffers make a per-parameter rule (the fp32 EMA on each shard, ema.py) impossible, and torch deprecates it.
Every function here that gathers must be called on every rank, in the same order.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch


def local_part(param: torch.Tensor) -> torch.Tensor:
    """The part of `param` this rank holds and may update in place: its ZeRO-3 partition, its FSDP2 shard (a
    DTensor's local tensor), or the tensor itself."""
    ds_tensor = getattr(param, "ds_tensor", None)
    if ds_tensor is not None:
        return ds_tensor.data
    to_local = getattr(param.data, "to_local", None)
    if to_local is not None:
        return to_local()
    return param.data


def fsdp_version(trainer: Any) -> int:
    """0 without FSDP, else the FSDP plugin's version (1 or 2)."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return 0
    plugin = getattr(getattr(trainer.accelerator, "state", None), "fsdp_plugin", None)
    return int(getattr(plugin, "fsdp_version", 1) or 1)


def _zero3(trainer: Any) -> bool:
    plugin = getattr(getattr(trainer.accelerator, "state", None), "deepspeed_plugin", None)
    return plugin is not None and getattr(plugin, "zero_stage", 0) == 3


def ema_teacher(trainer: Any) -> torch.nn.Module | None:
    """SDPO's separate EMA teacher, or None where there is nothing extra to save: GRPO, a live teacher (the policy),
    a frozen base teacher (rebuilt identically from the model path), or a LoRA-adapter teacher."""
    if getattr(trainer.args, "teacher_model_kind", None) != "ema":
        return None
    teacher = getattr(trainer, "teacher_model", None)
    if teacher is None or teacher is trainer.model:
        return None
    return trainer.accelerator.unwrap_model(teacher)


def save_teacher_weights(trainer: Any, path: Path, is_main: bool) -> None:
    """The EMA teacher's whole weights into `path` (safetensors), written by the main process. Every rank calls it:
    sharded weights are gathered first."""
    from .checkpoint import save_teacher, save_teacher_state

    teacher = ema_teacher(trainer)
    if fsdp_version(trainer) == 2:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(teacher, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if is_main:
            save_teacher_state(state, path)
        return
    with _whole(trainer, teacher, writer=None):
        if is_main:
            save_teacher(teacher, path)


def load_teacher_weights(trainer: Any, path: Path, is_main: bool) -> None:
    """Load `path` into the EMA teacher on every rank (the main process reads it; sharded weights are scattered)."""
    from .checkpoint import load_teacher, load_teacher_state

    teacher = ema_teacher(trainer)
    if fsdp_version(trainer) == 2:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        state = load_teacher_state(path) if is_main else {}
        set_model_state_dict(teacher, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                                      strict=False))
        return
    with _whole(trainer, teacher, writer=0):
        if is_main or not _zero3(trainer):
            load_teacher(teacher, path)


@contextlib.contextmanager
def _whole(trainer: Any, teacher: torch.nn.Module, writer: int | None):
    """ZeRO-3: the teacher's parameters gathered (and `writer`'s changes scattered back on exit); FSDP1: its full
    parameters summoned; plain: as it is."""
    if _zero3(trainer):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(teacher.parameters()), modifier_rank=writer):
            yield
        return
    if fsdp_version(trainer) == 1:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(trainer.teacher_model, writeback=writer is not None):
            yield
        return
    yield


@contextlib.contextmanager
def policy_for_generation(trainer: Any):
    """The policy as it is now, ready to `generate` outside TRL's loop, entered the way TRL's own generation enters
    it: DDP unwrapped, ZeRO-3 parameters gathered, an FSDP1 root summoned (an FSDP2 model unshards each layer in
    its forward). Under ZeRO-3 / FSDP every rank must enter together and make the same generate calls
    (`dist.generate_on_ranks` arranges that)."""
    from trl.models import unwrap_model_for_generation

    fsdp = contextlib.nullcontext()
    if fsdp_version(trainer) == 1:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        fsdp = FSDP.summon_full_params(trainer.model_wrapped, recurse=False)
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                     gather_deepspeed3_params=trainer.args.ds3_gather_for_generation) as model, fsdp:
        yield model
