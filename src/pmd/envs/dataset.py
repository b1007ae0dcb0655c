"""Your own task: any local dataset `datasets` can read, scored by built-in verifiers and/or your reward functions.

`kind: dataset` reads JSONL, JSON, CSV or parquet files (or a folder of them) with `datasets.load_dataset`, or a
folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` with `datasets.load_from_disk`. A column holds
the prompt (plain text, or chat messages with at most one system turn and ending in one user turn), another the
reference answer; every column of a row is passed on to reward functions, as TRL passes dataset columns. The
prompt is used verbatim: the student sees the row's own turns through the chat template (a text prompt as one user
turn), and nothing is added unless `answer_instruction` says what (reasoning-gym tasks, whose questions do not state
an answer format, get env.answer_instruction; a row of yours may already state one, in its system turn or its text).
Reward functions get `prompts` and `completions` in the row's own form, as TRL passes them (reward_functions.py).

The reward is TRL's combination: the weighted sum of `rewards` (built-in verifiers from `verifiers.py`, functions
from `reward_functions.py`). Feedback starts with the verdict, like the built-in environments', because SDPO's and
PMD's teacher read it: a verifier's own feedback, a function's `(reward, feedback)` text, or a sentence saying which
check failed. The memory reads the structured outcome instead (`Verdict.extracted`, `Verdict.failure_kind`): a
verifier's own failure kind, "other" for a function's failed check (a function says no more than its score).
Each verdict keeps every term's unweighted score by the term's name (its function's or verifier's, made unique;
`details["terms"]`), which the step logs as TRL logs a reward function: `rewards/<name>/mean` and `/std`.

Bad input fails before anything is written: a missing file or column, a function that cannot be imported or does
not take TRL's arguments, and any reward that raises on the first rows (each reward is called once, on the first
two training rows with their reference answers as completions). A reward function that raises during training is
scored 0 for that batch, counted, and logged once per kind; with `strict: true` the run stops at the next
checkpoint instead (`stop_reason`). "Raises" includes `sys.exit()` and `GeneratorExit` (any BaseException but
KeyboardInterrupt, `reward_functions.user_code`): at the first rows they are one line and exit code 2, in training
a counted failure, never a quiet exit 0. Weights are > 0, and with verifiers alone `pass_threshold` must lie in
(0, sum of weights], so that "passed" (what the memory learns from as a success) keeps its meaning.

The first-rows call also measures what is reachable (`Reachable`): each term's highest score on those reference
replies, weighted and summed. A `pass_threshold` above it (and, in preflight, a `train.success_reward_threshold`
above it) would leave "passed" or SDPO's successes empty for the whole run, which showed only as an accuracy of 0.
With verifiers alone the total is the true maximum (a verifier scores at most 1, and the reference gets it), so the
threshold is refused; with a function it is only what the reference scored (a format or length reward may score a
real reply higher), so it is a warning naming the numbers and the setting that would fix it. A task without
reference answers measures nothing (an empty reply tells nothing of what a reply can reach).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config_fields import _f
from ..errors import ConfigError, DatasetError
from . import reward_functions
from .reward_functions import describe, error_name, trl_form
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
    answer_instruction: str = _f("", "Text added on a new line after each prompt's user turn ('' = the prompt "
                                     "verbatim; e.g. \"Give the final result on a line 'Answer: <answer>'.\").")
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
    name: str = ""  # the label, made unique within the task: `rewards/<name>/mean` in the logs, as TRL names them


@dataclass(frozen=True)
class Reachable:
    """The highest score each term gave the first training rows' reference replies (by term name, unweighted), and
    whether that is the true maximum (`exact`: every term a built-in verifier, which scores at most 1)."""

    scores: dict[str, float]
    weights: dict[str, float]
    exact: bool

    @property
    def total(self) -> float:
        return sum(self.weights[k] * v for k, v in self.scores.items())

    def shown(self) -> str:
        return " + ".join(f"{self.weights[k]:g} x {k} {v:g}" for k, v in self.scores.items())


def check_reachable(threshold: float, setting: str, meaning: str, reachable: Reachable, where: str) -> None:
    """Refuse (ConfigError) or warn when `threshold` is above the reward the first rows' reference replies reach:
    refuse where every term is a verifier (nothing can score higher), warn where a function takes part (a real reply
    may score higher than the reference). `setting` is the key to change, `meaning` what the threshold decides."""
    total = reachable.total
    if threshold <= total + 1e-9:
        return
    text = (f"{setting} {threshold:g} ({meaning}) is above the highest reward that {where}'s reference answers reach "
            f"on its first rows, {total:g} = {reachable.shown()}")
    if reachable.exact:
        raise ConfigError(f"{text}; no reply can reach it: set {setting}: {total:g} (or lower)")
    fix = f"set {setting}: {total:g}" if total > 0 else f"set {setting} to what your functions give a good reply"
    logger.warning("%s; unless your functions score real replies higher than the reference answers, no reply will "
                   "reach it: %s", text, fix)


def _unique_names(labels: Sequence[str]) -> list[str]:
    """Term labels made unique (two `numeric` terms: numeric_1, numeric_2), and never TRL's own `env_reward`."""
    counts = Counter(labels)
    seen: Counter[str] = Counter()
    out = []
    for label in labels:
        if counts[label] > 1 or label == "env_reward":
            seen[label] += 1
            label = f"{label}_{seen[label]}"
        out.append(label)
    return out


class DatasetEnvironment:
    """Problems from your dataset, judged by your `rewards` (see the module docstring)."""

    def __init__(self, params: DatasetParams | None = None, /, *, reveal_answer_in_feedback: bool = False,
                 where: str = "dataset", **options: Any) -> None:
        self.params = params = build_params(DatasetParams, params, options, where)
        self.where = where
        self.name = params.name or Path(params.path).stem
        self.instruction = params.answer_instruction
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
        for term, name in zip(self.terms, _unique_names([t.spec.label for t in self.terms]), strict=True):
            term.name = name
        self.threshold = (params.pass_threshold if params.pass_threshold is not None
                          else sum(t.spec.weight for t in self.terms))
        self.failures: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self.reachable: Reachable | None = None  # _check_first_rows: the reward the reference answers reach
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
        that cannot run fails now, in one line, and not hours into training; a function's error says in which form
        TRL's arguments came (a TypeError on a string or a list is otherwise a puzzle). What the terms score there is
        the reachable reward, against which `pass_threshold` is checked (module docstring)."""
        problems = self.problems("train")[:2]
        responses = [f"Answer: {p.answer}" if p.answer is not None else "" for p in problems]
        scores = {}
        for i, term in enumerate(self.terms):
            try:
                verdicts = self._score(term, problems, responses, None, None)
            except Exception as exc:  # noqa: BLE001 - the user's code: any failure is a bad input
                called = (f" (called as TRL calls it: {trl_form(self.params.prompt, _conversational(problems[0]))})"
                          if term.spec.function else "")
                raise DatasetError(f"{self.where}.params.rewards[{i}] ({term.spec.label}) failed on the first rows "
                                   f"of {self.params.path}: {describe(exc)}{called}") from None
            scores[term.name] = max(v.reward for v in verdicts)
        if not self.params.answer:  # no reference answer: an empty reply says nothing of what can be reached
            self.reachable = None
            return
        self.reachable = Reachable(scores, {t.name: t.spec.weight for t in self.terms},
                                   exact=not any(t.spec.function for t in self.terms))
        unset = "; unset, so the sum of the weights" if self.params.pass_threshold is None else ""
        check_reachable(self.threshold, f"{self.where}.params.pass_threshold",
                        f"the reward at which a reply passes{unset}", self.reachable, self.name)

    # ------------------------------------------------------------------------------------------ Environment

    def problems(self, split: str) -> list[Problem]:
        check_split(split, self.name)
        return [
            Problem(uid=f"{self.name}/{split}/{self.params.seed}/{i}", family=self.name, question=r["question"],
                    answer=r["answer"], metadata={"row": r["row"], "system_prompt": r["system"],
                                                  "conversational": r["conversational"]})
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
        prompts = [self.trl_prompt(p) for p in problems]
        columns = {c: [p.metadata["row"].get(c) for p in problems] for c in problems[0].metadata["row"]}
        scored = reward_functions.call(term.judge, prompts, list(responses), columns, completion_ids, trl_kwargs,
                                       [_conversational(p) for p in problems])
        return [_function_verdict(term.name, s, r) for s, r in zip(scored, responses, strict=True)]

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """The student's chat turns for this problem from its row (the row's system turn, the user turn)."""
        from ..prompts import student_messages

        return student_messages(problem.metadata.get("system_prompt") or "", self.format_prompt(problem))

    def trl_prompt(self, problem: Problem) -> str | list[dict[str, Any]]:
        """The prompt as TRL passes `prompts` to reward functions: the row's own form, a string for a text prompt,
        its chat messages for a conversational one (with `answer_instruction` added where the student sees it)."""
        if not _conversational(problem):
            return self.format_prompt(problem)
        turns = copy.deepcopy(problem.metadata["row"][self.params.prompt])
        turns[-1]["content"] = self.format_prompt(problem)
        return turns

    def _failed(self, term: _Term, exc: Exception, n: int) -> list[Verdict]:
        kind = f"{term.name}: {error_name(exc)}"
        if not self.failures[kind]:
            logger.warning("reward function %s raised %s (scored 0; later failures of this kind are counted, not "
                           "logged)", term.name, describe(exc))
        self.failures[kind] += 1
        if self.params.strict and self.stop_reason is None:
            self.stop_reason = (f"{self.where}: reward function {term.name} raised {describe(exc)} "
                                "(strict: true)")
        text = f"Not scored: the reward function {term.name} failed on this batch."
        return [Verdict(reward=0.0, passed=False, feedback=text, failure_kind="other")] * n

    def _combine(self, verdicts: list[Verdict], response: str) -> Verdict:
        weights = [t.spec.weight for t in self.terms]
        reward = sum(w * v.reward for w, v in zip(weights, verdicts, strict=True))
        passed = reward >= self.threshold - 1e-9
        terms = {t.name: v.reward for t, v in zip(self.terms, verdicts)}  # unweighted, as TRL logs rewards/<name>
        first_verifier = next((v for t, v in zip(self.terms, verdicts) if t.spec.verifier), None)
        # right answer, format aside: the verifier's own reading; with functions alone, passed (never below it)
        lenient = first_verifier.details.get("lenient_correct", passed) if first_verifier else passed
        if len(verdicts) == 1:
            return replace(verdicts[0], reward=reward, passed=passed,
                           failure_kind=combined_failure_kind(passed, verdicts),
                           details={**verdicts[0].details, "lenient_correct": lenient, "terms": terms})
        # the worst-scoring failing term speaks first, in the feedback and in the failure kind
        ordered = sorted(verdicts, key=lambda v: (v.passed, v.reward))
        feedback = " ".join(v.feedback for v in ordered if v.feedback)
        shown = first_verifier or _function_verdict("", reward_functions.Scored(reward), response)
        return Verdict(reward=reward, passed=passed, feedback=feedback, extracted=shown.extracted,
                       format_ok=shown.format_ok, failure_kind=combined_failure_kind(passed, ordered),
                       details={"lenient_correct": lenient, "terms": terms})


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


def _conversational(problem: Problem) -> bool:
    """Whether the problem's prompt came as chat messages (TRL's conversational format) rather than text."""
    return bool(problem.metadata.get("conversational"))


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
    return {"question": question, "system": system, "answer": answer, "row": row, "where": where,
            "conversational": not isinstance(row.get(prompt_col), str)}


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
