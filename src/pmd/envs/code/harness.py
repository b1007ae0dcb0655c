"""The program that runs a candidate inside the sandbox, and how the judge reads what it printed.

The payload carries the candidate, never any expected output. Marker lines carry a per-run nonce sent over stdin
(not written into the program), so a solution's own prints cannot pass for the harness's; the nonce is readable
inside the sandbox, so the judge still treats marker lines as untrusted.
"""

from __future__ import annotations

import json

__all__ = ["LCB_HEADER", "markers", "program"]

# LiveCodeBench's judge runs solutions after a block of star imports; starter code relies on e.g. `List`.
LCB_HEADER = """\
from typing import *
from collections import *
from heapq import *
from bisect import *
from itertools import *
from functools import *
from math import *
import collections, heapq, bisect, itertools, functools, math, string, re, sys, json, random, copy, operator
sys.setrecursionlimit(50000)
"""

# Runs inside the sandbox. The payload carries the candidate, never any expected output.
_HARNESS = r'''
import json as _pmd_json, linecache as _pmd_linecache, sys as _pmd_sys, traceback as _pmd_traceback
_PMD = _pmd_json.loads(__PAYLOAD__)


def _pmd_compile(name, source):
    _pmd_linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # tracebacks show source lines
    return compile(source, name, "exec")


def _pmd_emitter(nonce):
    """Marker lines for the judge. The nonce comes over stdin, not in this file, so a solution cannot simply read it
    from disk and print a fake verdict (in-process introspection could still find it: best effort)."""
    def emit(*parts):
        _pmd_sys.stdout.write("\n" + nonce + " " + " ".join(parts) + "\n")
        _pmd_sys.stdout.flush()
    return emit


_pmd_emit = _pmd_emitter(_pmd_sys.stdin.readline().strip()) if _PMD["mode"] != "stdin" else None


def _pmd_error(exc):
    """The traceback without this harness's own frames."""
    frames = [f for f in _pmd_traceback.extract_tb(exc.__traceback__) if f.filename != "main.py"]
    text = "Traceback (most recent call last):\n" if frames else ""
    text += "".join(_pmd_traceback.format_list(frames))
    return (text + "".join(_pmd_traceback.format_exception_only(type(exc), exc)))[-3000:]


def _pmd_run_functional(inputs):
    name, scope = _PMD["func_name"], globals()
    cls = scope.get("Solution")
    if isinstance(cls, type) and hasattr(cls, name):
        make = lambda: getattr(cls(), name)
    elif callable(scope.get(name)):
        make = lambda: scope[name]
    else:
        _pmd_emit("MISSING")
        return
    for i, raw in enumerate(inputs):
        _pmd_emit("START", str(i))
        try:
            args = [_pmd_json.loads(line) for line in raw.split("\n") if line.strip()]
            value = make()(*args)
            try:
                result = {"json": _pmd_json.dumps(value)}
            except (TypeError, ValueError):
                result = {"repr": repr(value)[:2000]}
        except BaseException as exc:
            result = {"error": _pmd_error(exc)}
        _pmd_emit("RESULT", str(i), _pmd_json.dumps(result))


def _pmd_explain(exc):
    """Which assert of check() failed, and (for `assert left == right`) what the left side evaluated to."""
    import ast
    frame, lineno = None, None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "test.py":
            frame, lineno = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    if frame is None:
        return {}
    line = _pmd_linecache.getline("test.py", lineno).strip()
    info = {"line": line}
    try:
        node = ast.parse(line).body[0]
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
                and isinstance(node.test.ops[0], ast.Eq):
            for key, expr in (("actual", node.test.left), ("expected", node.test.comparators[0])):
                value = eval(compile(ast.Expression(expr), "test.py", "eval"), frame.f_globals, frame.f_locals)
                info[key] = repr(value)[:2000]
    except BaseException:
        pass
    return info


def _pmd_run_humaneval():
    scope = globals()
    exec(_pmd_compile("test.py", _PMD["test"]), scope)
    if not callable(scope.get(_PMD["entry_point"])):
        _pmd_emit("MISSING")
        return
    try:
        scope["check"](scope[_PMD["entry_point"]])
    except AssertionError as exc:
        _pmd_emit("ASSERT", _pmd_json.dumps(_pmd_explain(exc)))
        raise
    _pmd_emit("PASSED")


_pmd_inputs = _pmd_json.loads(_pmd_sys.stdin.read()) if _PMD["mode"] == "functional" else None
try:
    exec(_PMD["header"], globals())
    exec(_pmd_compile("solution.py", _PMD["solution"]), globals())
    if _PMD["mode"] == "functional":
        _pmd_run_functional(_pmd_inputs)
    elif _PMD["mode"] == "humaneval":
        _pmd_run_humaneval()
except SystemExit:
    raise
except BaseException as _pmd_exc:
    _pmd_sys.stdout.flush()
    _pmd_sys.stderr.write(_pmd_error(_pmd_exc))
    _pmd_sys.stderr.flush()
    raise SystemExit(1)
'''


def program(mode: str, solution: str, header: str = "", **extra: str) -> str:
    """The sandbox program for one judging run: the harness with this run's payload filled in."""
    payload = {"mode": mode, "solution": solution, "header": header, **extra}
    return _HARNESS.replace("__PAYLOAD__", repr(json.dumps(payload)))


def markers(stdout: str, nonce: str) -> list[tuple[str, str]]:
    """The harness's (kind, rest) lines; the candidate's own prints lack the per-run nonce."""
    prefix = nonce + " "
    found = []
    for line in stdout.splitlines():
        if line.startswith(prefix):
            kind, _, rest = line[len(prefix):].partition(" ")
            found.append((kind, rest))
    return found
