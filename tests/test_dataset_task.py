"""`kind: dataset`: local files in every format `datasets` reads, TRL-signature reward functions with feedback,
weighted terms, failures counted (or stopping the run under strict), and one-line errors before anything is written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pmd.envs.dataset import DatasetEnvironment
from pmd.envs.reward_functions import normalise
from pmd.errors import ConfigError, DatasetError

ROWS = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i), "level": i % 3} for i in range(10)]

REWARDS_PY = '''
calls = []

def _text(c):  # either form TRL passes: a string (text prompts) or one assistant message (chat prompts)
    return c[0]["content"] if isinstance(c, list) else c

def with_feedback(prompts, completions, completion_ids, answer, level, **kwargs):
    calls.append({"n": len(completions), "level": list(level), "ids": list(completion_ids),
                  "prompts": list(prompts), "completions": list(completions), "state": kwargs.get("trainer_state")})
    out = []
    for c, a in zip(completions, answer):
        text = _text(c)
        out.append((1.0, "Correct.") if text.strip().endswith(str(a)) else (0.0, "Wrong answer: not the sum."))
    return out

def floats_only(prompts, completions, **kwargs):
    return [0.5 for _ in completions]

def raises_later(prompts, completions, **kwargs):
    if any("boom" in c for c in completions):
        raise RuntimeError("cannot score boom")
    return [1.0 for _ in completions]

def always_raises(prompts, completions, **kwargs):
    raise ValueError("bad reward")

def two_values(prompts, completions, **kwargs):
    return [1.0, 0.0, 1.0][: len(completions) + 1]

def no_kwargs(prompts, completions):
    return [1.0 for _ in completions]

def needs_missing_column(prompts, completions, completion_ids, difficulty):
    return [1.0 for _ in completions]
'''


@pytest.fixture
def rewards_file(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS_PY, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def env(path: Path, rewards_file: Path | None = None, function: str = "with_feedback", **options):
    rewards = options.pop("rewards", None) or [{"function": f"{rewards_file}:{function}"}]
    return DatasetEnvironment(path=str(path), rewards=rewards, eval_fraction=0.2, **options)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "save_to_disk", "folder"])
def test_every_local_format_datasets_reads_gives_the_same_problems(fmt, tmp_path, rewards_file):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    target = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        write_jsonl(target)
    elif fmt == "json":
        target.write_text(json.dumps(ROWS), encoding="utf-8")
    elif fmt == "csv":
        ds.to_csv(str(target))
    elif fmt == "parquet":
        ds.to_parquet(str(target))
    elif fmt == "save_to_disk":
        ds.save_to_disk(str(target))
    else:
        target.mkdir()
        write_jsonl(target / "part-0.jsonl", ROWS[:5])
        write_jsonl(target / "part-1.jsonl", ROWS[5:])
    e = env(target, rewards_file)
    got = sorted((p.question, p.answer) for split in ("train", "eval") for p in e.problems(split))
    assert got == sorted((r["question"], r["answer"]) for r in ROWS)
    assert not {p.question for p in e.problems("train")} & {p.question for p in e.problems("eval")}
    assert len(e.problems("eval")) == 2


def test_a_saved_dataset_dict_gives_its_splits(tmp_path, rewards_file):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:7]),
                          "test": datasets.Dataset.from_list(ROWS[7:])}).save_to_disk(str(tmp_path / "dd"))
    e = env(tmp_path / "dd", rewards_file, eval_split="test")
    assert [p.answer for p in e.problems("eval")] == [r["answer"] for r in ROWS[7:]]
    assert len(e.problems("train")) == 7
    with pytest.raises(DatasetError, match=r"has splits \['test', 'train'\], not 'validation'"):
        env(tmp_path / "dd", rewards_file, eval_split="validation")


def test_a_separate_eval_file_never_shares_a_question_with_train(tmp_path, rewards_file):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "eval.jsonl", ROWS[:3])
    e = env(tmp_path / "train.jsonl", rewards_file, eval_path=str(tmp_path / "eval.jsonl"))
    assert len(e.problems("eval")) == 3 and len(e.problems("train")) == 7


def test_chat_message_prompts_keep_their_system_turn(tmp_path, rewards_file):
    rows = [{"messages": [{"role": "system", "content": "You add numbers."},
                          {"role": "user", "content": f"{i} + {i}?"}], "answer": str(2 * i), "level": 0}
            for i in range(6)]
    e = env(write_jsonl(tmp_path / "chat.jsonl", rows), rewards_file, prompt="messages")
    p = e.problems("train")[0]
    assert e.messages(p)[0] == {"role": "system", "content": "You add numbers."}
    assert e.messages(p)[1]["content"].startswith(p.question)
    bad = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "answer": "1"}]
    with pytest.raises(DatasetError, match=r"row 1: 'messages' holds chat turns \['user', 'assistant'\]"):
        env(write_jsonl(tmp_path / "bad.jsonl", bad), rewards_file, prompt="messages")


def test_a_trl_reward_function_gets_the_batch_columns_ids_and_gives_feedback(tmp_path, rewards_file):
    e = env(write_jsonl(tmp_path / "d.jsonl"), rewards_file)
    import sys

    module = next(m for name, m in sys.modules.items() if name.startswith("pmd_user_reward_")
                  and getattr(m, "__file__", "") == str(rewards_file))
    module.calls.clear()
    problems = e.problems("train")[:3]
    verdicts = e.verify_batch(problems, [f"Answer: {problems[0].answer}", "Answer: -1", "nothing"],
                              completion_ids=[[1], [2], [3]], trl_kwargs={"trainer_state": "state"})
    assert [v.reward for v in verdicts] == [1.0, 0.0, 0.0]
    assert verdicts[1].feedback == "Wrong answer: not the sum." and verdicts[0].passed
    assert module.calls == [{"n": 3, "level": [p.metadata["row"]["level"] for p in problems], "ids": [[1], [2], [3]],
                             "prompts": [p.question for p in problems],  # text prompts: strings, as TRL passes them
                             "completions": [f"Answer: {problems[0].answer}", "Answer: -1", "nothing"],
                             "state": "state"}]  # one call for the batch


def test_weighted_terms_sum_like_trl_and_failing_feedback_comes_first(tmp_path, rewards_file):
    e = env(write_jsonl(tmp_path / "d.jsonl"), rewards=[
        {"function": f"{rewards_file}:floats_only", "weight": 2.0},
        {"function": f"{rewards_file}:with_feedback", "weight": 1.0}])
    p = e.problems("train")[0]
    right, wrong = e.verify_batch([p, p], [f"Answer: {p.answer}", "Answer: -1"])
    assert (right.reward, wrong.reward) == (2.0, 1.0)
    assert not right.passed  # passed needs the sum of the weights (3.0) by default
    assert wrong.feedback.startswith("Wrong answer: not the sum.")
    assert right.feedback.startswith("Failed check floats_only: it scored 0.5 of 1.")
    assert wrong.details["terms"] == {"floats_only": 0.5, "with_feedback": 0.0}


def test_a_function_that_raises_in_training_scores_zero_is_counted_and_logged_once(tmp_path, rewards_file, caplog):
    e = env(write_jsonl(tmp_path / "d.jsonl"), rewards_file, function="raises_later")
    p = e.problems("train")[0]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            (v,) = e.verify_batch([p], ["boom"])
    assert v.reward == 0.0 and not v.passed and "failed on this batch" in v.feedback
    assert e.failures == {"raises_later: RuntimeError": 3}
    assert sum("raises_later raised RuntimeError" in r.getMessage() for r in caplog.records) == 1
    assert e.stop_reason is None
    strict = env(write_jsonl(tmp_path / "d.jsonl"), rewards_file, function="raises_later", strict=True)
    strict.verify_batch([p], ["boom"])
    assert "raises_later raised RuntimeError: cannot score boom (strict: true)" in strict.stop_reason


@pytest.mark.parametrize("function,message", [
    ("always_raises", r"rewards\[0\] \(always_raises\) failed on the first rows of .*: ValueError: bad reward"),
    ("two_values", r"failed on the first rows .*ValueError: returned 3 values for 2 completions"),
    ("needs_missing_column", r"does not take TRL's reward call .*missing a required argument: 'difficulty'"),
    ("no_kwargs", r"does not take TRL's reward call .*add \*\*kwargs\): got an unexpected keyword argument"),
    ("no_such_function", r"has no attribute 'no_such_function'"),
])
def test_a_reward_that_cannot_run_fails_before_training(function, message, tmp_path, rewards_file):
    with pytest.raises((ConfigError, DatasetError), match=message):
        env(write_jsonl(tmp_path / "d.jsonl"), rewards_file, function=function)


@pytest.mark.parametrize("spec,message", [
    ("not_a_spec", "expected 'module:function'"),
    ("missing_file.py:f", "reward function file missing_file.py not found"),
    ("pmd_no_such_module:f", r"cannot import 'pmd_no_such_module' \(ModuleNotFoundError"),
])
def test_function_specs_that_cannot_be_imported_name_themselves(spec, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        DatasetEnvironment(path=str(write_jsonl(tmp_path / "d.jsonl")), rewards=[{"function": spec}])


def test_missing_columns_and_files_are_named(tmp_path, rewards_file):
    with pytest.raises(DatasetError, match=r"no column 'prompt_text' \(columns: answer, level, question\)"):
        env(write_jsonl(tmp_path / "d.jsonl"), rewards_file, prompt="prompt_text")
    with pytest.raises(DatasetError, match="nope.jsonl does not exist"):
        env(tmp_path / "nope.jsonl", rewards_file)
    (tmp_path / "broken.jsonl").write_text('{"question": "a", "answer": "1"}\n{"question": \n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken.jsonl: row 2: invalid JSON \(Expecting value"):
        env(tmp_path / "broken.jsonl", rewards_file)


@pytest.mark.parametrize("out,expected", [
    ([1, 0.5, None, float("nan"), True], [1.0, 0.5, 0.0, 0.0, 1.0]),
    ([(1.0, "ok"), (0.0, None)], [1.0, 0.0]),
])
def test_normalise_accepts_trl_returns_and_pairs(out, expected):
    assert [s.reward for s in normalise(out, len(out))] == expected


@pytest.mark.parametrize("out,message", [("1.0", "returned str"), ([1.0], "returned 1 values for 2"),
                                         (["x", 1], "returned 'x'"), ([(1.0, 2), 1], "a pair must be")])
def test_normalise_rejects_what_trl_would_not_score(out, message):
    with pytest.raises(ValueError, match=message):
        normalise(out, 2)


STEP_REWARDS_PY = '''
def fails_from_step_one(prompts, completions, completion_ids, trainer_state=None, **kwargs):
    if trainer_state is not None and trainer_state.global_step >= 1:
        raise KeyError("late failure")
    return [1.0 if c.strip() else 0.0 for c in completions]  # text prompts: completions are strings, as in TRL
'''


@pytest.mark.parametrize("strict", [False, True])
def test_training_with_a_failing_reward_scores_zero_or_stops_at_a_checkpoint(strict, tmp_path, tiny_model_path):
    from pmd.checkpoint import read_manifest
    from pmd.config import config_from_dict
    from pmd.envs import EnvironmentSuite
    from pmd.errors import RewardFunctionError
    from pmd.report import read_metrics
    from pmd.trainer import train

    (tmp_path / "late.py").write_text(STEP_REWARDS_PY, encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl")
    cfg = config_from_dict({
        "model": {"name_or_path": str(tiny_model_path)},
        "env": {"tasks": [{"kind": "dataset", "name": "sums", "params": {
            "path": str(tmp_path / "d.jsonl"), "strict": strict,
            "rewards": [{"function": f"{tmp_path / 'late.py'}:fails_from_step_one"}]}}]},
        "train": {"algo": "pmd", "steps": 3, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4},
        "run_dir": str(tmp_path / "run"),
    })
    suite = EnvironmentSuite.from_config(cfg.env)
    run = Path(cfg.run_dir)
    if not strict:
        summary = train(cfg, run, str(tiny_model_path), suite)
        assert summary["steps"] == 3 and summary["reward_function_errors"] == {"fails_from_step_one: KeyError": 2}
        rows = [r for r in read_metrics(run) if "env/reward_function_errors_total" in r and "train_runtime" not in r]
        assert [r["step"] for r in rows] == [2, 3]
        return
    with pytest.raises(RewardFunctionError, match=r"fails_from_step_one raised KeyError: 'late failure' \(strict: "
                                                  r"true\); stopped after step 2 .*pmd train --resume"):
        train(cfg, run, str(tiny_model_path), suite)
    assert read_manifest(run / "checkpoints" / "checkpoint-2") is not None  # a complete checkpoint to resume from
    assert not (run / "final").exists()


def test_a_row_a_verifier_could_never_reward_is_rejected_at_load(tmp_path):
    rows = [*ROWS[:4], {"question": "What is x?", "answer": "about five", "level": 0}, *ROWS[4:]]
    with pytest.raises(DatasetError, match=r"d.jsonl: row 5: .*\(dataset.params.rewards\[0\]: verifier numeric\)"):
        DatasetEnvironment(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), rewards=[{"verifier": "numeric"}])


def test_built_in_verifiers_score_dataset_rows_with_verdict_first_feedback(tmp_path):
    e = DatasetEnvironment(path=str(write_jsonl(tmp_path / "d.jsonl")), rewards=[{"verifier": "numeric"}])
    p = e.problems("train")[0]
    right, wrong = e.verify_batch([p, p], [f"Answer: {p.answer}.0", "Answer: 1000"])
    assert right.passed and right.reward == 1.0 and right.feedback.startswith("Correct.")
    assert not wrong.passed and wrong.feedback.startswith("Wrong answer:") and "Extracted answer: '1000'." in wrong.feedback


def test_dataset_verdicts_carry_a_failure_kind(tmp_path, rewards_file):
    """A verifier's own kind; "other" for a function's failed check, a raising function, or a missed threshold."""
    from pmd.envs.dataset import combined_failure_kind

    e = DatasetEnvironment(path=str(write_jsonl(tmp_path / "d.jsonl")), rewards=[{"verifier": "numeric"}])
    p = e.problems("train")[0]
    kinds = [v.failure_kind for v in e.verify_batch([p] * 3, [f"Answer: {p.answer}", "Answer: 1000", "no idea"])]
    assert kinds == ["", "wrong_value", "no_answer"]
    strict = env(write_jsonl(tmp_path / "d.jsonl"), rewards_file, function="raises_later",
                 pass_threshold=2.0)  # the function's 1.0 passes its check, yet misses the threshold
    assert strict.verify(p, f"Answer: {p.answer}").failure_kind == "other"
    mixed = env(write_jsonl(tmp_path / "d.jsonl"), rewards=[
        {"verifier": "numeric"}, {"function": f"{rewards_file}:with_feedback", "weight": 1.0}])
    right, wrong = mixed.verify_batch([p, p], [f"Answer: {p.answer}", "Answer: -1"])
    assert (right.failure_kind, wrong.failure_kind) == ("", "wrong_value")  # the worst term's kind
    functions = env(write_jsonl(tmp_path / "d.jsonl"), rewards_file)
    assert functions.verify(p, "Answer: -1").failure_kind == "other"
    raising = env(write_jsonl(tmp_path / "d.jsonl"), rewards_file, function="raises_later")
    assert raising.verify_batch([p], ["boom"])[0].failure_kind == "other"
    assert combined_failure_kind(True, []) == ""


# ------------------------------------------------------------------ issue 27: user functions and data

EXITING_PY = '''
import sys

def exits_late(prompts, completions, **kwargs):
    if any("boom" in c for c in completions):
        sys.exit(0)
    return [1.0 for _ in completions]

def generator_exit_late(prompts, completions, **kwargs):
    if any("boom" in c for c in completions):
        raise GeneratorExit
    return [1.0 for _ in completions]

def interrupted_late(prompts, completions, **kwargs):
    if any("boom" in c for c in completions):
        raise KeyboardInterrupt
    return [1.0 for _ in completions]

def edits_its_columns(prompts, completions, tags, **kwargs):
    out = [1.0 if t == ["a", "b"] else 0.0 for t in tags]
    for t in tags:
        t.pop()
    completions[0] = "changed"
    prompts[0] = "changed"
    return out
'''


@pytest.mark.parametrize("function,kind", [("exits_late", "SystemExit"), ("generator_exit_late", "GeneratorExit")])
def test_an_exit_from_a_reward_during_training_is_that_functions_error(function, kind, tmp_path):
    """Was: SystemExit(0) at step 1 ended `pmd train` with exit code 0 and no output; GeneratorExit a traceback.
    Now the policy for any exception applies: scored 0, counted, and under strict the run stops at a checkpoint."""
    (tmp_path / "ex.py").write_text(EXITING_PY, encoding="utf-8")
    e = env(write_jsonl(tmp_path / "d.jsonl"), tmp_path / "ex.py", function=function)
    p = e.problems("train")[0]
    (v,) = e.verify_batch([p], ["boom"])
    assert (v.reward, v.passed, v.failure_kind) == (0.0, False, "other")
    assert e.failures == {f"{function}: {kind}": 1} and e.stop_reason is None
    strict = env(write_jsonl(tmp_path / "d.jsonl"), tmp_path / "ex.py", function=function, strict=True)
    strict.verify_batch([p], ["boom"])
    assert f"{function} raised {kind}" in strict.stop_reason


def test_ctrl_c_inside_a_reward_still_interrupts(tmp_path):
    (tmp_path / "ex.py").write_text(EXITING_PY, encoding="utf-8")
    e = env(write_jsonl(tmp_path / "d.jsonl"), tmp_path / "ex.py", function="interrupted_late")
    with pytest.raises(KeyboardInterrupt):
        e.verify_batch([e.problems("train")[0]], ["boom"])


def test_a_function_that_edits_its_arguments_changes_no_row(tmp_path):
    """The columns are the problems' own rows: an edit must not reach the next call (TRL reads them afresh)."""
    (tmp_path / "ex.py").write_text(EXITING_PY, encoding="utf-8")
    rows = [{**r, "tags": ["a", "b"]} for r in ROWS]
    e = env(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "ex.py", function="edits_its_columns")
    p = e.problems("train")[0]
    first, = e.verify_batch([p], ["x"])
    second, = e.verify_batch([p], ["x"])
    assert first.reward == second.reward == 1.0 and p.metadata["row"]["tags"] == ["a", "b"]


@pytest.mark.parametrize("threshold,weights,function,problem", [
    (None, [1.0], False, None), (1.0, [1.0], False, None), (1.5, [1.0, 0.5], False, None),
    (0, [1.0], False, "passes every reply"), (-1, [1.0], False, "passes every reply"),
    (2, [1.0, 0.5], False, "above the highest reward"), (0, [1.0], True, None), (5, [1.0], True, None),
])
def test_a_threshold_that_leaves_passed_without_meaning_is_named(threshold, weights, function, problem):
    from pmd.envs.dataset import RewardSpec, threshold_problem

    rewards = [RewardSpec(function="m:f", weight=w) if function else RewardSpec(verifier="exact", weight=w)
               for w in weights]
    got = threshold_problem(threshold, rewards)
    assert (got is None) if problem is None else (problem in got)


@pytest.mark.parametrize("value,problem", [
    ({"q": "fine \U0001F600"}, None), ({"q": "x\ud800"}, "column 'q' holds a lone surrogate ('\\ud800')"),
    ({"q": [{"role": "user", "content": "\udc00"}]}, "column 'q'"), ({"\ud800": "a"}, "a column name"),
])
def test_text_that_is_not_utf8_is_named_by_column(value, problem):
    from pmd.envs.dataset_files import text_problem

    got = text_problem(value)
    assert (got is None) if problem is None else (problem in got)


def test_a_folder_is_read_in_one_format(tmp_path):
    from pmd.envs.dataset_files import folder_format

    write_jsonl(tmp_path / "a.jsonl")
    (tmp_path / "b.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / ".hidden.csv").write_text("question,answer\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# data\n", encoding="utf-8")
    assert folder_format(tmp_path, "w") == "json"  # .json and .jsonl are one format; hidden files are not data
    (tmp_path / "c.parquet").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"w: .* mixes formats \(a.jsonl and c.parquet\)"):
        folder_format(tmp_path, "w")


@pytest.mark.parametrize("out,n", [(iter([1.0, 0.0]), 2), ((x for x in [0.5]), 1)])
def test_normalise_takes_the_iterables_trl_takes(out, n):
    assert len(normalise(out, n)) == n
