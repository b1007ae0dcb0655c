"""What a pmd checkpoint holds, and how to find the last complete one.

A checkpoint is transformers/TRL's `checkpoints/checkpoint-N/` (weights, optimizer, scheduler, RNG states,
trainer_state.json) plus what only pmd knows about, written by the step's `save` (step.py, on TRL's `on_save`) right after the Trainer:

- `memory.sqlite`: the memory store as it was after step N (SQLite online backup, atomic);
- `teacher_model.safetensors`: SDPO's EMA teacher (`teacher_model_kind: ema`). TRL does not save it, and without
  it a resumed run would rebuild the teacher from the base model and diverge;
- `pmd_checkpoint.json`: the manifest (step, memory-loop counters, every file with its size), fsynced and renamed
  into place last. Its presence is what makes a checkpoint complete: a kill while saving leaves a directory
  without it, which resume ignores and removes.

Resume puts the run directory back to step N (`rundir.restore_run_state`, a run-directory rule; re-exported here
for the trainer): the live memory store is replaced by the checkpoint's copy, metrics.jsonl keeps only rows up to
step N, and checkpoints from later, unfinished saves go. Everything after step N is then recomputed, so a
killed-and-resumed run ends where an uninterrupted one does. A checkpoint at the run's last step (a kill during the
final save, evaluation or report, or a finished run resumed again) leaves no step to train: resume then redoes only
that tail (trainer.py stops transformers from training a step past `train.steps`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .atomic import atomic_write_text, fsync_path

logger = logging.getLogger(__name__)

TEACHER_FILE = "teacher_model.safetensors"
MEMORY_FILE = "memory.sqlite"
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_FILE = "pmd_checkpoint.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Manifest:
    """The last file of a complete checkpoint: what pmd added to it and the size of every file it holds."""

    step: int
    has_memory: bool
    has_teacher: bool
    loop_stats: dict[str, Any] | None = None
    files: dict[str, int] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    resumable: bool = True  # False: saved without optimizer state (train.save_optimizer: false)


# ------------------------------------------------------------------------------------------------ finding


def checkpoint_step(path: Path) -> int | None:
    """N for a directory named checkpoint-N, else None."""
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def read_manifest(ckpt: Path) -> Manifest | None:
    """The checkpoint's manifest if it is complete (manifest present, parseable, every listed file intact)."""
    try:
        data = json.loads((ckpt / MANIFEST_FILE).read_text(encoding="utf-8"))
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None
    if manifest.format != MANIFEST_FORMAT or manifest.step != checkpoint_step(ckpt):
        return None
    for name, size in manifest.files.items():
        f = ckpt / name
        if not f.is_file() or f.stat().st_size != size:
            return None
    return manifest


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint-N directory under run_dir/checkpoints, complete or not, oldest first."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


TRAINER_STATE_FILE = "trainer_state.json"


def trainer_state_problem(ckpt: Path, step: int) -> str | None:
    """What is wrong with a complete checkpoint's trainer_state.json, or None. The manifest checks sizes only, so a
    file damaged in place (same size) passes it; transformers would then raise mid-resume, after the run directory
    was already put back to the checkpoint. Read as transformers reads it (`TrainerState.load_from_json`)."""
    path = ckpt / TRAINER_STATE_FILE
    if not path.is_file():
        return None  # a weights-only checkpoint (train.save_optimizer: false) has none; resume refuses it anyway
    from transformers import TrainerState

    try:
        state = TrainerState.load_from_json(str(path))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        return f"unreadable ({exc.__class__.__name__}: {' '.join(str(exc).split())[:120]})"
    if state.global_step != step:
        return f"records step {state.global_step!r}, but this is the checkpoint of step {step}"
    return None


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose manifest says it was fully written; partial ones (killed mid-save) are skipped.
    A complete one whose trainer state is damaged is an error (CheckpointError), raised before anything is written:
    skipping it would resume from an older step, and resume removes the checkpoints after its start point."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        manifest = read_manifest(ckpt)
        if manifest is not None:
            problem = trainer_state_problem(ckpt, manifest.step)
            if problem:
                raise CheckpointError(f"{ckpt / TRAINER_STATE_FILE}: {problem}; the checkpoint is damaged: restore "
                                      f"that file, or remove {ckpt} to resume from the checkpoint before it")
            return ckpt
        logger.warning("checkpoint %s is incomplete (no valid %s); skipping it", ckpt, MANIFEST_FILE)
    return None


# ------------------------------------------------------------------------------------------------ saving


def write_manifest(ckpt: Path, step: int, has_memory: bool, has_teacher: bool,
                   loop_stats: dict[str, Any] | None, resumable: bool = True) -> Manifest:
    """Fsync everything already in `ckpt`, then write the manifest atomically: the checkpoint is now complete."""
    files: dict[str, int] = {}
    for f in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        rel = f.relative_to(ckpt).as_posix()
        if rel == MANIFEST_FILE or f.name.endswith(".tmp"):
            continue
        fsync_path(f)
        files[rel] = f.stat().st_size
    for d in {f.parent for f in ckpt.rglob("*") if f.is_file()} | {ckpt}:
        fsync_path(d)
    manifest = Manifest(step=step, has_memory=has_memory, has_teacher=has_teacher, loop_stats=loop_stats, files=files,
                        resumable=resumable)
    atomic_write_text(ckpt / MANIFEST_FILE, json.dumps(asdict(manifest), indent=1, sort_keys=True) + "\n")
    return manifest


def save_teacher(teacher, path: Path) -> None:
    """Teacher weights as safetensors (tied weights handled), written to a temp name and renamed."""
    from safetensors.torch import save_model

    tmp = path.with_name(path.name + ".tmp")
    save_model(teacher, str(tmp))
    os.replace(tmp, path)


def save_teacher_state(state: dict, path: Path) -> None:
    """A whole state dict (FSDP2's gathered teacher) as safetensors, tied tensors once, temp name then rename."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    unique = {}
    for name, tensor in state.items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            unique[name] = tensor.contiguous()
    tmp = path.with_name(path.name + ".tmp")
    save_file(unique, str(tmp))
    os.replace(tmp, path)


def load_teacher_state(path: Path) -> dict:
    """The tensors `save_teacher` or `save_teacher_state` wrote."""
    from safetensors.torch import load_file

    return load_file(str(path))


def load_teacher(teacher, path: Path) -> None:
    """Load saved teacher weights in place; every parameter must match (same model as the checkpoint's)."""
    from safetensors.torch import load_model

    missing, unexpected = load_model(teacher, str(path), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: teacher weights do not fit this model "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
