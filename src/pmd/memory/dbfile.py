"""A pmd memory store as a *file*: what makes a SQLite file ours, how it is checked, and how it is copied safely.

This is kept apart from `store` (the memory's content: tables, rows, queries) because three paths must treat the
file the same way, and all go through here: the live store (`MemoryStore` validates an existing file before it
writes), its checkpoint copies (`MemoryStore.backup_to`) and resume (`MemoryStore.restore`). The guarantees:

- Validated before any write: a file that is not ours (not SQLite, foreign `application_id`, another schema
  version, missing tables, a schema object pmd does not create such as a trigger, a value pmd would not have
  written, corrupt; see `integrity`) is checked through a read-only connection and rejected with
  `MemoryStoreError`, untouched; no -wal/-shm file is created next to it.
- Read-only opens write nothing (`connect_readonly`): `pmd memory`, `report`, `explain` and `eval --memory` leave
  the file byte-for-byte as it was and create no -wal/-shm beside it.
- Crash-safe copies: a copy is written to `dst.tmp` with SQLite's online backup, made a single rollback-journal
  file, fsynced and renamed over `dst` (then the directory is fsynced), so a checkpoint never holds half a copy
  and a stale WAL next to `dst` is never replayed onto it.

A file is ours when it carries `APPLICATION_ID` (defined here) and the `SCHEMA_VERSION` and `TABLES` of
`records`, where the schema is. This module does not import `store` or `connection`; `connection` imports it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from pmd.errors import MemoryStoreError
from pmd.memory.integrity import content_problem, schema_problem
from pmd.memory.records import SCHEMA_VERSION, TABLES

APPLICATION_ID = 0x504D4430  # "PMD0": marks a SQLite file as a pmd memory store (PRAGMA application_id).

_SQLITE_MAGIC = b"SQLite format 3\x00"


def expected() -> str:
    """The tail of every rejection message: what a pmd memory store file is."""
    return f"expected a pmd memory store (SQLite, application_id {APPLICATION_ID:#x}, schema version {SCHEMA_VERSION})"


def validate(conn: sqlite3.Connection, path: Path, verify: bool) -> None:
    """Raise MemoryStoreError unless `conn` is a healthy pmd store of this schema version. Reads only."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise MemoryStoreError(f"{path}: SQLite database with application_id {app_id:#x} is not ours; {expected()}")
    if version > SCHEMA_VERSION:
        raise MemoryStoreError(
            f"{path}: memory schema version {version} is newer than this pmd supports ({SCHEMA_VERSION}); "
            "upgrade pmd to open it"
        )
    if version != SCHEMA_VERSION:
        raise MemoryStoreError(f"{path}: memory schema version {version} is not supported; {expected()}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = sorted(TABLES - tables)
    if missing:
        raise MemoryStoreError(f"{path}: missing tables {', '.join(missing)}; {expected()}")
    foreign = schema_problem(conn)  # a trigger copied by `memory.load_from` would run inside this run's writes
    if foreign:
        raise MemoryStoreError(f"{path}: {foreign}; pmd reads and copies only the schema it creates")
    if verify:
        problems = [" ".join(str(r[0]).split()) for r in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            shown = "; ".join(problems).replace("*** in database main *** ", "")
            shown = shown if len(shown) <= 160 else shown[:160] + "..."
            raise MemoryStoreError(f"{path}: database is corrupt ({shown}); {expected()}")
        bad = content_problem(conn)
        if bad:
            raise MemoryStoreError(f"{path}: {bad}; the store was changed outside pmd (use a checkpoint's copy, "
                                   "checkpoints/checkpoint-N/memory.sqlite, or another store)")


def check_existing(path: Path, verify: bool = True) -> None:
    """Validate an existing, non-empty file through a read-only connection, so a rejected file stays untouched."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise MemoryStoreError(f"{path}: cannot read ({e}); {expected()}") from e
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise MemoryStoreError(f"{path}: not a SQLite database; {expected()}")
    try:
        conn = connect_readonly(path)
        try:
            validate(conn, path, verify)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise MemoryStoreError(f"{path}: corrupt or unreadable SQLite database ({e}); {expected()}") from e


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that reads `path` and can write nothing: not the file (its header included: a read-write open
    of a checkpoint copy would switch bytes 18-19 to WAL), nor a -wal/-shm file beside it.

    `mode=ro` alone is not enough: on a WAL-mode file with no -wal beside it SQLite creates -wal and -shm to read
    it. So when no -wal/-journal is beside the file (a checkpoint copy, a closed store) the file alone is the whole
    database and it is opened `immutable=1`, which creates nothing. With a -wal beside it (a store a run is writing
    now) a plain read-only open reads the WAL too, through the existing -shm, so a run being trained can be
    inspected; in a directory this process cannot write that may fail, and then the file is read immutable (the
    state of its last WAL checkpoint). An immutable file that changes while it is read can give wrong results:
    inspection of a live run goes through the WAL path instead.

    A -wal with no -shm beside it (files copied without it, or a -shm removed) has no live writer, but SQLite would
    create the -shm to read the WAL, and an immutable open would silently skip the WAL's committed rows: the two
    files are read from a private copy instead (`_connect_copy`)."""
    wal, shm, _ = sidecars(path)
    if wal.exists() and not shm.exists():
        return _connect_copy(path, wal)
    uri = path.resolve().as_uri()
    quiet = not any(p.exists() for p in sidecars(path) if not p.name.endswith("-shm"))
    if quiet:
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    if os.access(path.parent, os.W_OK):
        return conn
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


class _CopyConnection(sqlite3.Connection):
    """A connection to a private copy of a store; closing it removes the copy."""

    copy_dir: str | None = None

    def close(self) -> None:
        super().close()
        if self.copy_dir is not None:
            shutil.rmtree(self.copy_dir, ignore_errors=True)
            self.copy_dir = None


def _connect_copy(path: Path, wal: Path) -> sqlite3.Connection:
    """A read-only connection to a copy of `path` and its `wal`, made in a private temporary directory, so that
    SQLite's -shm is created there and nothing appears beside `path`. Costs one copy of the file (rare: only a WAL
    left without its -shm comes here)."""
    tmp = tempfile.mkdtemp(prefix="pmd-read-")
    try:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        conn = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True, factory=_CopyConnection)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    conn.copy_dir = tmp
    return conn


def sidecars(path: Path) -> list[Path]:
    """The files SQLite may keep next to `path` (-wal, -shm, -journal)."""
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def remove_db_files(path: Path) -> None:
    """Delete `path` and its sidecars, whichever exist."""
    for p in [path, *sidecars(path)]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_copy(src: sqlite3.Connection, dst: Path) -> None:
    """Online-backup `src` into `dst + ".tmp"`, make it a self-contained rollback-journal file, fsync, rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    remove_db_files(tmp)
    target = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        src.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal next to the checkpoint
    finally:
        target.close()
    fsync_file(tmp)
    for side in sidecars(dst):  # a stale WAL next to `dst` would be replayed onto the new file: remove it first
        with contextlib.suppress(FileNotFoundError):
            side.unlink()
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
