"""Declared config fields: `_f` (a default, its one-line help and its allowed values), the one place those values
are checked (`check_fields`), a section's own check on construction (`check_section`), and how plain data (as YAML
holds it) becomes a typed dataclass (`build_dataclass`).

Split from config.py, which holds the run's sections and how a file and `--set` become them: this module is the
machinery every section uses (environment parameter classes and the env section in pmd.envs too), and it knows no
section. It imports nothing of pmd's beyond errors and text/number helpers, so pmd.envs can use it without importing
pmd.config (which imports pmd.envs: tests/test_import_graph.py holds the package to no import cycle).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal, TypeVar

from .errors import ConfigError
from .valid_text import first_lone_surrogate
from .yaml_input import yaml_number

# Every integer a config holds fits a signed 32-bit int: seeds reach numpy (which takes < 2**32) and counts reach
# int32 tensors and C libraries; nothing pmd counts (steps, tokens, problems) comes near it. A larger integer is a
# typo (`steps: 10000000000000`), refused at load like a float where an integer belongs (`steps: 1e30`).
INT_MAX = 2**31 - 1

# env.train_size / eval_size: reasoning-gym generates every problem when the run starts (about 15,000 a second on
# one core; eval three times over, to drop duplicates of train), in one pass with no output. 2**31 - 1 hung preflight
# for what would have been days; a million is about a minute, and more problems than any run here draws.
MAX_PROBLEMS = 1_000_000
PROBLEMS_EXPECT = f"a positive integer of at most {MAX_PROBLEMS} (problems are generated when the run starts)"


def _f(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
       lt: float | None = None, expect: str = "", min_len: int = 0, max_len: int = 0, max_len_why: str = "",
       nonempty: bool = False, unbounded: str = "") -> Any:
    """A dataclass field with a default, its one-line help and its allowed values, checked in one place
    (`check_fields`) for every section however it is built:

    * ge / gt / le / lt: bounds of a number, or of each item of a list of numbers (`expect` replaces the generated
      "expected >= 0" text where the meaning needs saying, e.g. "0 = derive");
    * min_len / max_len: the fewest / most items a list may have (0: no maximum), max_len_why: why that many, said
      in the error; nonempty: a string that may not be blank;
    * unbounded: for a number that may take any finite value, why (every number field states one or the other, and
      a test holds every section to it).

    Mutable defaults are copied per instance."""
    metadata: dict[str, Any] = {"help": help}
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        metadata["range"] = bounds
    for key, value in (("expect", expect), ("min_len", min_len), ("max_len", max_len),
                       ("max_len_why", max_len_why), ("nonempty", nonempty), ("unbounded", unbounded)):
        if value:
            metadata[key] = value
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: typing.cast(Any, type(d))(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def range_text(bounds: dict[str, float], integer: bool) -> str:
    """"a positive integer", ">= 0", "a value in (0, 1]", ... for a field's bounds."""
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if lo and hi:
        return f"a value in {lo[0]}{_fmt(lo[1])}, {_fmt(hi[1])}{hi[0]}"
    if lo:
        if integer and lo == ("(", 0):
            return "a positive integer"
        return f"{'>=' if lo[0] == '[' else '>'} {_fmt(lo[1])}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {_fmt(hi[1])}"
    return "a number"


def _in_range(value: float, bounds: dict[str, float]) -> bool:
    return (math.isfinite(value) and value >= bounds.get("ge", -math.inf) and value > bounds.get("gt", -math.inf)
            and value <= bounds.get("le", math.inf) and value < bounds.get("lt", math.inf))


def check_fields(obj: Any) -> None:
    """Every field of dataclass instance `obj` against its `_f` metadata: numbers (and lists' numeric items) within
    their bounds and finite, integers within INT_MAX, lists long enough, strings that must be non-blank. Raises
    ConfigError("field: expected ..., got ...") (callers prefix the section). One place, so no field is forgotten."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        if meta.get("nonempty") and isinstance(value, str) and not value.strip():
            raise ConfigError(f"{f.name}: expected a non-empty string, got {value!r}")
        if isinstance(value, list):
            if len(value) < meta.get("min_len", 0):
                raise ConfigError(f"{f.name}: expected at least {meta['min_len']} item"
                                  f"{'s' if meta['min_len'] != 1 else ''}, got []")
            if meta.get("max_len") and len(value) > meta["max_len"]:
                why = f" ({meta['max_len_why']})" if meta.get("max_len_why") else ""
                raise ConfigError(f"{f.name}: expected at most {meta['max_len']} items{why}, got {len(value)}")
            items = [(f"{f.name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(f.name, value)]
        for name, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, int) and abs(v) > INT_MAX:
                raise ConfigError(f"{name}: expected an integer of at most {INT_MAX} in size, got {v}")
            bounds = meta.get("range", {})
            if not _in_range(v, bounds):
                expect = meta.get("expect") or range_text(bounds, isinstance(v, int))
                if not math.isfinite(v):
                    expect = "a finite number" if not bounds else f"a finite number, {expect}"
                raise ConfigError(f"{name}: expected {expect}, got {v!r}")


def check_section(obj: Any, path: str) -> None:
    """What a config section's `__post_init__` runs first, so a section built in Python is checked like one read
    from YAML: each field's type (as the YAML builder coerces it: an int where a float belongs becomes a float, a
    mapping where a section belongs is built) and its `_f` range (`check_fields`). Errors name `path.field` (`path`
    is where the section sits in the run config; "" for the top level), with the words YAML loading gives."""
    where = f"{path}." if path else ""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        coerced = _coerce(value, _hints(type(obj))[f.name], f"{where}{f.name}")
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)  # also for frozen sections
    try:
        check_fields(obj)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _yaml_spelling(key: Any) -> str:
    return "null" if key is None else str(key).lower() if isinstance(key, bool) else repr(key)


def check_keys(mapping: dict[Any, Any], path: str) -> None:
    """Every key of a config mapping is a name (text). YAML reads an unquoted `1:`, `true:`, `null:` or `~:` as a
    number, boolean or null key; beside a text key, sorting the keys for the "unknown key" message raised TypeError.
    Refused here, naming the key as the file spells it."""
    for key in mapping:
        if not isinstance(key, str):
            kind = ("null" if key is None else "a boolean" if isinstance(key, bool)
                    else "a number" if isinstance(key, (int, float)) else f"a {type(key).__name__}")
            raise ConfigError(f"{path or 'top level'}: key {_yaml_spelling(key)} is {kind}, not a name (config "
                              "keys are text; check the indentation, or quote the key)")


def check_text(value: Any, path: str) -> None:
    """Every string in `value` (nested lists and mappings, keys too) is text that UTF-8 can encode. YAML's "\\ud800"
    escape, or a Python caller, can give a lone surrogate: it passed preflight, then failed when config.yaml was
    written, or the first time the run encoded a prompt, with the run directory already locked. Iterative: a config
    from Python may nest deeper than the recursion limit."""
    hit = first_lone_surrogate(value, path, lambda where, key: f"{where}.{key}" if isinstance(key, str) else where,
                               lambda where, i: f"{where}[{i}]")
    if hit is not None:
        where, char, at = hit
        raise ConfigError(f"{where}: not valid text (a lone surrogate {char!r} at character {at}; UTF-8 cannot hold "
                          "it): remove it or write the character itself")


# Keys that moved (into a sub-section, or merged into the key that said the same): an old config gets a one-line
# pointer instead of "unknown key".
MOVED_KEYS = {
    "memory.token_budget": "memory.retrieval.token_budget",
    "memory.min_problems_for_pattern": "memory.consolidation.min_problems",
    "memory.pattern_stale_after_steps": "memory.consolidation.stale_after_steps",
    "memory.teacher": "train.teacher_model_kind (memory.teacher: frozen is train.teacher_model_kind: base)",
    "compare.eval_every": "eval.every_steps (pmd compare reads it too)",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def known_hint(key: Any, names: Any, where: str = "") -> str:
    """What an "unknown key" message adds: the closest known name (difflib), or, with none close, every known name.
    One suggestion rather than a list of 34 keys, as `train.trl.*` and the verifier names already did."""
    near = difflib.get_close_matches(str(key), sorted(names), n=1) if isinstance(key, str) else []
    if near:
        return f"did you mean {where}{near[0]}?"
    return f"known: {', '.join(sorted(names))}"


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against annotation `tp` (after `from __future__` evaluation); build nested dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # already built, by a Python caller (e.g. a SandboxLimits)
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(c) for c in typing.get_args(tp))
            raise ConfigError(f"{path}: expected one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        check_keys(value, path)
        check_text(value, path)
        return dict(value)
    if tp is Any:
        check_text(value, path)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # a quoted number, or one from a Python caller: any YAML 1.1/1.2 spelling
            number = yaml_number(value.strip())
            value = value if number is None else number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):  # .inf / .nan: no setting of a run means "infinitely"; nan passes range checks
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        if "\x00" in value:  # no path, name or prompt holds one, and os calls raise ValueError on it
            raise ConfigError(f"{path}: expected text without NUL characters, got {value!r}")
        check_text(value, path)
        return value
    raise ConfigError(f"{path}: unsupported annotation {tp!r}")  # pragma: no cover - a bug in this module


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    check_keys(data, path)
    unknown = sorted(set(data) - names)
    where = f"{path}." if path else ""
    if unknown:
        moved = MOVED_KEYS.get(f"{where}{unknown[0]}")
        if moved:
            raise ConfigError(f"config key {where}{unknown[0]} moved to {moved}")
        raise ConfigError(f"unknown config key {where}{unknown[0]} ({known_hint(unknown[0], names, where)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
        check_fields(obj)
        return obj
    except ConfigError as exc:  # the class's own range checks (__post_init__): say where in the config
        msg = str(exc)
        if re.sub(r"(\[\d+\])+$", "", msg.split(":", 1)[0]) in names:  # "field[i]: ..." -> "section.field[i]: ..."
            raise ConfigError(f"{where}{msg}") from None
        if path and msg.startswith((f"{path}.", f"{path}[", f"{path}:")):  # a section naming itself (check_section)
            raise ConfigError(msg) from None
        raise ConfigError(f"{path}: {msg}" if path else msg) from None


T = TypeVar("T")


def build_dataclass(cls: type[T], data: Any, path: str) -> T:
    """Build dataclass `cls` from plain data (as YAML holds it) with the checks the run config gets: unknown keys and
    wrong types raise ConfigError naming `path.key`. For config sections defined elsewhere (environment params)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return _build(cls, data, path)
