"""`pmd train` with a probe: pmd's own CLI, unchanged, plus one TrainerCallback on the trainer it builds.

Per optimizer step it records the peak GPU memory (allocated, reserved), the tokens the step trained (student:
prompt + completion, real tokens; teacher: its prompt + the same completion) and generated. Once per run: whether
autocast was on inside the student's and the teacher's forward, the dtype of the logits TRL's distillation loss
received, and how much of a few student and EMA-teacher tensors changed between train begin and end (do fp32
master weights and the fp32 EMA move at lr 1e-6?). Step phases are pmd's own `time/<phase>` logs (metrics.jsonl);
the precision pmd says it used is summary.json's `precision`. Everything is appended to $CHECK_EVENTS as JSON lines.

  CHECK_EVENTS=events.jsonl CHECK_LABEL=name python benchmarks/gpu_check/probe.py train CONFIG --run-dir DIR ...
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from transformers import TrainerCallback

EVENTS = os.environ.get("CHECK_EVENTS", "events.jsonl")
LABEL = os.environ.get("CHECK_LABEL", "run")


def emit(event: str, **data) -> None:
    with open(EVENTS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"label": LABEL, "event": event, **data}, default=str) + "\n")


def snapshot(model: torch.nn.Module, k: int = 4) -> dict[str, torch.Tensor]:
    """A few whole tensors (gathered where sharded), kept in fp32 on the CPU."""
    out = {}
    params = [(n, p) for n, p in model.named_parameters() if p.ndim == 2][:k]
    for name, p in params:
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = full.detach().float().cpu().clone()
    return out


def moved(before: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    after = snapshot(model, len(before))
    changed = [(after[n] != before[n]).float().mean().item() for n in before if n in after]
    return sum(changed) / max(1, len(changed))


class Probe(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer
        self.tokens = {"student": 0, "teacher": 0}
        self.autocast: dict[str, bool] = {}
        self.logits: set[str] = set()
        self.before: dict = {}
        self._wrap()

    def _wrap(self) -> None:
        tr = self.trainer
        inner = tr.compute_loss

        def compute_loss(model, inputs, *args, **kwargs):
            self.tokens["student"] += int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
            if "teacher_attention_mask" in inputs:
                self.tokens["teacher"] += int(inputs["teacher_attention_mask"].sum())
            return inner(model, inputs, *args, **kwargs)

        tr.compute_loss = compute_loss
        try:
            import trl.experimental.sdpo.sdpo_trainer as sdpo

            loss = sdpo.compute_topk_self_distillation_loss

            def recording(student_logits, teacher_logits, **kwargs):
                self.logits.add(f"{student_logits.dtype}/{teacher_logits.dtype}".replace("torch.", ""))
                return loss(student_logits, teacher_logits, **kwargs)

            sdpo.compute_topk_self_distillation_loss = recording
        except ImportError:
            pass

    def _hook(self, model, who: str) -> None:
        layer = next((m for n, m in model.named_modules() if n.endswith("mlp")), None)
        if layer is not None:
            device = next(model.parameters()).device.type
            layer.register_forward_hook(lambda *_: self.autocast.setdefault(who, torch.is_autocast_enabled(device)))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._hook(self.trainer.model, "student")
        teacher = getattr(self.trainer, "teacher_model", None)
        if teacher is not None and teacher is not self.trainer.model:
            self._hook(teacher, "teacher")
            self.before["teacher"] = snapshot(self.trainer.accelerator.unwrap_model(teacher))
        self.before["student"] = snapshot(self.trainer.accelerator.unwrap_model(self.trainer.model))

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.tokens = {"student": 0, "teacher": 0}
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        row = {"step": state.global_step, "tokens": dict(self.tokens),
               "seconds": round(time.perf_counter() - self.t0, 3)}
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        emit("step", **row)

    def on_train_end(self, args, state, control, **kwargs):
        tr = self.trainer
        out = {"autocast_in_forward": self.autocast, "loss_logits": sorted(self.logits),
               "student_changed": moved(self.before["student"], tr.accelerator.unwrap_model(tr.model))}
        if "teacher" in self.before:
            out["teacher_changed"] = moved(self.before["teacher"], tr.accelerator.unwrap_model(tr.teacher_model))
        emit("train_end", **out)


def main() -> int:
    import pmd.cli
    import pmd.trainer

    build = pmd.trainer.build_trainer

    def probed(*args, **kwargs):
        trainer, loop = build(*args, **kwargs)
        trainer.add_callback(Probe(trainer))
        return trainer, loop

    pmd.trainer.build_trainer = probed
    t0 = time.time()
    code = pmd.cli.main(sys.argv[1:])
    emit("exit", code=code, seconds=round(time.time() - t0, 1))
    return code


if __name__ == "__main__":
    sys.exit(main())
