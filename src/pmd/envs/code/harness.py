"""The programs that run inside the sandbox for one judging run, and how the judge reads what they print.

Stdin and functional problems: one sandboxed process runs the candidate; its payload carries the candidate and
never an expected output (stdin problems get the test input on stdin; functional ones get the inputs as JSON on
stdin and report each return value as JSON). The judge compares in its own process. Marker lines carry a per-run
nonce sent over stdin, but the nonce is readable inside the sandbox, so the judge treats them as untrusted: all
they can claim is a return value, which the judge checks against outputs the sandbox never saw.

HumanEval: two sandboxed processes, each under its own uid and namespaces, joined only by two pipes.
  * `serve_program` loads the candidate and answers calls: it reads (args, kwargs) as Python literals, calls the
    entry point and writes back `repr(value)` (or the traceback). It has no test code, no verdict and no marker.
  * `check_program` holds the dataset's prompt (for helpers such as `poly`) and `check()`, and no candidate code.
    `check(candidate)` gets a proxy that sends the arguments over the pipe and decodes the reply with a small
    literal-only parser (`_pmd_literal`), so a return value is always a plain int/float/str/list/... built here:
    an object that "equals everything" arrives as an unparsable repr and fails. Printing a fake PASSED, calling
    os._exit(0) or rebinding harness functions in the candidate's process touches nothing the verdict depends on.
A candidate that returns a non-literal (a generator, a custom class) therefore fails even where HumanEval's own
in-process harness might have passed it; HumanEval's tests compare plain values, so this costs nothing there.
"""


from __future__ import annotations

import json

__all__ = ["LCB_HEADER", "check_program", "markers", "program", "serve_program"]

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


_pmd_inputs = _pmd_json.loads(_pmd_sys.stdin.read()) if _PMD["mode"] == "functional" else None
try:
    exec(_PMD["header"], globals())
    exec(_pmd_compile("solution.py", _PMD["solution"]), globals())
    if _PMD["mode"] == "functional":
        _pmd_run_functional(_pmd_inputs)
except SystemExit:
    raise
except BaseException as _pmd_exc:
    _pmd_sys.stdout.flush()
    _pmd_sys.stderr.write(_pmd_error(_pmd_exc))
    _pmd_sys.stderr.flush()
    raise SystemExit(1)
'''


# Wire format between the two HumanEval processes: "<length>\n<JSON>" messages; values travel as Python literal
# text and are rebuilt with _pmd_literal, which accepts literals only (no names but nan/inf, no calls but set()).
_PROTOCOL = r'''
import ast as _pmd_ast, json as _pmd_json, os as _pmd_os, sys as _pmd_sys, traceback as _pmd_traceback
_PMD_MAX_MESSAGE = 1 << 24


def _pmd_send(fd, obj):
    data = _pmd_json.dumps(obj).encode()
    data = b"%d\n" % len(data) + data
    while data:
        data = data[_pmd_os.write(fd, data):]


def _pmd_recv(stream):
    """The next message, or None at end of stream; ValueError for anything malformed or oversized."""
    header = stream.readline(32)
    if not header:
        return None
    size = int(header)
    if not 0 <= size <= _PMD_MAX_MESSAGE:
        raise ValueError("message of %d bytes" % size)
    data = stream.read(size)
    if len(data) < size:
        return None
    return _pmd_json.loads(data)


def _pmd_literal(text):
    """A plain value from its repr: constants, tuples, lists, dicts, sets, signs, complex sums, nan and inf."""
    def build(node, depth):
        if depth > 200:
            raise ValueError("nested too deeply")
        if isinstance(node, _pmd_ast.Constant):
            return node.value
        if isinstance(node, (_pmd_ast.Tuple, _pmd_ast.List, _pmd_ast.Set)):
            items = [build(e, depth + 1) for e in node.elts]
            return tuple(items) if isinstance(node, _pmd_ast.Tuple) else set(items) \
                if isinstance(node, _pmd_ast.Set) else items
        if isinstance(node, _pmd_ast.Dict) and None not in node.keys:
            return {build(k, depth + 1): build(v, depth + 1) for k, v in zip(node.keys, node.values)}
        if isinstance(node, _pmd_ast.UnaryOp) and isinstance(node.op, (_pmd_ast.USub, _pmd_ast.UAdd)):
            value = build(node.operand, depth + 1)
            if type(value) in (int, float, complex):
                return -value if isinstance(node.op, _pmd_ast.USub) else value
        if isinstance(node, _pmd_ast.BinOp) and isinstance(node.op, (_pmd_ast.Add, _pmd_ast.Sub)):
            left, right = build(node.left, depth + 1), build(node.right, depth + 1)
            if type(left) in (int, float) and type(right) is complex:
                return left + right if isinstance(node.op, _pmd_ast.Add) else left - right
        if isinstance(node, _pmd_ast.Name) and node.id in ("nan", "inf"):
            return float(node.id)
        if isinstance(node, _pmd_ast.Call) and isinstance(node.func, _pmd_ast.Name) and not node.keywords \
                and node.func.id in ("set", "frozenset") and len(node.args) <= 1:
            items = build(node.args[0], depth + 1) if node.args else ()
            return (set if node.func.id == "set" else frozenset)(items)
        raise ValueError("not a plain literal")
    return build(_pmd_ast.parse(text.strip(), mode="eval").body, 0)


def _pmd_error(exc):
    """The traceback without the harness's own frames."""
    frames = [f for f in _pmd_traceback.extract_tb(exc.__traceback__) if f.filename != "main.py"]
    text = "Traceback (most recent call last):\n" if frames else ""
    text += "".join(_pmd_traceback.format_list(frames))
    return (text + "".join(_pmd_traceback.format_exception_only(type(exc), exc)))[-3000:]
'''

# The candidate's process: load the solution, then answer calls until the checker closes the pipe.
_SERVE = r'''
import linecache as _pmd_linecache
_PMD = _pmd_json.loads(__PAYLOAD__)
_pmd_out = _PMD["wfd"]
_pmd_in = _pmd_os.fdopen(_PMD["rfd"], "rb")


def _pmd_load():
    source = _PMD["solution"]
    _pmd_linecache.cache["solution.py"] = (len(source), None, source.splitlines(True), "solution.py")
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), scope)
    return scope.get(_PMD["entry_point"])


try:
    _pmd_candidate = _pmd_load()
except SystemExit:
    raise
except BaseException as _pmd_exc:
    _pmd_sys.stderr.write(_pmd_error(_pmd_exc))
    raise SystemExit(1)
_pmd_send(_pmd_out, {"ready": callable(_pmd_candidate)})
while True:
    _pmd_call = _pmd_recv(_pmd_in)
    if _pmd_call is None:
        break
    try:
        _pmd_value = _pmd_candidate(*_pmd_literal(_pmd_call["args"]), **_pmd_literal(_pmd_call["kwargs"]))
        _pmd_reply = {"repr": repr(_pmd_value)}
    except BaseException as _pmd_exc:
        _pmd_reply = {"error": _pmd_error(_pmd_exc)}
    _pmd_send(_pmd_out, _pmd_reply)
'''

# The trusted checker's process: dataset code only (prompt helpers and check()), calling the candidate by proxy.
_CHECK = r'''
import linecache as _pmd_linecache
_PMD = _pmd_json.loads(__PAYLOAD__)
_pmd_nonce = _pmd_sys.stdin.readline().strip()
_pmd_out = _PMD["wfd"]
_pmd_in = _pmd_os.fdopen(_PMD["rfd"], "rb")


def _pmd_emit(*parts):
    _pmd_sys.stdout.write("\n" + _pmd_nonce + " " + " ".join(parts) + "\n")
    _pmd_sys.stdout.flush()


class _PmdCandidateFailed(BaseException):
    """The candidate's process ended, or replied with something that is not a plain value. A BaseException, so that
    a test's `except Exception` cannot swallow it."""


class CandidateError(Exception):
    """The candidate raised; the message is its traceback (from the candidate's process)."""


def _pmd_reply():
    try:
        message = _pmd_recv(_pmd_in)
    except ValueError as exc:
        _pmd_emit("BADREPLY", _pmd_json.dumps(str(exc)[:300]))
        raise _PmdCandidateFailed("malformed reply")
    if message is None:
        _pmd_emit("GONE")
        raise _PmdCandidateFailed("the candidate's process ended")
    if not isinstance(message, dict):
        _pmd_emit("BADREPLY", _pmd_json.dumps("not an object"))
        raise _PmdCandidateFailed("malformed reply")
    return message


def candidate(*args, **kwargs):
    _pmd_send(_pmd_out, {"args": repr(args), "kwargs": repr(kwargs)})
    reply = _pmd_reply()
    if "error" in reply:
        _pmd_emit("RAISED", _pmd_json.dumps(str(reply["error"])[-3000:]))
        raise CandidateError(str(reply["error"]))
    text = str(reply.get("repr"))
    try:
        return _pmd_literal(text)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        _pmd_emit("NOTLITERAL", _pmd_json.dumps(text[:300]))
        raise _PmdCandidateFailed("not a plain value")


def _pmd_compile(name, source):
    _pmd_linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    return compile(source, name, "exec")


def _pmd_explain(exc):
    """Which assert of check() failed, and (for `assert left == right`) what the left side evaluated to."""
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
        node = _pmd_ast.parse(line).body[0]
        if isinstance(node, _pmd_ast.Assert) and isinstance(node.test, _pmd_ast.Compare) \
                and len(node.test.ops) == 1 and isinstance(node.test.ops[0], _pmd_ast.Eq):
            for key, expr in (("actual", node.test.left), ("expected", node.test.comparators[0])):
                value = eval(compile(_pmd_ast.Expression(expr), "test.py", "eval"), frame.f_globals, frame.f_locals)
                info[key] = repr(value)[:2000]
    except BaseException:
        pass
    return info


def _pmd_main():
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(_pmd_compile("prompt.py", _PMD["prompt"]), scope)  # helpers the tests call (poly, encode_cyclic, ...)
    except Exception:
        pass
    scope[_PMD["entry_point"]] = candidate
    exec(_pmd_compile("test.py", _PMD["test"]), scope)
    hello = _pmd_reply()
    if not hello.get("ready"):
        _pmd_emit("MISSING")
        return
    try:
        scope["check"](candidate)
    except AssertionError as exc:
        _pmd_emit("ASSERT", _pmd_json.dumps(_pmd_explain(exc)))
        raise
    _pmd_emit("PASSED")


_pmd_main()
'''


def serve_program(solution: str, entry_point: str, rfd: int, wfd: int) -> str:
    """The candidate's side of a HumanEval run: reads calls on `rfd`, writes replies on `wfd`."""
    payload = {"solution": solution, "entry_point": entry_point, "rfd": rfd, "wfd": wfd}
    return _PROTOCOL + _SERVE.replace("__PAYLOAD__", repr(json.dumps(payload)))


def check_program(test: str, entry_point: str, prompt: str, rfd: int, wfd: int) -> str:
    """The checker's side of a HumanEval run (no candidate code in it): verdict markers on stdout."""
    payload = {"test": test, "entry_point": entry_point, "prompt": prompt, "rfd": rfd, "wfd": wfd}
    return _PROTOCOL + _CHECK.replace("__PAYLOAD__", repr(json.dumps(payload)))


def program(mode: str, solution: str, header: str = "", **extra: str) -> str:
    """The sandbox program for a stdin or functional run: the harness with this run's payload filled in."""
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
