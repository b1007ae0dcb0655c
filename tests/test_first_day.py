"""A TRL user's first day, walked end to end on the tiny random model (issue 26's "done when").

One user, in the order they would go: find the options (`pmd config`), train PMD from the command line on their own
two files (a text-prompt dataset judged by TRL's documented standard-format reward, and a conversational dataset
with a system turn judged by TRL's documented conversational reward plus a built-in verifier), read what the model
was asked and what it answered (the first prompt, the per-sample evaluation rows), pick up the model from `final/`
(its card), then do the same from Python with an in-memory dataset and a reward callable. Each part has its own
focused tests elsewhere; this one checks that they hold together on one path, as a user meets them.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pmd.cli import main

# TRL's documented reward functions, verbatim (its standard-format `reward_func` with a `ground_truth` column, and
# the conversational `format_reward_func`), and the system turn they expect
from test_reward_forms import SYSTEM, TRL_DOC_REWARDS, write

PMD_INSTRUCTION = "Give the final result on a line"  # what pmd used to append to every row


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_trl_users_first_day(tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    # 1. What can be set? Every field with its default and its help, without reading the source.
    assert main(["config", "train"]) == 0
    listing = capsys.readouterr().out
    assert "learning_rate" in listing and "num_generations" in listing and "algo" in listing

    # 2. Their own data and TRL's own reward functions, from the command line.
    (tmp_path / "trl_rewards.py").write_text(TRL_DOC_REWARDS, encoding="utf-8")
    text = str(write(tmp_path / "text.jsonl", [{"question": f"What is {i} plus {i}?", "ground_truth": str(2 * i),
                                                "answer": str(2 * i)} for i in range(10)]))
    chat = str(write(tmp_path / "chat.jsonl", [{"messages": [{"role": "system", "content": SYSTEM},
                                                             {"role": "user", "content": f"What is {i} + {i}?"}],
                                                "answer": str(2 * i)} for i in range(10)]))
    config = {
        "model": {"name_or_path": str(tiny_model_path)},
        "env": {"tasks": [
            {"kind": "dataset", "name": "text-sums",
             "params": {"path": text, "prompt": "question", "pass_threshold": 1.0, "eval_fraction": 0.3,
                        "rewards": [{"function": "trl_rewards.py:reward_func"}]}},
            {"kind": "dataset", "name": "chat-sums",
             "params": {"path": chat, "prompt": "messages", "eval_fraction": 0.3,
                        "rewards": [{"function": "trl_rewards.py:format_reward_func"}, {"verifier": "exact"}]}}]},
        "train": {"algo": "pmd", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4, "logging_steps": 1},
        "eval": {"max_new_tokens": 4},
        "run_dir": "runs/day-one",
    }
    (tmp_path / "day_one.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", "day_one.yaml"]) == 0
    err = capsys.readouterr().err
    run = tmp_path / "runs" / "day-one"
    summary = json.loads((run / "summary.json").read_text())
    assert not summary.get("reward_function_errors")  # TRL's functions got what TRL gives them, in both forms

    # 3. What the model was asked: printed at the start and kept, exactly the row's own turns.
    first = (run / "first_prompt.txt").read_text(encoding="utf-8")
    assert first in err and PMD_INSTRUCTION not in first

    # ... and what it answered: one row per evaluated answer, with its prompt, reference and verdict.
    rows = read_jsonl(run / "eval_trained.samples.jsonl")
    families = {r["family"] for r in rows}
    assert families == {"text-sums", "chat-sums"}, families
    for row in rows:
        assert {"problem_id", "prompt", "reference", "response", "passed", "extracted", "reward_terms"} <= set(row)
        assert PMD_INSTRUCTION not in row["prompt"]  # the user's prompt, verbatim
        assert (SYSTEM in row["prompt"]) == (row["family"] == "chat-sums")  # the system turn kept
    chat_terms = next(r["reward_terms"] for r in rows if r["family"] == "chat-sums")
    assert set(chat_terms) == {"format_reward_func", "exact"}
    assert len(rows) == len(read_jsonl(run / "eval_base.samples.jsonl"))  # the base model, on the same problems

    # ... and each reward term on its own, as TRL logs them.
    logged = set().union(*(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()))
    assert {"rewards/reward_func/mean", "rewards/format_reward_func/mean", "rewards/exact/mean"} <= logged

    # 4. The hand-off: a model card with the held-out results, and a config that generates with its cache.
    card = (run / "final" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "pmd" in card.split("---")[1]
    assert f"{summary['trained_greedy_accuracy']:.3f}" in card or f"{summary['trained_greedy_accuracy']:.2f}" in card
    assert json.loads((run / "final" / "config.json").read_text())["use_cache"] is True

    # 5. The same from Python: an in-memory dataset, a reward callable, no YAML file.
    from datasets import Dataset

    from pmd import RunConfig, train

    def reward_len(completions, **kwargs):  # TRL's quickstart reward: a text prompt gives plain strings
        return [-abs(20 - len(completion)) for completion in completions]

    calls: list[type] = []

    def boxed(completions, ground_truth, **kwargs):
        calls.extend(type(c) for c in completions)
        return [1.0 if f"\\boxed{{{gt}}}" in c else 0.0 for c, gt in zip(completions, ground_truth)]

    data = Dataset.from_list([{"prompt": f"What is {i} plus {i}?", "ground_truth": str(2 * i)} for i in range(10)])
    cfg = RunConfig(model={"name_or_path": str(tiny_model_path)},
                    train={"algo": "pmd", "steps": 1, "prompts_per_step": 2, "num_generations": 2,
                           "max_completion_length": 4},
                    eval={"max_new_tokens": 4})
    result = train(cfg, train_dataset=data, reward_funcs=[boxed, reward_len], reward_weights=[1.0, 0.01],
                   run_dir=tmp_path / "runs" / "python")
    assert result["steps"] == 1 and "trained_greedy_accuracy" in result
    assert calls and set(calls) == {str}  # a text prompt: completions are strings, as TRL passes them
    api_run = tmp_path / "runs" / "python"
    assert (api_run / "final" / "README.md").is_file() and (api_run / "eval_trained.samples.jsonl").is_file()
