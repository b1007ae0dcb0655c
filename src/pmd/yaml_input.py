"""User YAML (config files and `--set` values) -> plain data, strictly: safe types only, a size limit, no anchors
or aliases, no duplicate keys, a bounded nesting depth, and YAML 1.2 numbers read as numbers.

Why each rule (all found by feeding `pmd train` hostile files):

* Size: PyYAML's pure-Python parser reads about 1 MB per second; a 60 MB file gave no output for minutes. A run
  config is a few kilobytes, so `MAX_CONFIG_BYTES` (1 MiB) is refused from the file's size, before reading it.
* Anchors and aliases: a 600-byte "billion laughs" file (`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`, ...) is a small
  graph for PyYAML but an exponential tree for everything that walks the loaded data (copying, type checks); it ran
  195 s into a MemoryError. A config never needs them (`--set` edits values instead), so any anchor or alias is an
  error at its line, before anything is expanded.
* Duplicate keys: YAML says a mapping's keys are unique, PyYAML keeps the last silently, so `steps: 3` ... `steps: 300`
  trains 300 steps with no word. Refused, naming the key and both lines.
* Depth: PyYAML composes recursively, so `[[[[...` 1000 levels deep is a RecursionError traceback. A config is a few
  levels deep; `MAX_DEPTH` (64) leaves room for any own-task params.
* Numbers: PyYAML reads YAML 1.1, where `1e-4` is a string; the YAML 1.2 core-schema spellings are added (see
  `_Loader`), without changing anything YAML 1.1 already reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from .errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: shipped configs are under 5 KB
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1) that also reads YAML 1.2 core-schema numbers as numbers: `1e-4`, `5E3`,
    `+1.5e-3` and `1.0e4` (YAML 1.1 needs a dot and a signed exponent, so PyYAML alone reads these as strings), and
    `0o17`. Everything PyYAML already reads as a number still is (`1.0e-4`, `.5`, `0x1F`, `1_000`, `.inf`, `.nan`).

    Refuses anchors, aliases, duplicate keys and nesting deeper than MAX_DEPTH (see the module docstring)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, f"alias *{event.anchor} (anchors and aliases are not allowed in a pmd "
                                            "config; write the value out)", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, f"anchor &{event.anchor} (anchors and aliases are not allowed in a pmd "
                                            "config; write the value out)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: SafeConstructor says "unhashable key"
                key = self.construct_object(key_node, deep=False)
                if key in seen:
                    raise ConstructorError(None, None, f"duplicate key {key!r} (first on line {seen[key]})",
                                           key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?"
                           r"|[0-9]+[eE][-+]?[0-9]+)$")
_YAML12_OCTAL = re.compile(r"^[-+]?0o[0-7]+$")
# Appended after PyYAML's own resolvers, so whatever YAML 1.1 already reads (ints, bools, ...) is unchanged.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+.0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _YAML12_OCTAL, list("-+0"))


def load_yaml(text: str) -> Any:
    """Plain data from YAML text under the rules above; raises yaml.YAMLError (with a mark where known)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def yaml_number(text: str) -> int | float | None:
    """The number the plain (unquoted) YAML scalar `text` spells, in a YAML 1.1 or 1.2 spelling; None if it spells
    something else ("fast", "nan", "true", "1e-4 apples")."""
    loader = _Loader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))
    finally:
        loader.dispose()
    if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        return None
    return load_yaml(text)


def read_config_file(path: str | Path) -> Any:
    """Plain data from the YAML file at `path`, refusing a missing, oversized, non-UTF-8, empty or malformed file
    with a ConfigError naming the file (and the line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        with p.open("rb") as fh:  # the size from the open file, and never more than the limit read
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES // 1024} KiB, too large for a run config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: {_where(exc)}invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if loaded is None:
        raise ConfigError(f"{p}: empty config (no settings; write at least one, e.g. `train: {{steps: 8}}`, or "
                          "`{}` for every default)")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1} " if mark is not None else ""
