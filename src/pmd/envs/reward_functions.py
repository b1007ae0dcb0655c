"""A user's reward function, named in the config, called exactly as TRL calls one.

`module:function` (importable) or `path/to/file.py:function` (a file, relative to the working directory). The
function takes TRL's reward signature, so an existing TRL reward function works unchanged:

    def reward(prompts, completions, completion_ids, **kwargs) -> list[float | None]

`prompts` and `completions` come in the form of the row's prompt, as TRL 1.16's GRPOTrainer passes them
(`_generate_and_score_completions`, `_calculate_rewards`): a text prompt (TRL's standard format) gives the prompt
string and each completion as a plain string; a prompt of chat messages (conversational format) gives those messages
and each completion as `[{"role": "assistant", "content": text}]`. pmd renders every prompt through the chat
template, a text one as one user turn, but a reward function sees the form the user wrote (`trl_completion`;
`trl_form` says which in an error), so TRL's documented examples (`len(completion)`, `completion[0]["content"]`) run
unchanged. `completion_ids` are the generated token ids (None outside training, e.g. in evaluation), and `kwargs`
hold every column of the dataset's rows (one list entry per completion) plus TRL's `trainer_state`, `log_extra` and
`log_metric`. It returns one float per completion (None: not applicable, scored 0), or `(reward, feedback_text)`
pairs: the text reaches SDPO's and PMD's teacher and the memory like a built-in verifier's feedback.

This is the user's own code, not model-written code: it runs in the training process, like TRL's. Whatever it
raises (a `SystemExit` and a `GeneratorExit` too: every `BaseException` but `KeyboardInterrupt`, which is the person
at the keyboard) is an error of that function, reported as one (`UserCodeError`): a `sys.exit()` inside a reward or
at its module's import must not end `pmd train` quietly with exit code 0.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import inspect
import itertools
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TRL_ARGS = ("prompts", "completions", "completion_ids")


class UserCodeError(Exception):
    """A `BaseException` other than an `Exception` (SystemExit, GeneratorExit, ...) raised by the user's code, made an
    ordinary error of that code so that every caller's `except Exception` counts it; it reads as the original."""

    def __init__(self, original: BaseException):
        super().__init__(first_line(original))
        self.original = original


def error_name(exc: BaseException) -> str:
    """The type name a message gives for `exc` ("SystemExit" for a UserCodeError wrapping one)."""
    return type(exc.original if isinstance(exc, UserCodeError) else exc).__name__


@contextmanager
def user_code() -> Iterator[None]:
    """Run the user's code: a `BaseException` it raises other than `KeyboardInterrupt` (and ordinary exceptions,
    which pass unchanged) becomes a `UserCodeError`, an `Exception`."""
    try:
        yield
    except (Exception, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit, ...: the function's error, not ours
        raise UserCodeError(exc) from None


@dataclass(frozen=True)
class Scored:
    """One completion's score from a reward function, with its feedback text if the function gave one."""

    reward: float
    feedback: str | None = None


def load_function(spec: str, where: str, columns: Sequence[str] = ()) -> Callable[..., Any]:
    """The function `spec` names ("module:function" or "path/to/file.py:function"). ConfigError naming `where` if it
    cannot be imported or cannot take TRL's reward call with the dataset's `columns` as keyword arguments."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{where}: expected 'module:function' or 'path/to/file.py:function', got {spec!r}")
    try:
        with user_code():
            if module_name.endswith(".py"):
                module = _module_from_file(Path(module_name), where)
            else:
                module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # the user's module failed while importing (sys.exit too): say which and why, one line
        raise ConfigError(f"{where}: cannot import {module_name!r} ({describe(exc)})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{where}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    check_signature(fn, where, columns)
    return fn


def _module_from_file(path: Path, where: str):
    if not path.is_file():
        raise ConfigError(f"{where}: reward function file {path} not found (relative paths start at the working "
                          "directory)")
    name = f"pmd_user_reward_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside the user's file
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.dont_write_bytecode = bytecode
    return module


TRL_KWARGS = ("trainer_state", "log_extra", "log_metric")


def clashing_column(columns: Sequence[str]) -> str | None:
    """A dataset column named like an argument TRL passes itself ("completions", "trainer_state", ...), or None: the
    call would carry that keyword twice, a TypeError that would seem the function's fault."""
    return next((c for c in columns if c in (*TRL_ARGS, *TRL_KWARGS)), None)


def check_signature(fn: Callable[..., Any], where: str, columns: Sequence[str] = ()) -> None:
    """`fn` must accept TRL's call: prompts, completions, completion_ids, TRL's extras and the dataset's columns as
    keyword arguments (a parameter named after a column is fine; one that no call provides is not)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: trust it, the first-rows check will call it
    given = {name: [] for name in (*TRL_ARGS, *columns)}
    given.update(trainer_state=None, log_extra=_ignore, log_metric=_ignore)
    try:
        sig.bind(**given)  # TRL passes all of these, every call
    except TypeError as exc:
        raise ConfigError(f"{where}: {getattr(fn, '__name__', fn)!r} does not take TRL's reward call (prompts, "
                          f"completions, completion_ids, the columns {sorted(columns)} and TRL's trainer_state, "
                          f"log_extra, log_metric as keywords; add **kwargs): {exc}") from None


def trl_completion(response: str, conversational: bool) -> str | list[dict[str, str]]:
    """One completion as TRL passes it: the text itself for a text prompt, one assistant message for chat messages
    (TRL decodes it into `[{"role": "assistant", "content": text}]` when the prompt is conversational)."""
    return [{"role": "assistant", "content": response}] if conversational else response


def trl_form(column: str, conversational: bool) -> str:
    """What a reward function was given, for an error message about it (a TypeError reads as the function's fault
    unless it says that `completions` were strings, or messages, and why)."""
    if conversational:
        return (f"completions are chat messages [{{'role': 'assistant', 'content': ...}}] and prompts chat messages, "
                f"because the prompt column {column!r} holds chat messages (TRL's conversational format)")
    return (f"completions are plain strings and prompts strings, because the prompt column {column!r} is text "
            "(TRL's standard format)")


def call(fn: Callable[..., Any], prompts: list[Any], responses: list[str], columns: dict[str, list[Any]],
         completion_ids: Sequence[Any] | None = None, trl_kwargs: dict[str, Any] | None = None,
         conversational: Sequence[bool] | None = None) -> list[Scored]:
    """Call `fn` on a batch the way TRL does (an `async def` one too) and normalise what it returns. Raises what `fn`
    raises (a BaseException as UserCodeError), and ValueError if its output has the wrong length or type.

    `prompts` are already in their row's form; `conversational[k]` says which form completion k takes (all chat
    messages when not given). `fn` gets its own copy of the columns: TRL builds a batch's columns afresh from the
    dataset, while here they are the problems' own rows, so a function that edited one (`kwargs["tests"][0].pop()`)
    would change that problem for every later call. (`prompts` and `completions` are built afresh for each call.)"""
    forms = list(conversational) if conversational is not None else [True] * len(responses)
    completions = [trl_completion(r, c) for r, c in zip(responses, forms, strict=True)]
    ids = list(completion_ids) if completion_ids is not None else [None] * len(responses)
    extra = {"trainer_state": None, "log_extra": _ignore, "log_metric": _ignore, **(trl_kwargs or {})}
    with user_code():
        out = fn(prompts=prompts, completions=completions, completion_ids=ids, **copy.deepcopy(columns), **extra)
        if inspect.isawaitable(out):  # TRL awaits an async reward function; so do we (no loop runs here)
            out = asyncio.run(_awaited(out))
        return normalise(out, len(responses))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    """Outside TRL's loop (evaluation, preflight) `log_extra` / `log_metric` go nowhere."""


def normalise(out: Any, n: int) -> list[Scored]:
    """A reward function's return value as `n` Scored: floats (None/NaN = 0) or (reward, feedback) pairs.

    What TRL takes is taken: any ordered iterable (a list, a tuple, a 1-D numpy array or tensor, a generator), read
    to at most n + 1 items, so an endless generator is refused rather than read forever. Text, mappings and sets are
    refused: a set or dict has no order that pairs its values with completions."""
    if isinstance(out, (str, bytes, Mapping, Set)) or not hasattr(out, "__iter__") or getattr(out, "ndim", 1) != 1:
        shape = f" of shape {tuple(out.shape)}" if hasattr(out, "shape") else ""
        raise ValueError(f"returned {type(out).__name__}{shape}, expected a list of {n} floats or (reward, feedback) "
                         "pairs")
    items = list(itertools.islice(out, n + 1))
    if len(items) != n:
        count = len(out) if hasattr(out, "__len__") else f"more than {n}" if len(items) > n else len(items)
        raise ValueError(f"returned {count} values for {n} completions")
    scored = []
    for item in items:
        feedback = None
        if isinstance(item, (tuple, list)):
            if len(item) != 2 or not (item[1] is None or isinstance(item[1], str)):
                raise ValueError(f"returned {item!r}; a pair must be (reward, feedback_text)")
            item, feedback = item
        if item is None:
            value = 0.0
        elif isinstance(item, str) or not hasattr(item, "__float__") or getattr(item, "ndim", 0):
            raise ValueError(f"returned {_shown(item)}, expected a number")  # numbers, bools, numpy/torch scalars
        else:
            value = float(item)
            if math.isnan(value):
                value = 0.0
            elif math.isinf(value):
                raise ValueError(f"returned {value}, expected a finite number")
        scored.append(Scored(value, feedback or None))
    return scored


def _shown(item: Any, limit: int = 80) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit] + "..."


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message as one line for a one-line error (cut to `limit` characters if given). The user's
    exception may be any object: one whose `__str__` raises has no message rather than a traceback."""
    try:
        text = str(exc).strip()
    except Exception:  # noqa: BLE001 - the user's __str__
        text = ""
    return text.splitlines()[0][:limit] if text else ""


def describe(exc: BaseException, limit: int = 300) -> str:
    """'Type: first line of the message' (the original's type for a UserCodeError), or the type alone."""
    text = first_line(exc, limit)
    return f"{error_name(exc)}: {text}" if text else error_name(exc)
