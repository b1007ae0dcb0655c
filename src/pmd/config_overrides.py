"""`--set section.key=value`: how one override edits the plain data a config file loaded to (list items by index,
`env.tasks[0].params.max_terms=3`), and which override an error is about, so the message names the override as the
user gave it (`--set ...`, or a dedicated flag such as `--algo pmd`) rather than the file.

Works on plain data only (what yaml_input loads), before any section is built; config.load_config joins the two.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Sequence

import yaml

from .errors import ConfigError
from .yaml_input import load_yaml

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[[^\[\]]*\])*)")
_MISSING = object()


def parse_key(dotted: str) -> list[str | int]:
    """`env.tasks[0].params.max_terms` -> ["env", "tasks", 0, "params", "max_terms"]."""
    steps: list[str | int] = []
    for segment in dotted.split("."):
        m = _SEGMENT.fullmatch(segment.strip())
        if not m:
            raise ConfigError(f"{segment!r} is not a key (expected section.key or list[N], e.g. env.tasks[0].name)")
        name = m.group(1)
        if name.isdigit():
            where = key_text(steps) or "a section"
            raise ConfigError(f"'.{name}' is not a key: address list items as {where}[{name}]")
        steps.append(name)
        for index in re.findall(r"\[([^\[\]]*)\]", m.group(2)):
            if not re.fullmatch(r"[0-9]+", index.strip()):
                raise ConfigError(f"[{index}]: a list index is a number >= 0, e.g. {key_text(steps)}[0]")
            steps.append(int(index))
    return steps


def key_text(steps: Sequence[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s) for i, s in enumerate(steps))


def _value_at(node: Any, steps: Sequence[str | int]) -> Any:
    """The value at `steps` in plain data `node` (e.g. the default env.tasks list), or _MISSING."""
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return _MISSING
            node = node[step]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return _MISSING
    return node


def override_origin(assignment: str) -> str:
    dotted, _, raw = assignment.partition("=")
    raw = raw.strip()
    return f"--set {dotted.strip()}={raw if len(raw) <= 40 else raw[:37] + '...'}"


def apply_override(data: dict[str, Any], assignment: str, origin: str | None,
                   defaults: Callable[[], dict[str, Any]]) -> str:
    """Apply one `section.key=value` (list items as `key[N]`) to the loaded YAML data; returns the dotted key it set.
    `defaults()` is the default config as plain data: an item of a list the file leaves out (the default env.tasks)
    edits a copy of the default list. Errors are prefixed with `origin` (how the user gave it: `--set KEY=VALUE`
    unless a dedicated flag)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    origin = origin or override_origin(assignment)
    dotted, raw = assignment.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else ""
        steps = parse_key(dotted.strip())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: value {raw!r} is not valid YAML "
                          f"({getattr(exc, 'problem', None) or exc.__class__.__name__})") from None
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    node: Any = data
    for i, step in enumerate(steps[:-1]):
        here, following = key_text(steps[: i + 1]), steps[i + 1]
        child = node[step] if isinstance(step, int) else node.get(step)
        if child is None:  # absent (or an empty `section:`): a section to fill in, or the default list to edit
            child = copy.deepcopy(_value_at(defaults(), steps[: i + 1])) if isinstance(following, int) else {}
            if child is _MISSING:
                raise ConfigError(f"{origin}: {here} is not a list (no {here}[{following}] to set)")
            node[step] = child
        if isinstance(following, int):
            if not isinstance(child, list):
                raise ConfigError(f"{origin}: {here} is not a list (no {here}[{following}] to set)")
            if following >= len(child):
                raise ConfigError(f"{origin}: {here}[{following}]: index out of range ({here} has {len(child)} "
                                  f"item{'s' if len(child) != 1 else ''}; to add one, set the whole list: "
                                  f"--set '{here}=[...]')")
        elif isinstance(child, list):
            raise ConfigError(f"{origin}: {here} is a list: address an item as {here}[N], e.g. {here}[0].{following}")
        elif not isinstance(child, dict):
            raise ConfigError(f"{origin}: {here} is not a section (it is {child!r})")
        node = child
    node[steps[-1]] = value
    return key_text(steps)


def _mentions(message: str, key: str) -> bool:
    """Whether `message` names dotted key `key` itself or something inside it (`key.sub`, `key[0]`)."""
    return re.search(rf"(?<![\w.\]]){re.escape(key)}(?!\w)", message) is not None


def blame(message: str, applied: Sequence[tuple[str, str]]) -> str | None:
    """Which override (origin) an error message is about: the last one whose key (or something inside it) the message
    names; else one whose section the message names together with the key's next name (a section-level check that
    quotes the offending item, e.g. `env.tasks[0].params: bad params ['colour']`). None: the file's doing."""
    for key, origin in reversed(applied):
        if _mentions(message, key):
            return origin
    for key, origin in reversed(applied):  # an unknown section on the way to the key (`--set trian.steps=2`)
        steps = parse_key(key)
        if any(re.search(rf"unknown config key {re.escape(key_text(steps[:n]))}(?![\w.\[])", message)
               for n in range(1, len(steps))):
            return origin
    for key, origin in reversed(applied):
        steps = parse_key(key)
        for n in range(len(steps) - 1, 1, -1):
            following = steps[n]
            if (isinstance(following, str) and _mentions(message, key_text(steps[:n]))
                    and re.search(rf"\b{re.escape(following)}\b", message)):
                return origin
    return None
