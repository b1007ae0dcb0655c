"""Text that UTF-8 can hold. YAML's and JSON's `\\ud800` escapes (and Python callers) can give a lone surrogate:
a string Python holds but cannot encode, which passes every check until a file is written or a prompt tokenised.
Configs (`config_fields.check_text`) and data rows (`envs.dataset_files.text_problem`) look for one with this one
walk, each naming the place in its own terms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

L = TypeVar("L")


def first_lone_surrogate(value: Any, label: L, in_dict: Callable[[L, Any], L],
                         in_list: Callable[[L, int], L]) -> tuple[L, str, int] | None:
    """The first string in `value` (through dicts, lists and tuples; dict keys too) that UTF-8 cannot encode, as
    (its label, the surrogate, its index in the string), or None. A nested value's label is `in_dict(label, key)`
    or `in_list(label, index)`; a key has its mapping's label. Iterative: Python data may nest deeper than the
    recursion limit."""
    stack: list[tuple[Any, L]] = [(value, label)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return where, item[exc.start], exc.start
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((key, where))
                stack.append((inner, in_dict(where, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, in_list(where, i)) for i, inner in enumerate(item))
    return None
