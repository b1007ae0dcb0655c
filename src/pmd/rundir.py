"""The run directory's rules: what may hold a run, one writer at a time, crash-safe writes, where a run starts, and
putting the directory back to a checkpoint.

A run directory is the run's whole state: config.yaml, metrics.jsonl, memory.sqlite, checkpoints/, final/,
eval_*.json, summary.json and report.md (and first_prompt.txt, what the student was asked). Every file pmd writes
into it goes through `atomic_write` (temp file, fsync, rename), so a kill or a full disk leaves the old file or the
new one, never half of one; metrics.jsonl is the one append-only log, and a torn last line of it is dropped on
resume.

One writer per run directory: `RunDirLock` holds an exclusive `flock` on the run directory while a process trains
into it, so a second `pmd train` (or a `--resume` while the first still runs, or a `pmd compare` sub-run) stops with
one line before it writes. The kernel drops the lock when its holder dies, kill -9 included, so a killed run never
leaves a stale lock behind. Readers (`pmd memory`, `explain`) take no lock: they only read. `pmd report` writes
report.md and its figures into the run directory, so it takes the lock too (a run being trained writes its own
report when it ends), and `pmd eval --out` / `pmd memory export --out` refuse a directory another process holds.

Starting a run (`prepare_start`): take the lock, decide where training starts (`start_point`: a new run refuses a
directory that holds one; `--resume` continues from the last complete checkpoint and refuses a changed config,
`train.steps` aside), then write the resolved config. A start that fails leaves the disk as it was (`undo_start`), and
so does a start from step 0 that fails later but before its first training step (`StartUndo`, called by run.py).
Resuming puts the directory back to the checkpoint's step (`restore_run_state`, called by the trainer): memory,
metrics and later checkpoints (what a checkpoint holds is checkpoint.py's).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from .atomic import atomic_write, atomic_write_text
from .checkpoint import (CHECKPOINTS_DIR, MANIFEST_FILE, MEMORY_FILE, Manifest, checkpoint_step, list_checkpoints,
                         last_complete_checkpoint, read_manifest)
from .errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from .config import RunConfig


logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
FIRST_PROMPT_FILE = "first_prompt.txt"  # the first training prompt as the student reads it (run.Run.prepare)
FIRST_PROMPT_END = "pmd: (end of the first training prompt)"  # printed after it: a prompt's own last lines stay visible
LOCK_FILE = ".pmd.lock"
# Kernel pseudo-filesystems: a directory there cannot hold a run (mkdir fails or writes go nowhere). /dev/shm, a
# plain tmpfs, is allowed.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
# Logged once by the Trainer when train() ends; a resumed run logs its own.
_END_OF_TRAINING_KEYS = ("train_runtime",)


# ------------------------------------------------------------------------------------------------ crash-safe files


def write_config(path: Path, cfg: RunConfig) -> None:
    """The fully resolved config (every default made explicit) as YAML, atomically: what `config.save_config` writes,
    through `atomic_write_text`."""
    from .config import to_dict

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


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


# ------------------------------------------------------------------------------------------------ starting a run


# What a run writes into its directory; a new run refuses a directory that holds any of it.
RUN_FILES = ("config.yaml", "metrics.jsonl", "memory.sqlite", "checkpoints", "final", "eval_base.json",
             "eval_trained.json", "summary.json")


# The one setting `--resume` may change: a run can be extended (or shortened, not below its checkpoint).
EXTENDABLE = ("train.steps",)

# How a run treats what its directory already holds:
#   "no"    a new run: a directory that holds one is refused (`pmd train`);
#   "yes"   continue from the last complete checkpoint, the config unchanged but for EXTENDABLE (`pmd train --resume`);
#   "auto"  continue from the last complete checkpoint if there is one, else start over; for a caller that has
#           checked the directory's config itself (`pmd compare`, whose runs differ only in bookkeeping keys).
Resume = Literal["no", "yes", "auto"]


@dataclass(frozen=True)
class Start:
    """Where a run starts, as the main process decided it (handed to every rank)."""

    resume_from: str | None  # the checkpoint to continue from; None: step 0
    extension: dict[str, int] | None  # train.steps changed by --resume: {"from_steps", "to_steps", "at_step"}
    evaluate_base: bool  # the base model still needs evaluating (no eval_base.json yet)
    undo: StartUndo | None = None  # a start from step 0: what to take back if it fails before its first step


@dataclass(frozen=True)
class StartUndo:
    """What a start from step 0 added to the disk, so that a start failing before its first training step (a trainer
    TRL refuses to build, a crash in the base evaluation, Ctrl-C while the model loads) leaves the disk as it was:
    otherwise its config.yaml and checkpoints/ make the retry "already hold a run" and --resume has nothing to
    resume. Only what this start added goes: entries the directory held before it (a resumed run's files, a user's
    own) and directories that existed stay."""

    run_dir: Path
    created: tuple[Path, ...]  # run_dir and those of its ancestors this start created, deepest first
    existing: frozenset[str]  # the names run_dir held when this start took its lock: never removed

    def take_back(self, lock: RunDirLock) -> None:
        """Main process, while it holds the lock (so no other pmd process writes here): remove every entry added
        since the start, then release the lock and remove the directories the start created. Under a launcher the
        other ranks write nothing into the run directory before the first step; a rank that fails alone leaves the
        main process waiting at a collective until the launcher kills it, and then nothing is taken back (remove
        the directory, or choose another run_dir)."""
        try:
            names = set(os.listdir(self.run_dir)) if lock.held else set()
        except OSError:  # gone or unreadable: nothing to take back, and the run's own error is the one to report
            names = set()
        if names:
            for name in sorted(names - self.existing - {LOCK_FILE}):
                path = self.run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            if LOCK_FILE not in self.existing:
                (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
            logger.info("%s: the run failed before its first training step; removed what this start wrote",
                        self.run_dir)
        undo_start(lock, list(self.created))


def start_point(cfg: RunConfig, run_dir: Path, resume: Resume) -> tuple[str | None, dict[str, int] | None]:
    """The checkpoint to resume from (None: from the beginning) and, when `train.steps` changed, the extension
    ({"from_steps", "to_steps", "at_step"}); or a CheckpointError / ConfigError if starting would overwrite someone's
    run or silently change what it trains. Reads only."""
    from .config import config_changes

    if resume == "auto":
        ckpt = last_complete_checkpoint(run_dir)
        return (str(ckpt) if ckpt else None), None
    if resume == "no":
        existing = [name for name in RUN_FILES if (run_dir / name).exists()]
        if existing:
            raise CheckpointError(f"{run_dir}: already holds a run ({', '.join(existing)}); pass --resume to "
                                  "continue it, or choose another run_dir")
        return None, None
    ckpt = last_complete_checkpoint(run_dir)
    if ckpt is None and (run_dir / "summary.json").is_file():
        raise CheckpointError(f"{run_dir}: the run finished and kept no checkpoint to resume from "
                              "(set train.save_steps to keep checkpoints)")
    changed = [k for k in config_changes(run_dir / "config.yaml", cfg) if k != "run_dir"]
    refused = [k for k in changed if k not in EXTENDABLE]
    if refused:
        raise ConfigError(f"--resume: {', '.join(refused)} differ from the run's config.yaml; a resumed run trains "
                          f"what it started with (only {', '.join(EXTENDABLE)} may change, to extend it)")
    if ckpt is None:
        logger.warning("--resume: no complete checkpoint in %s; starting from the beginning", run_dir / "checkpoints")
        return None, None
    manifest = read_manifest(ckpt)
    if manifest is not None and not manifest.resumable:
        raise CheckpointError(f"{ckpt}: holds weights only (train.save_optimizer: false), so training cannot "
                              f"continue from it; evaluate it with pmd eval --model {ckpt}")
    extension = None
    if "train.steps" in changed:
        at = checkpoint_step(ckpt) or 0
        if cfg.train.steps <= at:
            raise ConfigError(f"--resume: train.steps {cfg.train.steps} is not beyond the checkpoint's step {at}")
        old = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"]["steps"]
        extension = {"from_steps": old, "to_steps": cfg.train.steps, "at_step": at}
        logger.warning("--resume: train.steps %d -> %d from step %d; the learning-rate schedule is recomputed for %d "
                       "steps (summary.json records the extension; config.yaml keeps the original)", old,
                       cfg.train.steps, at, cfg.train.steps)
    logger.info("--resume: continuing from %s", ckpt)
    return str(ckpt), extension


def prepare_start(cfg: RunConfig, run_dir: Path, resume: Resume, evaluate_models: bool, lock: RunDirLock) -> Start:
    """Main process: take the run directory's lock (one writer per run), then decide where training starts, the
    extension if any, and whether the base model still needs evaluating. Writes the resolved config when training
    starts from step 0; a resumed run's config.yaml (the one it started with) is never overwritten. When it fails,
    it leaves the disk as it was: a directory it created is removed again."""
    created = missing_dirs(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # before any decision about the directory's content: a second writer stops here
        existing = frozenset(os.listdir(run_dir))
        resume_from, extension = start_point(cfg, run_dir, resume)
        lock.mark()
        if resume_from is None:
            write_config(run_dir / "config.yaml", cfg)
    except BaseException as exc:
        undo_start(lock, created)
        if isinstance(exc, OSError):  # disk full, read-only: one line, nothing left behind
            raise CheckpointError(f"{exc.filename or run_dir}: cannot write the run directory "
                                  f"({exc.strerror or exc})") from None
        raise
    undo = StartUndo(run_dir, tuple(created), existing) if resume_from is None else None
    return Start(resume_from, extension, evaluate_models and not (run_dir / "eval_base.json").is_file(), undo)


def missing_dirs(path: Path) -> list[Path]:
    """`path` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def undo_start(lock: RunDirLock, created: list[Path]) -> None:
    """Undo a failed start: release the lock and remove the directories this start created (deepest first), when
    they hold nothing but the lock file it made. A lock file is only removed by the process that held it, never
    from under another writer."""
    held = lock.held
    lock.release()
    for d in created:
        with contextlib.suppress(OSError):
            if held and d == created[0]:
                (d / LOCK_FILE).unlink(missing_ok=True)
            d.rmdir()


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
