"""SDPO's EMA teacher, accumulated in fp32 whatever dtype the weights are stored or computed in.

teacher <- (1 - rate) * teacher + rate * student after every `teacher_sync_steps` optimizer steps, TRL's rule and
formula (`SyncRefModelCallback._sync_target_model`). TRL updates the teacher in place in its own dtype; in bf16 the
update rate x (student - teacher) is mostly below half a unit in the last place and rounds away: simulated at lr
1e-6, the bf16 teacher covered 18% of the student's drift after 200 steps, so it behaves like a frozen base teacher.

Here the sum is kept in fp32: where the teacher's weights are fp32 (pmd builds the EMA teacher in fp32; see
sdpo_loss.SDPOTrainer._setup_teacher_model) the update runs on them directly, exactly as TRL's in fp32; where they
are not (DeepSpeed casts an engine's weights to bf16), an fp32 shadow holds the sum and the teacher receives its
rounding. Each rank updates only the part of each parameter it holds (a ZeRO-3 partition, an FSDP2 shard, or the
whole tensor), so no parameter is gathered: TRL's ZeRO-3 sync gathered the whole student and teacher on every rank
each step (~33 GB for an 8B model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from transformers import TrainerCallback

from .phases import phase
from .sharded import local_part


class EMATeacher:
    """The fp32 accumulation of an EMA teacher over pairs of (student, teacher) parameters."""

    def __init__(self, student_params: Callable[[], Iterable[torch.Tensor]], teacher: torch.nn.Module, rate: float):
        self.student_params = student_params  # read each update: the student may be re-wrapped by accelerate
        self.teacher = teacher
        self.rate = rate
        self.shadow: dict[int, torch.Tensor] = {}  # fp32 sums of the teacher parts that are not stored in fp32

    @torch.no_grad()
    def update(self) -> None:
        a = self.rate
        for i, (s, t) in enumerate(zip(self.student_params(), self.teacher.parameters(), strict=True)):
            src, dst = local_part(s), local_part(t)
            if dst.dtype == torch.float32:
                dst.mul_(1.0 - a).add_(src.float(), alpha=a)
                continue
            acc = self.shadow.get(i)
            if acc is None:
                acc = self.shadow[i] = dst.float()
            acc.mul_(1.0 - a).add_(src.float(), alpha=a)
            dst.copy_(acc)

    def accumulates_in(self) -> str:
        """'float32' when every teacher part is fp32 storage, else e.g. 'bfloat16 + float32 shadow'."""
        dtypes = {local_part(t).dtype for t in self.teacher.parameters()}
        if dtypes == {torch.float32}:
            return "float32"
        stored = "/".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        return f"{stored} + float32 shadow"


class EMATeacherCallback(TrainerCallback):
    """Runs `EMATeacher.update` on TRL's schedule (`teacher_sync_steps`), in the step's `ema_sync` phase."""

    def __init__(self, ema: EMATeacher):
        self.ema = ema

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.teacher_sync_steps == 0:
            with phase("ema_sync"):
                self.ema.update()
