"""Your own task: any local dataset `datasets` can read, scored by built-in verifiers and/or your reward functions.

`kind: dataset` reads JSONL, JSON, CSV or parquet files (or a folder of them) with `datasets.load_dataset`, or a
folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` with `datasets.load_from_disk`. A column holds
the prompt (plain text, or chat messages with at most one system turn and ending in one user turn), another the
reference answer; every column of a row is passed on to reward functions, as TRL passes dataset columns.

The reward is TRL's combination: the weighted sum of `rewards` (built-in verifiers from `verifiers.py`, functions
from `reward_functions.py`). Feedback starts with the verdict, like the built-in environments', because SDPO's and
PMD's teacher read it: a verifier's own feedback, a function's `(reward, feedback)` text, or a sentence saying which
check failed. The memory reads the structured outcome instead (`Verdict.extracted`, `Verdict.failure_kind`): a
verifier's own failure kind, "other" for a function's failed check (a function says no more than its score).

Bad input fails before anything is written: a missing file or column, a function that cannot be imported or does
not take TRL's arguments, and any reward that raises on the first rows (each reward is called once, on the first
two training rows with their reference answers as completions). A reward function that raises during training is
scored 0 for that batch, counted, and logged once per kind; with `strict: true` the run stops at the next
checkpoint instead (`stop_reason`). "Raises" includes `sys.exit()` and `GeneratorExit` (any BaseException but
KeyboardInterrupt, `reward_functions.user_code`): at the first rows they are one line and exit code 2, in training
a counted failure, never a quiet exit 0. Weights are > 0, and with verifiers alone `pass_threshold` must lie in
(0, sum of weights], so that "passed" (what the memory learns from as a success) keeps its meaning.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config_fields import _f
from ..errors import ConfigError, DatasetError
from ..prompts import ANSWER_INSTRUCTION
from . import reward_functions
from .reward_functions import describe, error_name
from .answer import extract_answer
from .base import Problem, Verdict
from .data import SplitParams, build_params, check_split, dedupe_and_split
from .dataset_files import load_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardSpec:
    """One term of the reward: a built-in verifier or your function, and its weight (TRL's reward_weights)."""

    verifier: str = _f("", "Built-in verifier: exact, numeric, mcq, regex or math (see pmd.envs.verifiers).")
    function: str = _f("", "Your reward function: 'module:function' or 'path/to/file.py:function'.")
    weight: float = _f(1.0, "Weight of this term in the reward (the weighted sum, as TRL combines reward_funcs).",
                       gt=0, expect="> 0 (a term that should not count: remove it; a penalty: return negative rewards)")
    params: dict[str, Any] = _f({}, "Options of the built-in verifier (e.g. {rel_tol: 1.0e-4} for numeric).")

    def __post_init__(self) -> None:
        if bool(self.verifier) == bool(self.function):
            raise ConfigError("give exactly one of verifier (built-in) or function (yours)")
        if self.function and self.params:
            raise ConfigError("params configure a built-in verifier; a function reads its options itself")

    @property
    def label(self) -> str:
        return self.verifier or self.function.rpartition(":")[2]


@dataclass(frozen=True)
class DatasetParams(SplitParams):
    """A `dataset` task's `params` (YAML `env.tasks[i].params`)."""

    path: str = _f("", "A JSONL/JSON/CSV/parquet file, a folder of them, or a save_to_disk folder.")
    split: str = _f("train", "Split to read when the path holds several (a DatasetDict saved to disk).")
    eval_path: str = _f("", "Held-out problems from this file/folder (default: eval_fraction of path, deduplicated).")
    eval_split: str = _f("", "Held-out problems from this split of path (e.g. 'test') instead of eval_fraction.")
    prompt: str = _f("question", "Column with the prompt: text, or chat messages ending in the user turn.")
    answer: str = _f("answer", "Column with the reference answer ('' = none: your functions judge alone).")
    rewards: list[RewardSpec] = _f([RewardSpec(verifier="exact")], "Terms of the reward (weighted sum).")
    answer_instruction: str | None = _f(None, "Appended to each question (null = env.answer_instruction; '' = none).")
    pass_threshold: float | None = _f(None, "Reward at which a response counts as passed (null = sum of weights).")
    strict: bool = _f(False, "A reward function that raises stops the run at the next checkpoint (else it scores 0).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise ConfigError("path: a dataset task needs the path of its data")
        if not self.rewards:
            raise ConfigError("rewards: give at least one verifier or function")
        if self.eval_path and self.eval_split:
            raise ConfigError("eval_path and eval_split: give one of them, not both")
        if any(r.verifier for r in self.rewards) and not self.answer:
            raise ConfigError("answer: built-in verifiers compare with the reference answer; name its column")
        problem = threshold_problem(self.pass_threshold, self.rewards)
        if problem:
            raise ConfigError(f"pass_threshold: {problem}")


def threshold_problem(threshold: float | None, rewards: Sequence[RewardSpec]) -> str | None:
    """Why `threshold` leaves "passed" without meaning, or None. Built-in verifiers score in [0, 1] and weights are
    > 0, so with verifiers alone the reward lies in [0, sum of weights]: a threshold <= 0 passes every reply, even
    one with no answer (what the memory then learns from as a success), and one above the sum passes none. A function
    may return any number, so where one takes part the threshold is the user's to choose."""
    if threshold is None or any(r.function for r in rewards):
        return None
    top = sum(r.weight for r in rewards)
    if threshold <= 0:
        return f"{threshold:g} passes every reply, even one with no answer (verifiers score 0 to 1); give a value in " \
               f"(0, {top:g}], or leave it unset (the sum of the weights)"
    if threshold > top + 1e-9:
        return f"{threshold:g} is above the highest reward the verifiers can give ({top:g}, the sum of the weights), " \
               "so no reply could pass; lower it or leave it unset"
    return None


@dataclass
class _Term:
    spec: RewardSpec
    judge: Callable[..., Any]  # a Verifier (response, reference) -> Verdict, or the user's function


class DatasetEnvironment:
    """Problems from your dataset, judged by your `rewards` (see the module docstring)."""

    def __init__(self, params: DatasetParams | None = None, /, *, reveal_answer_in_feedback: bool = False,
                 answer_instruction: str = ANSWER_INSTRUCTION, where: str = "dataset", **options: Any) -> None:
        self.params = params = build_params(DatasetParams, params, options, where)
        self.where = where
        self.name = params.name or Path(params.path).stem
        self.instruction = answer_instruction if params.answer_instruction is None else params.answer_instruction
        rows = load_rows(Path(params.path), params.split, f"{where}.params.path")
        if params.eval_path or params.eval_split:
            eval_rows = (load_rows(Path(params.eval_path), params.split, f"{where}.params.eval_path")
                         if params.eval_path else load_rows(Path(params.path), params.eval_split,
                                                            f"{where}.params.eval_split"))
            records = {"train": self._records(rows, params.path), "eval": self._records(eval_rows,
                                                                                        params.eval_path or params.path)}
            seen = {_key(r) for r in records["eval"]}
            records["train"] = [r for r in records["train"] if _key(r) not in seen]  # never train on held-out
            self._splits, self.duplicates_dropped = records, 0
        else:
            self._splits, self.duplicates_dropped = dedupe_and_split(
                self._records(rows, params.path), _key, params.eval_fraction, params.seed)
        if not self._splits["train"]:
            raise DatasetError(f"{params.path}: no training problems left after the held-out split")
        self.terms = [self._term(spec, i, reveal_answer_in_feedback) for i, spec in enumerate(params.rewards)]
        self.threshold = (params.pass_threshold if params.pass_threshold is not None
                          else sum(t.spec.weight for t in self.terms))
        self.failures: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self._check_first_rows()

    # ------------------------------------------------------------------------------------------ loading

    def _records(self, rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        p = self.params
        columns = set(rows[0]) if rows else set()
        for key, column in (("prompt", p.prompt), ("answer", p.answer)):
            if column and column not in columns:
                raise DatasetError(f"{source}: no column {column!r} (columns: {', '.join(sorted(columns))}); set "
                                   f"{self.where}.params.{key}")
        return [_record(row, p.prompt, p.answer, f"{source}: row {n}") for n, row in enumerate(rows, 1)]

    def _term(self, spec: RewardSpec, i: int, reveal: bool) -> _Term:
        where = f"{self.where}.params.rewards[{i}]"
        if spec.function:
            columns = sorted(self._splits["train"][0]["row"])
            clash = reward_functions.clashing_column(columns)
            if clash:
                raise DatasetError(f"{self.params.path}: column {clash!r} has the name of an argument TRL passes to "
                                   f"reward functions itself ({where}.function); rename the column")
            return _Term(spec, reward_functions.load_function(spec.function, f"{where}.function", columns))
        from .verifiers import make_verifier

        verifier = make_verifier(spec.verifier, {"reveal_answer_in_feedback": reveal, **spec.params}, where)
        for record in (r for split in self._splits.values() for r in split):
            problem = verifier.check_reference(record["answer"] or "")
            if problem:  # a row the verifier could never reward would silently train on 0s: say so now
                raise DatasetError(f"{record['where']}: {problem.removeprefix('Not graded: ')} "
                                   f"({where}: verifier {spec.verifier})")
        return _Term(spec, verifier)

    def _check_first_rows(self) -> None:
        """Call every reward once on the first training rows (their reference answers as completions), so a reward
        that cannot run fails now, in one line, and not hours into training."""
        problems = self.problems("train")[:2]
        responses = [f"Answer: {p.answer}" if p.answer is not None else "" for p in problems]
        for i, term in enumerate(self.terms):
            try:
                self._score(term, problems, responses, None, None)
            except Exception as exc:  # noqa: BLE001 - the user's code: any failure is a bad input
                raise DatasetError(f"{self.where}.params.rewards[{i}] ({term.spec.label}) failed on the first rows "
                                   f"of {self.params.path}: {describe(exc)}") from None

    # ------------------------------------------------------------------------------------------ Environment

    def problems(self, split: str) -> list[Problem]:
        check_split(split, self.name)
        return [
            Problem(uid=f"{self.name}/{split}/{self.params.seed}/{i}", family=self.name, question=r["question"],
                    answer=r["answer"], metadata={"row": r["row"], "system_prompt": r["system"]})
            for i, r in enumerate(self._splits[split][: self.params.max_problems])
        ]

    def format_prompt(self, problem: Problem) -> str:
        return f"{problem.question}\n{self.instruction}" if self.instruction else problem.question

    def verify(self, problem: Problem, response: str) -> Verdict:
        return self.verify_batch([problem], [response])[0]

    def verify_batch(self, problems: Sequence[Problem], responses: Sequence[str],
                     completion_ids: Sequence[Any] | None = None,
                     trl_kwargs: dict[str, Any] | None = None) -> list[Verdict]:
        """Score a batch with every term (your functions see the whole batch, as in TRL) and combine."""
        per_term = []
        for term in self.terms:
            try:
                per_term.append(self._score(term, problems, responses, completion_ids, trl_kwargs))
            except Exception as exc:  # noqa: BLE001 - the user's function failed on this batch
                per_term.append(self._failed(term, exc, len(responses)))
        return [self._combine([scores[k] for scores in per_term], responses[k]) for k in range(len(responses))]

    # ------------------------------------------------------------------------------------------ scoring

    def _score(self, term: _Term, problems: Sequence[Problem], responses: Sequence[str],
               completion_ids: Sequence[Any] | None, trl_kwargs: dict[str, Any] | None) -> list[Verdict]:
        if term.spec.verifier:
            return [term.judge(r, p.answer or "") for p, r in zip(problems, responses, strict=True)]
        prompts = [self.messages(p) for p in problems]
        columns = {c: [p.metadata["row"].get(c) for p in problems] for c in problems[0].metadata["row"]}
        scored = reward_functions.call(term.judge, prompts, list(responses), columns, completion_ids, trl_kwargs)
        return [_function_verdict(term.spec.label, s, r) for s, r in zip(scored, responses, strict=True)]

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """The student's prompt for this problem, as TRL passes `prompts` to reward functions."""
        from ..prompts import student_messages

        return student_messages(problem.metadata.get("system_prompt") or "", self.format_prompt(problem))

    def _failed(self, term: _Term, exc: Exception, n: int) -> list[Verdict]:
        kind = f"{term.spec.label}: {error_name(exc)}"
        if not self.failures[kind]:
            logger.warning("reward function %s raised %s (scored 0; later failures of this kind are counted, not "
                           "logged)", term.spec.label, describe(exc))
        self.failures[kind] += 1
        if self.params.strict and self.stop_reason is None:
            self.stop_reason = (f"{self.where}: reward function {term.spec.label} raised {describe(exc)} "
                                "(strict: true)")
        text = f"Not scored: the reward function {term.spec.label} failed on this batch."
        return [Verdict(reward=0.0, passed=False, feedback=text, failure_kind="other")] * n

    def _combine(self, verdicts: list[Verdict], response: str) -> Verdict:
        weights = [t.spec.weight for t in self.terms]
        reward = sum(w * v.reward for w, v in zip(weights, verdicts, strict=True))
        passed = reward >= self.threshold - 1e-9
        if len(verdicts) == 1:
            return replace(verdicts[0], reward=reward, passed=passed,
                           failure_kind=combined_failure_kind(passed, verdicts))
        # the worst-scoring failing term speaks first, in the feedback and in the failure kind
        ordered = sorted(verdicts, key=lambda v: (v.passed, v.reward))
        feedback = " ".join(v.feedback for v in ordered if v.feedback)
        first_verifier = next((v for t, v in zip(self.terms, verdicts) if t.spec.verifier), None)
        shown = first_verifier or _function_verdict("", reward_functions.Scored(reward), response)
        return Verdict(reward=reward, passed=passed, feedback=feedback, extracted=shown.extracted,
                       format_ok=shown.format_ok, failure_kind=combined_failure_kind(passed, ordered),
                       details={"lenient_correct": shown.details.get("lenient_correct", passed),
                                "terms": {t.spec.label: v.reward for t, v in zip(self.terms, verdicts)}})


def combined_failure_kind(passed: bool, verdicts: Sequence[Verdict]) -> str:
    """The failure kind of a combined verdict: "" when it passed, else that of the first failing term in `verdicts`
    (ordered worst first), else "other" (every term passed on its own, yet the weighted sum missed the threshold)."""
    if passed:
        return ""
    return next((v.failure_kind or "other" for v in verdicts if not v.passed), "other")


def _function_verdict(label: str, scored: reward_functions.Scored, response: str) -> Verdict:
    """A function's score as a Verdict: its own feedback if it gave one, else a verdict-first sentence."""
    passed = scored.reward >= 1.0
    feedback = scored.feedback or (f"Passed {label}." if passed else
                                   f"Failed check {label}: it scored {scored.reward:g} of 1.")
    ext = extract_answer(response)
    return Verdict(reward=scored.reward, passed=passed, feedback=feedback, extracted=ext.strict,
                   format_ok=ext.strict is not None, details={"lenient_correct": passed},
                   failure_kind="" if passed else "other")


def _key(record: dict[str, Any]) -> tuple[str, str]:
    return (" ".join(record["question"].split()).lower(), record["system"] or "")


def _record(row: dict[str, Any], prompt_col: str, answer_col: str, where: str) -> dict[str, Any]:
    question, system = _prompt(row.get(prompt_col), where, prompt_col)
    answer = None
    if answer_col:
        value = row.get(answer_col)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DatasetError(f"{where}: empty {answer_col!r}")
        answer = str(value)
    return {"question": question, "system": system, "answer": answer, "row": row, "where": where}


def _prompt(value: Any, where: str, column: str) -> tuple[str, str | None]:
    """(question, system prompt) from a text prompt or chat messages (optional system turn, then one user turn)."""
    if isinstance(value, str):
        if not value.strip():
            raise DatasetError(f"{where}: empty {column!r}")
        return value, None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        roles = [m.get("role") for m in value]
        if roles not in (["user"], ["system", "user"]):
            raise DatasetError(f"{where}: {column!r} holds chat turns {roles}; supported: an optional system turn, "
                               "then one user turn")
        text = value[-1].get("content")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{where}: the user turn of {column!r} has no text content")
        return text, (value[0].get("content") or None) if roles[0] == "system" else None
    raise DatasetError(f"{where}: {column!r} must be text or chat messages, got {type(value).__name__}")
