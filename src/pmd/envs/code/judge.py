"""The judge of the code environment: run a compiled candidate against a problem's tests in the sandbox and turn
the outcomes into a verdict, the way an online judge reports them (first failure first, with its input).

Expected outputs never enter the candidate's sandbox: stdin and functional outputs are compared here, in the
judge's process, and HumanEval's `check()` runs in a second sandbox with no candidate code, calling the candidate
through a pipe that carries plain values only (see harness). The candidate's private world (`sandbox`) holds no
dataset file either, so there is nothing to find by globbing. Threat model: `sandbox`'s docstring.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from .sandbox import SandboxLimits, SandboxResult, run_python
from ..base import Verdict
from ..data import clip
from . import harness
from .compare import outputs_match, values_match

__all__ = ["Judge", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """How one test (or a HumanEval check) went; `message` is the judge's text for it."""

    status: str  # passed | wrong_answer | runtime_error | time_limit | memory_limit | output_limit | not_run
    message: str = ""


@dataclass(frozen=True)
class Judge:
    """Runs tests under `limits`; `reward="all"` pays 1 only when every test passes (and stops a stdin run at the
    first failure), `"fraction"` pays the passed share."""

    limits: SandboxLimits
    reward: Literal["all", "fraction"] = "all"

    def run(self, source: str, meta: dict[str, Any]) -> list[Outcome]:
        """One outcome per test of the problem (`meta` is its metadata); tests after a failure may be "not_run"."""
        if meta["kind"] == "humaneval":
            return [self._run_humaneval(source, meta)]
        if meta["kind"] == "functional":
            return self._run_functional(source, meta)
        return self._run_stdin(source, meta)

    def _run_stdin(self, source: str, meta: dict[str, Any]) -> list[Outcome]:
        program = harness.program("stdin", source, header=harness.LCB_HEADER)
        tests = meta["tests"]
        outcomes: list[Outcome] = []
        for i, test in enumerate(tests):
            result = run_python(program, stdin=test["input"], limits=self.limits)
            where = f"on test {i + 1}/{len(tests)}"
            outcome = _limit_outcome(result, where, test["input"], self.limits)
            if outcome is None and result.returncode != 0:
                outcome = _crash(result, where, test["input"])
            if outcome is None:
                if outputs_match(result.stdout, test["output"]):
                    outcome = Outcome("passed")
                else:
                    outcome = Outcome("wrong_answer", f"Wrong answer {where}.\nInput:\n{clip(test['input'])}\n"
                                       f"Expected output:\n{clip(test['output'])}\n"
                                       f"Your output:\n{clip(result.stdout)}")
            outcomes.append(outcome)
            if outcome.status != "passed" and self.reward == "all":
                break
        return outcomes + [Outcome("not_run")] * (len(tests) - len(outcomes))

    def _run_functional(self, source: str, meta: dict[str, Any]) -> list[Outcome]:
        nonce = secrets.token_hex(8)
        tests = meta["tests"]
        program = harness.program("functional", source, header=harness.LCB_HEADER, func_name=meta["func_name"])
        stdin = nonce + "\n" + json.dumps([t["input"] for t in tests])
        result = run_python(program, stdin=stdin, limits=self.limits)
        markers = harness.markers(result.stdout, nonce)
        if ("MISSING", "") in markers:
            missing = Outcome("runtime_error", f"No callable `{meta['func_name']}` found: keep the starter code's "
                                                f"class Solution and method `{meta['func_name']}`.")
            return [missing] + [Outcome("not_run")] * (len(tests) - 1)
        results: dict[int, dict[str, Any]] = {}
        started: list[int] = []
        for kind, rest in markers:  # the nonce is readable inside the sandbox: treat these lines as untrusted
            index, _, payload = rest.partition(" ")
            try:
                if kind == "RESULT":
                    results[int(index)] = dict(json.loads(payload))
                elif kind == "START":
                    started.append(int(index))
            except Exception:  # noqa: BLE001 - anything a forged line raises (RecursionError, MemoryError) is noise
                continue
        outcomes: list[Outcome] = []
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
                outcomes.append(Outcome("not_run"))
        return outcomes

    def _run_humaneval(self, source: str, meta: dict[str, Any]) -> Outcome:
        """The candidate and check() in two sandboxes joined by pipes (see harness): only plain values cross."""
        nonce = secrets.token_hex(8)
        calls_r, calls_w = os.pipe()
        replies_r, replies_w = os.pipe()
        serve = harness.serve_program(source, meta["entry_point"], rfd=calls_r, wfd=replies_w)
        check = harness.check_program(meta["test"], meta["entry_point"], meta.get("prompt") or "",
                                      rfd=replies_r, wfd=calls_w)
        with ThreadPoolExecutor(1) as pool:
            served = pool.submit(run_python, serve, "", self.limits, (calls_r, replies_w))
            try:
                checked = run_python(check, nonce + "\n", self.limits, (replies_r, calls_w))
            finally:
                solution = served.result()
        return _humaneval_outcome(checked, solution, harness.markers(checked.stdout, nonce), meta, self.limits)

    def verdict(self, outcomes: list[Outcome], code: str, how: str, details: dict[str, Any]) -> Verdict:
        """Reward and feedback from the outcomes: the first failure's message leads (the reflector keys on it)."""
        total = len(outcomes)
        passed = sum(o.status == "passed" for o in outcomes)
        failures = [(i, o) for i, o in enumerate(outcomes) if o.status not in ("passed", "not_run")]
        all_passed = passed == total and total > 0
        reward = float(all_passed) if self.reward == "all" else passed / total if total else 0.0
        if all_passed:
            feedback = f"Accepted: all {total} test{'s' if total != 1 else ''} passed."
            status, failed = "passed", None
        else:
            failed, first = failures[0] if failures else (None, Outcome("not_run", "No test was run."))
            status = first.status
            feedback = first.message
            if self.reward == "fraction":
                feedback = f"{feedback}\n(Passed {passed}/{total} tests.)"  # failure first: the reflector keys on it
        return Verdict(reward, all_passed, feedback, extracted=code, format_ok=how == "python_fence",
                       details={**details, "status": status, "passed_tests": passed, "total_tests": total,
                                "failed_test": failed})


# ---- reading outcomes ----

def _humaneval_outcome(checked: SandboxResult, solution: SandboxResult, markers: list[tuple[str, str]],
                       meta: dict[str, Any], limits: SandboxLimits) -> Outcome:
    """Verdict from the checker's markers (a process with no candidate code) and the candidate's process result."""
    kinds = {kind for kind, _ in markers}
    if "PASSED" in kinds and checked.ok:
        return Outcome("passed")
    if "MISSING" in kinds:
        return Outcome("runtime_error", f"No function `{meta['entry_point']}` is defined.")
    where = "while running the tests"
    limit = _limit_outcome(solution, where, None, limits) or _limit_outcome(checked, where, None, limits)
    if limit is not None:
        return limit
    last = {kind: rest for kind, rest in markers}
    if "ASSERT" in last:
        try:
            info = {k: str(v) for k, v in dict(json.loads(last["ASSERT"])).items()}
        except Exception:  # noqa: BLE001 - only an explanation; the verdict stands without it
            info = {}
        message = "Wrong answer: a test assertion failed."
        if info.get("line"):
            message += f"\nFailing check: {clip(info['line'])}"
        if "expected" in info:
            message += f"\nExpected: {clip(info['expected'])}\nYour result: {clip(info['actual'])}"
        return Outcome("wrong_answer", message)
    if "RAISED" in last:
        try:
            error = str(json.loads(last["RAISED"]))
        except Exception:  # noqa: BLE001 - only an explanation; the verdict stands without it
            error = ""
        return Outcome("runtime_error", f"Runtime error {where}.\n{_traceback_tail(error)}".rstrip())
    if "NOTLITERAL" in last:
        return Outcome("wrong_answer", "Wrong answer: the function returned a value that is not a plain Python value "
                                       f"(int, float, str, list, tuple, dict, set, bool, None): {clip(last['NOTLITERAL'])}")
    if "GONE" in last or "BADREPLY" in last or not markers:
        if solution.returncode != 0:
            return _crash(solution, where, None)
        return Outcome("runtime_error", "The program exited before the tests finished (e.g. exit() or sys.exit() "
                                         "was called).")
    return _crash(checked, where, None)


def _limit_outcome(result: SandboxResult, where: str, test_input: str | None, limits: SandboxLimits) -> Outcome | None:
    """Time, output and memory limits, judged before looking at the output."""
    shown = f"\nInput:\n{clip(test_input)}" if test_input is not None else ""
    if result.timed_out or result.cpu_exceeded:
        return Outcome("time_limit", f"Time limit exceeded {where} (limits: {limits.cpu_seconds:g} s CPU, "
                                      f"{limits.wall_seconds:g} s wall).{shown}")
    if result.output_truncated:
        return Outcome("output_limit", f"Output limit exceeded {where}: more than {limits.max_output_bytes} "
                                        f"bytes printed.{shown}")
    if result.memory_exceeded:
        return Outcome("memory_limit", f"Memory limit exceeded {where} ({limits.memory_mb} MB).{shown}")
    return None


def _crash(result: SandboxResult, where: str, test_input: str | None) -> Outcome:
    shown = f"\nInput:\n{clip(test_input)}" if test_input is not None else ""
    if result.status_error is not None:
        return Outcome("runtime_error", f"Runtime error {where}: the run's exit status was lost "
                                         f"({result.status_error}).{shown}")
    if result.killed_by_signal is not None:
        try:
            name = signal.Signals(result.killed_by_signal).name
        except ValueError:
            name = str(result.killed_by_signal)
        return Outcome("runtime_error", f"Runtime error {where}: killed by signal {name}.{shown}\n"
                                         f"{_traceback_tail(result.stderr)}".rstrip())
    return Outcome("runtime_error", f"Runtime error {where} (exit code {result.returncode}).{shown}\n"
                                     f"{_traceback_tail(result.stderr)}".rstrip())


def _functional_outcome(result: dict[str, Any], test: dict[str, str], where: str) -> Outcome:
    shown = f"Input:\n{clip(test['input'])}"
    if "error" in result:
        return Outcome("runtime_error", f"Runtime error {where}.\n{shown}\n{_traceback_tail(str(result['error']))}")
    if "json" in result:
        actual_text = str(result["json"])
        try:
            if values_match(json.loads(actual_text), json.loads(test["output"])):
                return Outcome("passed")
        except Exception:  # noqa: BLE001 - a value the judge cannot read (too deep, too long) is not the answer
            pass
    else:
        actual_text = str(result.get("repr", "?")) + "  (not JSON-serialisable)"
    return Outcome("wrong_answer", f"Wrong answer {where}.\n{shown}\nExpected: {clip(test['output'])}\n"
                                    f"Your result: {clip(actual_text)}")


def _traceback_tail(stderr: str, lines: int = 8) -> str:
    tail = [line for line in stderr.rstrip().splitlines() if line.strip()][-lines:]
    return clip("\n".join(tail), 1200) if tail else ""
