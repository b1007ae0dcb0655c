"""The status channel of a sandbox run, read as hostile input: what the runner reports on its status pipe and how
the host checks it.

The protocol (`sandbox_world`'s RUNNER writes it; JSON objects, one a line, in this order):
  1. the runner, before any user code exists: {"namespaces": bool, "mount": bool, "nproc": int};
  2. only with a mount namespace, the namespace's init before it forks the user process: {"world": {...}} or
     {"world_error": str} (then nothing follows: the init exits without running user code);
  3. only with namespaces, the init after the user process ended: {"returncode": int}.
The user code never holds the pipe, and the init that does is not dumpable (no ptrace, no /proc/1/fd), but the
host still accepts only this exact shape: anything else (an unknown key, a wrong type, a line out of order, a
line too many, JSON nested too deep to parse, more than MAX_BYTES) makes `Status.error` say what, and the run
counts as failed instead of raising or trusting a forged field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_BYTES", "Status", "parse_status"]

MAX_BYTES = 16 * 1024
_WORLD_FLAGS = {"mount_namespace", "private_root", "fresh_proc", "private_tmp"}
_WORLD_NOTES = {"proc_error", "root_error"}


@dataclass(frozen=True)
class Status:
    namespaces: bool = False
    nproc: int | None = None
    world: dict[str, Any] = field(default_factory=dict)
    world_error: str | None = None
    returncode: int | None = None
    error: str | None = None  # why the channel is not what the runner writes; None when it is


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _world_ok(world: Any) -> bool:
    if not isinstance(world, dict):
        return False
    return all((k in _WORLD_FLAGS and isinstance(v, bool)) or (k in _WORLD_NOTES and isinstance(v, str))
               for k, v in world.items())


def parse_status(data: bytes) -> Status:
    """The run's status from the bytes read off its pipe; never raises."""
    if len(data) > MAX_BYTES:
        return Status(error=f"status channel holds {len(data)} bytes (more than {MAX_BYTES})")
    items = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            item = json.loads(line.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - ValueError, RecursionError, MemoryError: all just malformed
            return Status(error=f"status line is not JSON ({type(exc).__name__})")
        if not isinstance(item, dict):
            return Status(error="status line is not an object")
        items.append(item)
    if not items:
        return Status(error="no status was reported")
    first = items.pop(0)
    if set(first) != {"namespaces", "mount", "nproc"} or not isinstance(first["namespaces"], bool) \
            or not isinstance(first["mount"], bool) or not _int(first["nproc"]):
        return Status(error="malformed first status line")
    status = {"namespaces": first["namespaces"], "nproc": first["nproc"]}
    if first["mount"] and first["namespaces"]:
        if not items:
            return Status(**status, error="no world report")
        world = items.pop(0)
        if set(world) == {"world_error"} and isinstance(world["world_error"], str):
            if items:
                return Status(**status, error="status lines after a world error")
            return Status(**status, world_error=world["world_error"])
        if set(world) != {"world"} or not _world_ok(world["world"]):
            return Status(**status, error="malformed world report")
        status["world"] = world["world"]
    if not first["namespaces"]:
        return Status(**status, error="status lines after the first") if items else Status(**status)
    if len(items) != 1 or set(items[0]) != {"returncode"} or not _int(items[0]["returncode"]):
        return Status(**status, error="no well-formed exit status" if not items else "malformed exit status")
    return Status(**status, returncode=items[0]["returncode"])
