"""Run `pmd` under torchrun with probes, for tests/test_multiprocess.py (not a test module itself).

usage: torchrun --nproc_per_node N tests/multiproc_harness.py LOG_DIR STOP_AFTER_SAVE -- <pmd arguments>

Each rank appends JSON lines to LOG_DIR/rank-R.jsonl:
- {"kind": "retrieve", "step", "uids", "texts"}: what MemoryLoop.retrieve returned on this rank;
- {"kind": "teacher", "step", "memory", "text"}: every teacher prompt this rank rendered with memory;
- {"kind": "report"}: this rank wrote the report;
- {"kind": "exit", "code", "ddp_alive"}: pmd's exit code, and how many DDP modules (each holding the process
  group) were still in memory, collected or not, after pmd returned.
STOP_AFTER_SAVE > 0 ends every rank with exit code 3 right after checkpoint STOP_AFTER_SAVE is complete: the
stand-in for a kill between steps.

PMD_HARNESS_OUT_OF_STEP=R puts rank R out of step with the others, as TRL 1.16 did before sdpo_loss mended it:
rank R's teachers are all inactive, and its empty distillation loss skips the gather the other ranks make.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    log_dir, stop_after, sep, *pmd_args = sys.argv[1:]
    assert sep == "--"
    stop_after = int(stop_after)
    rank = int(os.environ.get("RANK", "0"))
    log = Path(log_dir) / f"rank-{rank}.jsonl"
    state = {"step": -1}

    def emit(**row) -> None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    import pmd.report
    import pmd.teacher
    import pmd.trainer
    from pmd.memory.loop import MemoryLoop

    retrieve = MemoryLoop.retrieve

    def probed_retrieve(self, uids, step):
        out = retrieve(self, uids, step)
        state["step"] = step
        emit(kind="retrieve", step=step, uids=list(uids), texts=[m.text for m in out])
        return out

    teacher_text = pmd.teacher.teacher_text

    def probed_teacher_text(question, memory, solution, feedback, *template):
        text = teacher_text(question, memory, solution, feedback, *template)
        emit(kind="teacher", step=state["step"], memory=memory, text=text)
        return text

    write_report = pmd.report.write_report

    def probed_write_report(*args, **kwargs):
        emit(kind="report")
        return write_report(*args, **kwargs)

    on_save = pmd.trainer.StepEvents.on_save

    def probed_on_save(self, args, state_, control, **kwargs):
        on_save(self, args, state_, control, **kwargs)
        if stop_after and state_.global_step == stop_after:
            import torch.distributed as dist

            dist.barrier()  # the main process has finished the checkpoint
            os._exit(3)

    out_of_step = os.environ.get("PMD_HARNESS_OUT_OF_STEP")
    if out_of_step is not None and rank == int(out_of_step):
        import pmd.sdpo_loss

        import pmd.step

        build = pmd.step.PMDStep.teacher_context

        def inactive_build(self, *args, **kwargs):
            out, metrics = build(self, *args, **kwargs)
            out["self_distillation_mask"] = out["self_distillation_mask"] * 0
            return out, metrics

        def ungathered_zero(self, model, logits):  # TRL's early return: no gather
            return logits.student_logits.sum() * 0.0

        pmd.step.PMDStep.teacher_context = inactive_build
        pmd.sdpo_loss.SDPOTrainer._no_active_token_loss = ungathered_zero

    MemoryLoop.retrieve = probed_retrieve
    pmd.teacher.teacher_text = probed_teacher_text
    pmd.report.write_report = probed_write_report
    pmd.trainer.StepEvents.on_save = probed_on_save

    from pmd.cli import main as pmd_main

    code = pmd_main(pmd_args)
    import gc

    from torch.nn.parallel import DistributedDataParallel

    # what could still hold the process group (and its gloo threads) into interpreter teardown
    emit(kind="exit", code=code, ddp_alive=sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))
    return code


if __name__ == "__main__":
    sys.exit(main())
