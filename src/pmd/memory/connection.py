"""A memory store's connection: opening (and creating) the SQLite file, transactions, and whole-file copies.

`MemoryStore` is this plus its content (the rows of each level, in `store`, and retrieval's indexed reads, in
`queries`). Kept apart because every write and read of the content relies on the same few guarantees, and they are
all here:

- One file, WAL mode, `synchronous=FULL`: readers never block the writer and a killed process never corrupts it.
- Every public write is one transaction (`BEGIN IMMEDIATE ... COMMIT`), so a crash mid-write leaves no partial rows.
  `transaction()` groups several writes into one when they must land together (e.g. insights + "last reflected");
  `_snapshot()` gives several reads one consistent view.
- A file that is not ours (not SQLite, foreign `application_id`, missing tables, corrupt, another schema version)
  is checked through a read-only connection before anything is written, and rejected with `MemoryStoreError`,
  untouched; `read_only=True` opens write nothing at all. The checks, the `APPLICATION_ID` marking a file as ours
  and the crash-safe copy behind `backup_to`/`restore` live in `dbfile`.
- `revision()` tells retrieval's cached indexes when the content changed: writes that touch experiences, insights
  or patterns set `_touched` inside their transaction, and its commit counts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from pmd.errors import MemoryStoreError
from pmd.memory.dbfile import APPLICATION_ID, atomic_copy, check_existing, connect_readonly, expected, validate
from pmd.memory.records import SCHEMA, SCHEMA_VERSION


class StoreConnection:
    """One open store file and its transaction state. Not thread-safe: use it from the process's main thread only."""

    def __init__(self, path: str | Path, *, verify: bool = True, read_only: bool = False) -> None:
        """Open `path`, creating a fresh store if it is missing (or an empty file). `verify` runs PRAGMA quick_check
        on an existing file before use (linear in its size; cheap for memory-sized databases). `read_only`: an
        existing store, read through a connection that writes nothing (`dbfile.connect_readonly`); writes fail."""
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._depth = 0
        self._revision = 0  # commits that changed experiences/insights/patterns (what retrieval indexes)
        self._touched = False
        fresh = not read_only and (not self.path.exists() or self.path.stat().st_size == 0)
        if fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            check_existing(self.path, verify)
        try:
            conn = (connect_readonly(self.path) if read_only
                    else sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0))
        except sqlite3.Error as e:
            raise MemoryStoreError(f"{self.path}: cannot open ({e}); {expected()}") from e
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            if not read_only:  # journal_mode=WAL rewrites the header of a file that is not in WAL mode yet
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            if fresh:
                self._init_schema(verify)
        except sqlite3.DatabaseError as e:
            self.close()
            raise MemoryStoreError(f"{self.path}: cannot initialise ({e}); {expected()}") from e
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_existing(cls, path: str | Path, *, verify: bool = True, read_only: bool = False) -> Self:
        """Open a store that must already exist; never creates one. Inspection (`pmd memory`, `report`, `explain`,
        `eval --memory`) passes `read_only=True`: the file stays byte-for-byte as it was."""
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0:
            raise MemoryStoreError(f"{p}: no memory store there; {expected()}")
        return cls(p, verify=verify, read_only=read_only)

    @staticmethod
    def check(path: str | Path) -> None:
        """Raise MemoryStoreError unless `path` is a healthy store this version can open. Reads only (a file
        given as `memory.load_from` is checked before a run writes anything)."""
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0:
            raise MemoryStoreError(f"{p}: no memory store there; {expected()}")
        check_existing(p, verify=True)

    def _init_schema(self, verify: bool) -> None:
        """Create the schema in one transaction; if another process got there first, validate theirs instead."""
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            n_tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if app_id == 0 and version == 0 and n_tables == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        validate(conn, self.path, verify)

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise MemoryStoreError(f"{self.path}: memory store is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the main file). Idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all. A nested block is a savepoint:
        if it raises, only its own writes are undone (and the outer block decides the rest)."""
        conn = self._db
        if self._depth:
            name = f"pmd_{self._depth}"
            conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                raise
            finally:
                self._depth -= 1
                conn.execute(f"RELEASE {name}")
            return
        conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        self._touched = False
        try:
            yield
        except BaseException:
            self._depth = 0
            conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if self._touched:
            self._revision += 1

    def revision(self) -> tuple[int, int]:
        """A cache key for retrieval indexes: changes when this store committed a change to experiences, insights
        or patterns (not retrieval logs or meta), or when any other connection committed anything."""
        return self._revision, self._db.execute("PRAGMA data_version").fetchone()[0]

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read across several queries (one read transaction)."""
        conn = self._db
        if self._depth or conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # -- whole-file copies ------------------------------------------------------------------------------------

    def backup_to(self, path: str | Path) -> None:
        """Write a consistent single-file copy of the store to `path` (SQLite online backup into `path.tmp`,
        fsync, atomic rename), safe while the store is open and in use: a checkpoint never holds half a copy."""
        if self._depth:
            raise MemoryStoreError(f"{self.path}: cannot back up inside an open transaction (it is not committed)")
        dst = Path(path)
        if dst.resolve() == self.path.resolve():
            raise MemoryStoreError(f"{dst}: backup target is the live store itself")
        atomic_copy(self._db, dst)

    @staticmethod
    def restore(from_path: str | Path, to_path: str | Path) -> None:
        """Replace the store at `to_path` with a validated copy of `from_path`, atomically. `to_path` must not be
        open in any MemoryStore while this runs; its stale -wal/-shm files are removed."""
        src, dst = Path(from_path), Path(to_path)
        if not src.is_file():
            raise MemoryStoreError(f"{src}: no memory snapshot there; {expected()}")
        if dst.exists() and dst.resolve() == src.resolve():
            raise MemoryStoreError(f"{dst}: restore source and target are the same file")
        check_existing(src, verify=True)
        conn = connect_readonly(src)  # the source (a checkpoint's copy, another run's store) is never written
        try:
            atomic_copy(conn, dst)
        finally:
            conn.close()
