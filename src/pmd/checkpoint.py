"""What a pmd checkpoint holds, how to find the last complete one, and how to put a run directory back to it.

A checkpoint is transformers/TRL's `checkpoints/checkpoint-N/` (weights, optimizer, scheduler, RNG states,
trainer_state.json) plus what only pmd knows about, written by `CheckpointCallback.on_save` right after the Trainer:

- `memory.sqlite`: the memory store as it was after step N (SQLite online backup, atomic);
- `teacher_model.safetensors`: SDPO's EMA teacher (`teacher_model_kind: ema`). TRL does not save it, and without
  it a resumed run would rebuild the teacher from the base model and diverge;
- `pmd_checkpoint.json`: the manifest (step, memory-loop counters, every file with its size), fsynced and renamed
  into place last. Its presence is what makes a checkpoint complete: a kill while saving leaves a directory
  without it, which resume ignores and removes.

Resume puts the run directory back to step N (`restore_run_state`): the live memory store is replaced by the
checkpoint's copy, metrics.jsonl keeps only rows up to step N, and checkpoints from later, unfinished saves go.
Everything after step N is then recomputed, so a killed-and-resumed run ends where an uninterrupted one does.
A checkpoint at the run's last step (a kill during the final save, evaluation or report, or a finished run resumed
again) leaves no step to train: resume then redoes only that tail (trainer.py stops transformers from training a
step past `train.steps`).

One writer per run directory: `RunDirLock` holds an exclusive `flock` on the run directory while a process trains
into it, so a second `pmd train` (or a `--resume` while the first still runs) stops with one line before it writes.
The kernel drops the lock when its holder dies, kill -9 included, so a killed run never leaves a stale lock behind.
Readers (`pmd memory`, `explain`) take no lock: they only read. `pmd report` writes report.md and its figures
into the run directory, so it takes the lock too (a run being trained writes its own report when it ends), and
`pmd eval --out` / `pmd memory export --out` refuse a directory another process holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any, TypeVar

from .errors import CheckpointError, ConfigError

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

MEMORY_FILE = "memory.sqlite"
METRICS_FILE = "metrics.jsonl"
TEACHER_FILE = "teacher_model.safetensors"
MANIFEST_FILE = "pmd_checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_FORMAT = 1
LOCK_FILE = ".pmd.lock"
# Kernel pseudo-filesystems: a directory there cannot hold a run (mkdir fails or writes go nowhere). /dev/shm, a
# plain tmpfs, is allowed.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
_NAME = re.compile(r"^checkpoint-(\d+)$")
# Logged once by the Trainer when train() ends; a resumed run logs its own.
_END_OF_TRAINING_KEYS = ("train_runtime",)


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


# ------------------------------------------------------------------------------------------------ crash-safe files


def fsync_path(path: Path) -> None:
    """Flush a file (or directory entry list) to disk; directories that cannot be fsynced are skipped."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[str]], _T]) -> _T:
    """Call `write` on a temporary text file beside `path`, then rename it over `path`: a reader (or a process
    killed mid-write, or a full disk) sees the old file or the new one, never half of one, and no temporary is left.
    Returns what `write` returned."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_path(path.parent)
    return result


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a whole text."""
    atomic_write(path, lambda fh: fh.write(text))


# ------------------------------------------------------------------------------------------------ the run directory


NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits on one name and a whole path, in bytes
RUN_DIR_PATH_HEADROOM = 256  # room for the deepest file pmd writes under a run dir (a checkpoint's shard index)


def check_run_dir(run_dir: str | Path) -> None:
    """Raise ConfigError unless `run_dir` can hold a run: not empty (an empty path trains into the current
    directory), not under a kernel pseudo-filesystem, not an existing file, and its nearest existing ancestor a
    directory this process may write. Reads only, so preflight can call it before anything is written."""
    text = str(run_dir)
    if not text.strip():
        raise ConfigError("run_dir: empty; expected a directory path for the run (e.g. runs/my-run)")
    long_name = next((part for part in Path(text).parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long_name is not None:  # the filesystem would refuse it with an OSError at the first mkdir
        raise ConfigError(f"run_dir: the name {long_name[:40]}... is {len(os.fsencode(long_name))} bytes; "
                          f"expected at most {NAME_MAX} per directory name")
    if len(os.fsencode(os.path.abspath(text))) > PATH_MAX - RUN_DIR_PATH_HEADROOM:
        raise ConfigError(f"run_dir: the path is {len(os.fsencode(os.path.abspath(text)))} bytes; expected at most "
                          f"{PATH_MAX - RUN_DIR_PATH_HEADROOM}, so that the checkpoint files inside it fit {PATH_MAX}")
    resolved = Path(text).resolve()
    for root in map(Path, PSEUDO_FILESYSTEMS):
        if _under(resolved, root) and not _under(resolved, Path("/dev/shm")):
            raise ConfigError(f"run_dir: {text} is under {root}, a kernel pseudo-filesystem; expected a directory "
                              "on disk")
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"run_dir: {text} exists and is not a directory")
    existing = resolved
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run_dir: {text}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the run directory" if existing == resolved else f"{existing}, where it would be created,"
        raise ConfigError(f"run_dir: {text}: {what} is not writable (read-only filesystem or permissions)")


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class RunDirLock:
    """An exclusive advisory lock on a run directory, held by its one writer: `flock` on the directory itself.

    `acquire` never waits: a run directory held by another process is an error (CheckpointError) raised before
    anything is written, and taking the lock writes nothing either (no lock file is created, so a refused command
    leaves the directory exactly as it was). The lock belongs to the open directory, so the kernel releases it when
    the holder exits or is killed: a killed run never leaves a stale lock. A second lock on the same directory in the
    same process is refused too: it would be a second writer. `mark` records the holder's pid in RUN_DIR/.pmd.lock
    once it has decided to write, so that the message of a process refused later can name it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, then: str = "pmd train --resume") -> RunDirLock:
        """Take the lock or raise CheckpointError; `then` is what the refused user may do once the holder ends."""
        if self._fd is not None:
            return self
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.run_dir, flags)
        except OSError as exc:
            raise CheckpointError(f"{self.run_dir}: cannot lock the run directory ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(f"{self.run_dir}: another pmd process{_lock_holder(self.path)} is writing this run "
                                  f"directory (one writer per run); wait for it to end or stop it, then {then}"
                                  ) from None
        self._fd = fd
        return self

    def mark(self) -> None:
        """Record this process as the writer (the lock is held)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.write_text(f"{os.getpid()}\n", encoding="ascii")

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor of the open directory releases the flock

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_by_another(directory: str | Path) -> bool:
    """Whether a process holds `directory`'s run lock now (a live `pmd train` is writing there). Takes the lock for
    an instant and drops it; writes nothing. A directory that cannot be opened counts as free: the write that
    follows says why it fails."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the lock just taken
    return False


def _lock_holder(path: Path) -> str:
    """' (pid N)' from the holder's mark, or '' when there is none yet."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")[:32].strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


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


# ------------------------------------------------------------------------------------------------ restoring


def _remove_tree(path: Path) -> None:
    """Rename first (atomic, and the new name is no checkpoint), then delete: a kill mid-way leaves no half
    checkpoint that could look complete."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_leftovers(run_dir: Path) -> None:
    """Temp files and half-deleted directories that a kill during an atomic write or a removal left behind."""
    for p in [*run_dir.glob(".*.tmp"), *run_dir.glob(".*.trash"), *(run_dir / CHECKPOINTS_DIR).glob(".trash-*")]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _remove_db(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the metrics rows logged at or before `step` (atomic rewrite); a torn last line from a kill is dropped.
    Returns how many rows were removed."""
    if not path.is_file():
        return 0
    kept: list[str] = []
    removed = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            removed += 1
            continue
        if (isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step
                and not any(k in row for k in _END_OF_TRAINING_KEYS)):
            kept.append(line)
        else:
            removed += 1
    if removed:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return removed


def restore_run_state(run_dir: Path, ckpt: Path | None) -> Manifest | None:
    """Put run_dir back to the state of `ckpt` (None: the start of training) before the trainer is built.

    Memory: the checkpoint's copy replaces run_dir/memory.sqlite (None: the live store is removed, so it is
    re-seeded from `memory.load_from` or starts empty). Metrics: rows after the step go. Checkpoints: incomplete
    ones and any newer than `ckpt` go, so the run has a single history. Each action is atomic and the whole is
    idempotent, so a kill during a resume is fixed by resuming again. Returns the checkpoint's manifest."""
    manifest = None
    step = 0
    if ckpt is not None:
        manifest = read_manifest(ckpt)
        if manifest is None:
            raise CheckpointError(f"{ckpt}: incomplete checkpoint (no valid {MANIFEST_FILE}); "
                                  "resume from an earlier one")
        step = manifest.step
    others = [c for c in list_checkpoints(run_dir) if ckpt is None or c.resolve() != ckpt.resolve()]
    complete = {c: read_manifest(c) is not None for c in others}
    if ckpt is None and any(complete.values()):  # checked before anything is removed
        name = next(c.name for c in others if complete[c])
        raise CheckpointError(f"{run_dir}: holds the complete checkpoint {name}; resume from it "
                              "(pmd train --resume) or use another run_dir")
    for other in others:
        if not complete[other] or (checkpoint_step(other) or 0) > step:
            logger.warning("removing %s (%s)", other, "after the resume point" if complete[other] else "incomplete")
            _remove_tree(other)
    _sweep_leftovers(run_dir)
    live = run_dir / MEMORY_FILE
    if manifest is not None and manifest.has_memory:
        from .memory.store import MemoryStore

        MemoryStore.restore(ckpt / MEMORY_FILE, live)
    elif live.exists():
        logger.warning("removing %s: it belongs to training that no checkpoint captured", live)
        _remove_db(live)
    removed = truncate_metrics(run_dir / METRICS_FILE, step)
    if removed:
        logger.info("metrics.jsonl: dropped %d rows after step %d", removed, step)
    return manifest
