"""Issue 26, items 1, 3 and 4: a TRL user's reward functions and prompts on `kind: dataset`.

- Reward functions get `prompts` and `completions` in the form TRL 1.16's GRPOTrainer gives them for the row's
  prompt: strings for a text prompt (standard format), chat messages for a conversational one. The functions below
  are TRL's own documentation examples, verbatim: `reward_len` (TRL's GRPO quickstart), `reward_func` (GRPO trainer
  docs, example 3, standard format) and `format_reward_func` (example 2, conversational format).
- Prompts are used verbatim (a system turn kept, nothing appended) unless `answer_instruction` asks for a text; the
  first rendered prompt is printed and kept in RUN/first_prompt.txt.
- A threshold above the reward the reference answers reach is refused (verifiers alone) or warned about (functions),
  and each reward term is logged as TRL logs a reward function (rewards/<name>/mean, /std).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from pmd.cli import main
from pmd.envs.dataset import DatasetEnvironment, Reachable, check_reachable
from pmd.errors import ConfigError, DatasetError

TRL_DOC_REWARDS = r'''
import copy
import re


def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def reward_func(completions, ground_truth, **kwargs):
    # Regular expression to capture content inside \boxed{}
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    # Reward 1 if the content is the same as the ground truth, 0 otherwise
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]


def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


seen = []


def records_prompts(prompts, completions, **kwargs):
    seen.append(copy.deepcopy({"prompts": prompts, "completions": completions}))
    if isinstance(prompts[0], list):  # a function that edits its arguments must not change the next call's
        prompts[0][-1]["content"] = "edited"
    else:
        prompts[0] = "edited"
    return [0.5 for _ in completions]
'''

SYSTEM = "You reply with <think>...</think><answer>...</answer> and nothing else."


def text_rows(n: int = 8) -> list[dict]:
    return [{"question": f"What is {i} plus {i}?", "ground_truth": str(2 * i), "answer": str(2 * i)} for i in range(n)]


def chat_rows(n: int = 8) -> list[dict]:
    return [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {i} + {i}?"}],
             "answer": str(2 * i)} for i in range(n)]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def doc_rewards(tmp_path) -> Path:
    path = tmp_path / "trl_doc_rewards.py"
    path.write_text(TRL_DOC_REWARDS, encoding="utf-8")
    return path


def dataset(tmp_path: Path, rows: list[dict], rewards: list[dict], **params) -> DatasetEnvironment:
    return DatasetEnvironment(path=str(write(tmp_path / "d.jsonl", rows)), rewards=rewards, eval_fraction=0.25,
                              **params)


def user_module(path: Path):
    import sys

    return next(m for name, m in sys.modules.items()
                if name.startswith("pmd_user_reward_") and getattr(m, "__file__", "") == str(path))


# ------------------------------------------------------------------ item 1: the forms TRL passes


def test_trls_standard_format_examples_score_a_text_prompt_dataset(tmp_path, doc_rewards):
    """Was: preflight failed with `TypeError: expected string or bytes-like object, got 'list'`."""
    e = dataset(tmp_path, text_rows(), [{"function": f"{doc_rewards}:reward_len"},
                                        {"function": f"{doc_rewards}:reward_func"}], pass_threshold=1.0)
    p = e.problems("train")[0]
    reply = rf"The sum is \boxed{{{p.answer}}}."
    right, wrong = e.verify_batch([p, p], [reply, "x" * 20])
    assert right.details["terms"] == {"reward_len": -abs(20 - len(reply)), "reward_func": 1.0}
    assert wrong.details["terms"] == {"reward_len": 0, "reward_func": 0.0}  # 20 characters: reward_len's best


def test_trls_conversational_example_scores_a_chat_dataset(tmp_path, doc_rewards):
    e = dataset(tmp_path, chat_rows(), [{"function": f"{doc_rewards}:format_reward_func"}], prompt="messages")
    p = e.problems("train")[0]
    good, bad = e.verify_batch([p, p], ["<think>2 and 2</think><answer>4</answer>", "4"])
    assert (good.reward, good.passed, bad.reward, bad.passed) == (1.0, True, 0.0, False)


@pytest.mark.parametrize("rows,prompt", [(text_rows, "question"), (chat_rows, "messages")])
def test_a_function_gets_prompts_and_completions_in_the_rows_form(rows, prompt, tmp_path, doc_rewards):
    e = dataset(tmp_path, rows(), [{"function": f"{doc_rewards}:records_prompts"}], prompt=prompt,
                pass_threshold=0.5)
    module = user_module(doc_rewards)
    module.seen.clear()
    problems = e.problems("train")[:2]
    e.verify_batch(problems, ["a", "b"])
    e.verify_batch(problems, ["a", "b"])  # after the function edited its first call's prompts
    first, second = module.seen
    rows_prompts = [p.metadata["row"][prompt] for p in problems]
    assert second["prompts"] == rows_prompts  # the row's own prompt, verbatim: a string, or its messages
    if prompt == "question":
        assert first["completions"] == ["a", "b"]
    else:
        assert first["completions"] == [[{"role": "assistant", "content": "a"}], [{"role": "assistant",
                                                                                   "content": "b"}]]
        assert rows_prompts[0][0] == {"role": "system", "content": SYSTEM}


def test_a_reward_called_in_the_other_form_says_which_form_and_why(tmp_path, doc_rewards):
    with pytest.raises(DatasetError, match=r"rewards\[0\] \(format_reward_func\) failed on the first rows .*: "
                                           r"TypeError: .*\(called as TRL calls it: completions are plain strings "
                                           r"and prompts strings, because the prompt column 'question' is text"):
        dataset(tmp_path, text_rows(), [{"function": f"{doc_rewards}:format_reward_func"}])
    with pytest.raises(DatasetError, match=r"rewards\[0\] \(reward_func\) failed on the first rows .*TypeError: "
                                           r".*completions are chat messages \[\{'role': 'assistant', 'content': "
                                           r"\.\.\.\}\] and prompts chat messages, because the prompt column "
                                           r"'messages' holds chat messages"):
        dataset(tmp_path, [{**r, "ground_truth": r["answer"]} for r in chat_rows()],
                [{"function": f"{doc_rewards}:reward_func"}], prompt="messages")


# ------------------------------------------------------------------ item 3: prompts verbatim


def test_a_chat_prompt_is_used_verbatim_system_turn_kept_nothing_appended(tmp_path, doc_rewards):
    e = dataset(tmp_path, chat_rows(), [{"verifier": "exact"}], prompt="messages")
    for p in e.problems("train") + e.problems("eval"):
        assert e.messages(p) == p.metadata["row"]["messages"]
    explicit = dataset(tmp_path, chat_rows(), [{"verifier": "exact"}], prompt="messages",
                       answer_instruction="End with 'Answer: <n>'.")
    p = explicit.problems("train")[0]
    assert explicit.messages(p)[1]["content"] == p.metadata["row"]["messages"][1]["content"] + \
        "\nEnd with 'Answer: <n>'."
    assert explicit.messages(p)[0] == {"role": "system", "content": SYSTEM}


def test_a_text_prompt_is_used_verbatim(tmp_path):
    e = dataset(tmp_path, text_rows(), [{"verifier": "numeric"}])
    p = e.problems("train")[0]
    assert e.format_prompt(p) == p.metadata["row"]["question"]
    assert e.messages(p) == [{"role": "user", "content": p.metadata["row"]["question"]}]


# ------------------------------------------------------------------ item 4: reachable thresholds


def test_the_reachable_reward_is_what_the_reference_answers_score(tmp_path, doc_rewards, caplog):
    with caplog.at_level(logging.WARNING):
        e = dataset(tmp_path, text_rows(), [{"verifier": "numeric"},
                                            {"function": f"{doc_rewards}:records_prompts", "weight": 0.5}])
    assert e.reachable == Reachable({"numeric": 1.0, "records_prompts": 0.5}, {"numeric": 1.0,
                                                                               "records_prompts": 0.5}, exact=False)
    assert e.reachable.total == 1.25
    # the case: a format reward peaking at 0.5 with weight 0.5 left "passed" (sum of weights, 1.5) empty
    (line,) = [r.getMessage() for r in caplog.records if "pass_threshold" in r.getMessage()]
    assert "dataset.params.pass_threshold 1.5 (the reward at which a reply passes; unset, so the sum of the " \
           "weights) is above the highest reward that d's reference answers reach on its first rows, 1.25 = " \
           "1 x numeric 1 + 0.5 x records_prompts 0.5" in line
    assert line.endswith("set dataset.params.pass_threshold: 1.25")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dataset(tmp_path, text_rows(), [{"verifier": "numeric"},
                                        {"function": f"{doc_rewards}:records_prompts", "weight": 0.5}],
                pass_threshold=1.25)
    assert not [r for r in caplog.records if "pass_threshold" in r.getMessage()]


def test_no_threshold_is_suggested_from_a_negative_or_unknown_reach(tmp_path, doc_rewards, caplog):
    with caplog.at_level(logging.WARNING):  # reward_len peaks at 0 (a 20-character reply), never at 1
        e = dataset(tmp_path, text_rows(), [{"function": f"{doc_rewards}:reward_len"}])
    assert e.reachable.total < 0
    assert caplog.text.rstrip().endswith("set dataset.params.pass_threshold to what your functions give a good reply")
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # no reference answers: the empty reply shows nothing
        e = dataset(tmp_path, text_rows(), [{"function": f"{doc_rewards}:reward_len"}], answer="")
    assert e.reachable is None and "pass_threshold" not in caplog.text


def test_a_threshold_verifiers_cannot_reach_is_refused(caplog):
    verifiers = Reachable({"exact": 1.0}, {"exact": 0.5}, exact=True)
    with pytest.raises(ConfigError, match=r"^train.success_reward_threshold 1 \(success\) is above the highest "
                                          r"reward that t's reference answers reach on its first rows, 0.5 = 0.5 x "
                                          r"exact 1; no reply can reach it: set train.success_reward_threshold: 0.5 "
                                          r"\(or lower\)$"):
        check_reachable(1.0, "train.success_reward_threshold", "success", verifiers, "t")
    check_reachable(0.5, "train.success_reward_threshold", "success", verifiers, "t")
    with caplog.at_level(logging.WARNING):  # a function may score real replies higher than the reference
        check_reachable(1.0, "train.success_reward_threshold", "success",
                        Reachable({"fmt": 0.5}, {"fmt": 1.0}, exact=False), "t")
    assert "set train.success_reward_threshold: 0.5" in caplog.text


def run_config(tmp_path: Path, model: Path, task_params: dict, algo: str, **train) -> Path:
    cfg = {"model": {"name_or_path": str(model)},
           "env": {"tasks": [{"kind": "dataset", "name": "sums", "params": task_params}]},
           "train": {"algo": algo, "steps": 1, "prompts_per_step": 2, "num_generations": 2,
                     "max_completion_length": 4, **train},
           "run_dir": str(tmp_path / "run")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_success_threshold_verifiers_cannot_reach_stops_pmd_train_before_writing(tmp_path, tiny_model_path, capsys):
    params = {"path": str(write(tmp_path / "d.jsonl", text_rows())), "rewards": [{"verifier": "numeric",
                                                                                   "weight": 0.5}]}
    assert main(["train", str(run_config(tmp_path, tiny_model_path, params, "sdpo"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.success_reward_threshold 1 (the reward at which SDPO and PMD take a " \
                                      "rollout as a success) is above" in err
    assert err.endswith("set train.success_reward_threshold: 0.5 (or lower)")
    assert not (tmp_path / "run").exists()
    # GRPO has no successes to find: the same task trains (here, only as far as the run directory)
    assert main(["train", str(run_config(tmp_path, tiny_model_path, params, "grpo", steps=1)), "--no-eval"]) == 0


# ------------------------------------------------------------------ end to end, on the tiny model


@pytest.mark.parametrize("form,algo", [("text", "grpo"), ("chat", "pmd")])
def test_pmd_train_with_trl_rewards_logs_each_term_and_records_the_first_prompt(form, algo, tmp_path,
                                                                                tiny_model_path, doc_rewards, capsys):
    from transformers import AutoTokenizer

    from pmd.config import load_config
    from pmd.envs import EnvironmentSuite
    from pmd.report import read_metrics

    if form == "text":
        params = {"path": str(write(tmp_path / "d.jsonl", text_rows())), "pass_threshold": 1.0,
                  "rewards": [{"function": f"{doc_rewards}:reward_len", "weight": 0.5},
                              {"function": f"{doc_rewards}:reward_func"}]}
        terms = ["reward_len", "reward_func"]
    else:
        params = {"path": str(write(tmp_path / "d.jsonl", chat_rows())), "prompt": "messages",
                  "rewards": [{"function": f"{doc_rewards}:format_reward_func"}, {"verifier": "exact"}]}
        terms = ["format_reward_func", "exact"]
    cfg_path = run_config(tmp_path, tiny_model_path, params, algo, logging_steps=1)
    assert main(["train", str(cfg_path), "--no-eval"]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert not summary.get("reward_function_errors")  # TRL's examples ran on every batch, in the form they expect

    cfg = load_config(str(cfg_path))
    first = EnvironmentSuite.from_config(cfg.env).problems("train")[0]
    own = first.metadata["row"]["messages"] if form == "chat" else [
        {"role": "user", "content": first.metadata["row"]["question"]}]
    expected = AutoTokenizer.from_pretrained(tiny_model_path).apply_chat_template(own, add_generation_prompt=True,
                                                                                 tokenize=False)
    assert (run / "first_prompt.txt").read_text(encoding="utf-8") == expected  # the row's turns, nothing added
    assert "Answer" not in expected and (SYSTEM in expected) == (form == "chat")
    assert expected in capsys.readouterr().err  # printed at the start of the run

    (row,) = [r for r in read_metrics(run) if "loss" in r]
    for name in [*terms, "env_reward"]:
        assert {f"rewards/{name}/mean", f"rewards/{name}/std"} <= set(row), name
    weights = {"reward_len": 0.5, "reward_func": 1.0, "format_reward_func": 1.0, "exact": 1.0}
    combined = sum(weights[t] * row[f"rewards/{t}/mean"] for t in terms)
    assert row["rewards/env_reward/mean"] == pytest.approx(combined, abs=1e-4)  # the terms add up to TRL's reward
