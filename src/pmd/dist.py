"""The processes of one run: who writes, how the others learn what the writer decided, and generation that every
rank takes part in.

Scale rules (../DESIGN.md): only the main process writes the run directory and the memory store; other ranks wait
at barriers and receive what they need as Python objects over torch.distributed (gloo on CPU, NCCL on GPU), so no
rank assumes a filesystem shared with another node. Every collective here must be reached by every rank, in the
same order; each caller says which ranks reach it.

In one process every operation is a local no-op, so single-process runs take exactly the code path they always
took.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch

from .errors import PMDError

T = TypeVar("T")

# How long a rank waits in one collective before the run fails (TRL's `ddp_timeout` is 1800 s). Every rank runs the
# same collectives in the same order, so a longer wait means a mismatch or a dead rank: fail within minutes, naming
# the rank and the phase, rather than hang. The longest legitimate wait is a rank at a barrier while the main
# process writes a checkpoint or the final model; `train.trl.ddp_timeout` raises it for very large models.
DEFAULT_COLLECTIVE_TIMEOUT_S = 600
_GROUP_TIMEOUT_S: int | None = None  # the timeout the process group was created with, for the error line


def process_group_settings(trl: Mapping[str, Any]) -> tuple[str | None, int]:
    """The backend (None: accelerate's choice, gloo on CPU, NCCL on GPU) and collective timeout in seconds that
    `train.trl` asks for (`ddp_backend`, `ddp_timeout`, as in transformers' TrainingArguments), else pmd's."""
    from .errors import ConfigError

    timeout, backend = trl.get("ddp_timeout"), trl.get("ddp_backend")
    if timeout is None:
        timeout = DEFAULT_COLLECTIVE_TIMEOUT_S
    elif isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ConfigError(f"train.trl.ddp_timeout: expected a whole number of seconds > 0, got {timeout!r}")
    if backend is not None and (not isinstance(backend, str) or not backend.strip()):
        raise ConfigError(f"train.trl.ddp_backend: expected a backend name such as 'gloo' or 'nccl', got {backend!r}")
    return backend, timeout


class Ranks:
    """This process's place among the run's processes (as accelerate's `PartialState` set them up)."""

    def __init__(self, index: int = 0, world: int = 1):
        self.index = index
        self.world = world

    @classmethod
    def current(cls, backend: str | None = None, timeout_s: int = DEFAULT_COLLECTIVE_TIMEOUT_S) -> Ranks:
        """Start (or join) the process group the launcher described (torchrun / accelerate launch env vars).

        The first call creates the process group, and its backend and timeout hold for the whole run: TRL's
        arguments, built later, cannot change them (transformers passes `ddp_timeout` to a group that exists
        already), so pmd passes `train.trl.ddp_backend` / `ddp_timeout` here (`process_group_settings`)."""
        from accelerate import PartialState

        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if backend:
            kwargs["backend"] = backend
        created = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        state = PartialState(cpu=not torch.cuda.is_available(), **kwargs)  # as trl_args decides use_cpu
        if created and state.num_processes > 1:
            global _GROUP_TIMEOUT_S
            _GROUP_TIMEOUT_S = timeout_s
        return cls(state.process_index, state.num_processes)

    @classmethod
    def for_run(cls, trl: Mapping[str, Any]) -> Ranks:
        """`current` with the backend and timeout a run's `train.trl` asks for."""
        return cls.current(*process_group_settings(trl))

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def broadcast(self, obj: T) -> T:
        """The main process's `obj` on every rank (others pass anything, e.g. None)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the main process only and hand its result to every rank. A `PMDError` it raises (a bad input,
        a refused run dir) is raised on every rank with the same one-line message, so all ranks stop together
        instead of the others hanging at the next collective."""
        result: Any = None
        error: str | None = None
        if self.is_main:
            try:
                result = fn()
            except PMDError as exc:
                error = f"{type(exc).__name__}\0{exc}"
        result, error = self.broadcast((result, error))
        if error is not None:
            exc = _rebuild(error)
            exc.every_rank = self.distributed  # the CLI prints it once, on the main process
            raise exc
        return result

    def shard(self, n: int) -> tuple[list[int], int]:
        """Which of `n` items this rank takes (strided), and how many every rank must process so that each does the
        same number of generate calls (sharded parameters under ZeRO-3 / FSDP need every rank in every forward)."""
        mine = list(range(self.index, n, self.world))
        per_rank = -(-n // self.world) if n else 0
        return mine, per_rank


def interleave(parts: Sequence[Sequence[T]], n: int) -> list[T]:
    """Undo `Ranks.shard`: rank r's i-th item is item r + i * world (padding past `n` dropped). Pure."""
    world = len(parts)
    out: list[Any] = [None] * n
    for r, items in enumerate(parts):
        for i, item in enumerate(items):
            j = r + i * world
            if j < n:
                out[j] = item
    return out


def generate_on_ranks(ranks: Ranks, prompts: list[T], generate: Callable[[list[T]], list[str]]) -> list[str]:
    """Generate for `prompts` (the same list on every rank) with the work sharded over ranks; every rank returns all
    outputs. Each rank pads its share to the same length, so all ranks make the same generate calls."""
    mine, per_rank = ranks.shard(len(prompts))
    local = [prompts[i] for i in mine]
    padded = local + prompts[:1] * (per_rank - len(local))
    out = generate(padded)[: len(local)] if padded else []
    return interleave(ranks.gather(out), len(prompts))


class SharedGeneration:
    """Generation that the main process asks for and every rank takes part in.

    Policy-written reflection runs where the memory is, on the main process, but the policy's parameters may be
    sharded (ZeRO-3 / FSDP), so a forward pass needs every rank. The main process calls this object like a
    generator inside `session()`; meanwhile the other ranks sit in `serve()`, receive each request, generate their
    share and return it, until the session ends. `generate` is this rank's local generator."""

    def __init__(self, ranks: Ranks, generate: Callable[[list[Any]], list[str]]):
        self.ranks = ranks
        self.generate = generate

    def __call__(self, prompts: list[Any]) -> list[str]:
        """Main process: generate for `prompts`, sharded over every rank."""
        prompts = self.ranks.broadcast(list(prompts))
        return generate_on_ranks(self.ranks, prompts, self.generate)

    @contextlib.contextmanager
    def session(self):
        """Main process: the followers serve until this exits, even when it exits with an error."""
        try:
            yield self
        finally:
            self.ranks.broadcast(None)

    def serve(self) -> None:
        """Other ranks: take part in each of the main process's requests until its session ends."""
        while True:
            prompts = self.ranks.broadcast(None)
            if prompts is None:
                return
            generate_on_ranks(self.ranks, prompts, self.generate)


# What torch's backends say when a collective times out or its peer is gone (gloo raises RuntimeError in the waiting
# rank; NCCL raises DistBackendError with TORCH_NCCL_BLOCKING_WAIT=1, and otherwise its watchdog aborts the process
# after logging the rank and the operation itself).
_COLLECTIVE_SIGNS = ("Timed out waiting", "Application timeout caused pair closure", "Connection closed by peer",
                     "Connection reset by peer",
                     "Watchdog caught collective operation timeout", "operation timeout", "ProcessGroupGloo")


def collective_failure(exc: BaseException) -> str | None:
    """One line for a collective that timed out or lost its peer, naming this rank, its phase and step; None for
    any other exception. A timed-out rank waited in a collective the others never reached (the sequence of
    collectives differed between ranks), or a peer died; its own line says which phase it was in."""
    import os

    from .phases import CLOCK

    rank, world, timeout_s = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1"), _GROUP_TIMEOUT_S
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        dist_error = getattr(torch.distributed, "DistError", ())
        if isinstance(current, dist_error) or (isinstance(current, RuntimeError)
                                              and any(sign in text for sign in _COLLECTIVE_SIGNS)):
            lost = "by peer" in text
            what = ("its peer rank stopped (see that rank's line)" if lost else
                    f"timed out after {timeout_s} s" if timeout_s else "timed out")
            where, step = CLOCK.where()
            return (f"rank {rank} of {world}: a collective {what} in phase '{where}' of step {step}: "
                    "the ranks' sequences of collectives differ, or a rank died; train.trl.ddp_timeout sets the "
                    "timeout")
        current = current.__cause__ or current.__context__
    return None


def _rebuild(error: str) -> PMDError:
    from . import errors

    name, message = error.split("\0", 1)
    cls = getattr(errors, name, PMDError)
    return cls(message) if isinstance(cls, type) and issubclass(cls, PMDError) else PMDError(message)
