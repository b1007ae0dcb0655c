"""How the judge compares what a program produced with what a test expects: stdin output token by token, and
functional return values as JSON values.

The rule, for both: an expected integer must be matched exactly (as LiveCodeBench's judge does, which compares the
tokens of a line as exact Decimals); only where the expected value is a float may the answer differ, and then by a
relative 1e-6 (REL_TOL). An absolute tolerance would let `19.000018` pass for an expected `19`, and a tolerance
applied to integers would let `854567678675.6` pass for `854567251392`: a policy learns to print such near misses.

Everything here reads the program's output, which the policy controls: no input may raise. Numbers are recognised
by a strict ASCII pattern before Decimal sees them, so `sNaN` (on which Decimal comparisons raise), `1_9`, `١٩` or
an exponent of thousands of digits are plain text, compared as strings.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["REL_TOL", "number", "outputs_match", "tokens_match", "values_match"]

REL_TOL = 1e-6
# Digits with an optional point, and an exponent of at most 6 digits: beyond that no test's value lives, and Decimal
# arithmetic on such exponents is where its context limits start to raise.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,6})?", re.ASCII)


def number(token: str) -> Decimal | None:
    """The token's exact value if it is written as a plain decimal number (ASCII digits), else None."""
    if not _NUMBER.fullmatch(token):
        return None
    try:
        value = Decimal(token)
    except ArithmeticError:  # cannot happen for a token of this shape; a number that is not one is text
        return None
    return value if value.is_finite() else None


def _is_float_literal(token: str) -> bool:
    return any(c in token for c in ".eE")


def _close(actual: Any, expected: Any) -> bool:
    """Relative closeness to a float expectation; an expected 0.0 is met only by 0. An int too large for a float
    is simply not close."""
    try:
        a, e = float(actual), float(expected)
    except (OverflowError, ValueError):
        return False
    return math.isfinite(a) and math.isfinite(e) and abs(a - e) <= REL_TOL * abs(e)


def tokens_match(actual: str, expected: str) -> bool:
    """Equal as text, or as numbers: exactly when `expected` is written as an integer, within REL_TOL when it is
    written with a point or an exponent."""
    if actual == expected:
        return True
    a, e = number(actual), number(expected)
    if a is None or e is None:
        return False
    if a == e:
        return True
    if not _is_float_literal(expected):
        return False
    return _close(a, e)


def outputs_match(actual: str, expected: str) -> bool:
    """Judge-style comparison of two outputs: whitespace between tokens, trailing whitespace and blank edges are
    ignored; tokens compare with `tokens_match`."""
    got = [line.split() for line in actual.strip().splitlines()]
    want = [line.split() for line in expected.strip().splitlines()]
    if len(got) != len(want):
        return False
    return all(len(g) == len(w) and all(tokens_match(a, b) for a, b in zip(g, w)) for g, w in zip(got, want))


def values_match(actual: Any, expected: Any) -> bool:
    """A functional test's return value (decoded from JSON) against the expected one. Iterative, so a value nested
    deeper than the recursion limit is just compared, never a RecursionError."""
    stack = [(actual, expected)]
    while stack:
        a, e = stack.pop()
        if isinstance(e, bool) or isinstance(a, bool):
            ok = type(a) is type(e) and a == e
        elif isinstance(e, float):
            ok = isinstance(a, (int, float)) and (a == e or _close(a, e))
        elif isinstance(e, int):
            ok = isinstance(a, (int, float)) and a == e  # exact: 19.0 is 19, 19.000018 is not
        elif isinstance(e, list):
            ok = isinstance(a, list) and len(a) == len(e)
            stack.extend(zip(a, e) if ok else ())
        elif isinstance(e, dict):
            ok = isinstance(a, dict) and a.keys() == e.keys()
            if ok:
                stack.extend((a[k], e[k]) for k in e)
        else:
            ok = type(a) is type(e) and a == e
        if not ok:
            return False
    return True
