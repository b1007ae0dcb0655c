"""FSDP2 on two CPU ranks (gloo), for tests/test_sharded.py (not a test module itself).

usage: torchrun --nproc_per_node 2 tests/fsdp2_harness.py OUT_DIR

Shards a student and an EMA teacher with `fully_shard` as TRL's prepare_fsdp does for FSDP2, then checks, on
every rank, what pmd does with sharded parameters: the fp32 EMA update on each rank's shards equals the update of
the whole tensors, and the teacher's checkpoint (gathered, saved by rank 0, scattered back on load) round-trips.
Writes OUT_DIR/rank-R.json with the results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from pmd.ema import EMATeacher
from pmd.sharded import load_teacher_weights, save_teacher_weights


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 4))


def main() -> int:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,))
    student, teacher = model(0), model(1)
    whole_student = [p.detach().clone() for p in student.parameters()]
    whole_teacher = [p.detach().clone() for p in teacher.parameters()]
    for m in (student, teacher):
        for layer in m:
            fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
    result = {"sharded": all(type(p).__name__ == "DTensor" for p in teacher.parameters())}

    # the EMA on shards = the EMA of whole tensors
    EMATeacher(lambda: student.parameters(), teacher, 0.25).update()
    expected = [0.75 * t + 0.25 * s for s, t in zip(whole_student, whole_teacher)]
    result["ema_matches"] = all(torch.allclose(p.full_tensor(), e) for p, e in zip(teacher.parameters(), expected))

    trainer = SimpleNamespace(
        args=SimpleNamespace(teacher_model_kind="ema"), model=student, teacher_model=teacher, is_fsdp_enabled=True,
        accelerator=SimpleNamespace(unwrap_model=lambda m: m, state=SimpleNamespace(
            deepspeed_plugin=None, fsdp_plugin=SimpleNamespace(fsdp_version=2))))
    path = out / "teacher.safetensors"
    save_teacher_weights(trainer, path, is_main=rank == 0)
    dist.barrier()
    saved = [p.full_tensor().clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)  # changed after the save ...
    load_teacher_weights(trainer, path, is_main=rank == 0)
    result["round_trip"] = all(torch.equal(p.full_tensor(), s) for p, s in zip(teacher.parameters(), saved))
    result["still_sharded"] = all(type(p).__name__ == "DTensor" for p in teacher.parameters())
    (out / f"rank-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
