"""Bad input to `pmd train` is rejected with one line naming the file/field/row and what was expected, exit code 2,
and nothing on disk changes: neither an existing run directory (with --resume) nor the inputs themselves, and a
fresh run directory is not even created."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import snapshot
from pmd.cli import main
from pmd.memory.store import MemoryStore

PARAMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def base_config(model: Path, run_dir: Path) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "env": {"tasks": [{"name": "basic_arithmetic", "params": PARAMS}], "train_size": 2, "eval_size": 2},
        "train": {"algo": "pmd", "steps": 1, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4},
        "run_dir": str(run_dir),
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- the bad inputs
# Each case gets (tmp dir, config dict) and returns the CLI args after `train CONFIG`; it may edit the config or
# write the bad file it points at. `expect` is what the one-line message must name.


def bad_yaml(tmp, cfg):
    (tmp / "cfg.yaml").write_text("model: {name_or_path: x\ntrain: [\n", encoding="utf-8")
    return [], ["cfg.yaml", "line 2", "invalid YAML"]


def unknown_key(tmp, cfg):
    cfg["train"]["stepz"] = 3
    return [], ["cfg.yaml", "unknown config key train.stepz"]


def wrong_type(tmp, cfg):
    cfg["train"]["steps"] = "four"
    return [], ["cfg.yaml", "train.steps", "expected an integer", "'four'"]


def wrong_set_override(tmp, cfg):
    return ["--set", "memory.reflect_every=often"], ["memory.reflect_every", "expected an integer"]


def not_utf8_config(tmp, cfg):
    (tmp / "cfg.yaml").write_bytes(b"model: {name_or_path: caf\xe9}\n")
    return [], ["cfg.yaml", "not UTF-8"]


def missing_model(tmp, cfg):
    cfg["model"]["name_or_path"] = str(tmp / "no-such-model")
    return [], ["no-such-model", "does not exist"]


def model_without_weights(tmp, cfg):
    src = Path(cfg["model"]["name_or_path"])
    dst = tmp / "hollow-model"
    dst.mkdir()
    for f in src.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, dst / f.name)
    cfg["model"]["name_or_path"] = str(dst)
    return [], ["hollow-model", "no weights"]


def model_broken_config(tmp, cfg):
    dst = tmp / "broken-model"
    shutil.copytree(cfg["model"]["name_or_path"], dst)
    (dst / "config.json").write_text("{not json", encoding="utf-8")
    cfg["model"]["name_or_path"] = str(dst)
    return [], ["broken-model", "config.json"]


def memory_not_sqlite(tmp, cfg):
    (tmp / "seed.sqlite").write_bytes(os.urandom(4096))
    cfg["memory"] = {"load_from": str(tmp / "seed.sqlite")}
    return [], ["seed.sqlite", "not a SQLite database", "expected a pmd memory store"]


def _run_sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement)
    conn.commit()
    conn.close()


def memory_foreign(tmp, cfg):
    _run_sql(tmp / "seed.sqlite", "CREATE TABLE notes (x)")
    cfg["memory"] = {"load_from": str(tmp / "seed.sqlite")}
    return [], ["seed.sqlite", "is not ours"]


def memory_newer_schema(tmp, cfg):
    MemoryStore(tmp / "seed.sqlite").close()
    _run_sql(tmp / "seed.sqlite", "PRAGMA user_version = 99")
    cfg["memory"] = {"load_from": str(tmp / "seed.sqlite")}
    return [], ["seed.sqlite", "schema version 99 is newer"]


def memory_corrupt(tmp, cfg):
    with MemoryStore(tmp / "good.sqlite") as store:
        store.meta_set("k", "v" * 20000)
    data = bytearray((tmp / "good.sqlite").read_bytes())
    data[4096:] = bytes(len(data) - 4096)  # zero every page after the first
    (tmp / "seed.sqlite").write_bytes(bytes(data))
    cfg["memory"] = {"load_from": str(tmp / "seed.sqlite")}
    return [], ["seed.sqlite", "corrupt"]


def code_task(cfg, path: Path) -> None:
    cfg["env"]["tasks"] = [{"kind": "code", "name": "mine", "params": {"source": str(path)}}]


def dataset_malformed_row(tmp, cfg):
    good = {"question_content": "Print 1.", "public_test_cases": json.dumps([{"input": "", "output": "1",
                                                                            "testtype": "stdin"}])}
    (tmp / "tasks.jsonl").write_text(json.dumps(good) + "\n{\"question_content\": \n", encoding="utf-8")
    code_task(cfg, tmp / "tasks.jsonl")
    return [], ["tasks.jsonl", "row 2", "invalid JSON"]


def dataset_empty(tmp, cfg):
    (tmp / "tasks.jsonl").write_text("\n", encoding="utf-8")
    code_task(cfg, tmp / "tasks.jsonl")
    return [], ["tasks.jsonl", "no problems found"]


def dataset_not_utf8(tmp, cfg):
    (tmp / "tasks.jsonl").write_bytes(b'{"question_content": "caf\xe9"}\n')
    code_task(cfg, tmp / "tasks.jsonl")
    return [], ["tasks.jsonl", "not valid UTF-8"]


def dataset_missing_field(tmp, cfg):
    (tmp / "tasks.jsonl").write_text(json.dumps({"public_test_cases": "[]"}) + "\n", encoding="utf-8")
    code_task(cfg, tmp / "tasks.jsonl")
    return [], ["tasks.jsonl", "row 1", "question_content"]


def trl_unknown_field(tmp, cfg):
    cfg["train"]["trl"] = {"warmup_ratio": 0.05}
    return [], ["cfg.yaml", "train.trl.warmup_ratio", "did you mean warmup_steps?"]


def trl_field_pmd_owns(tmp, cfg):
    return ["--set", "train.trl={max_steps: 3}"], ["train.trl.max_steps", "set train.steps instead"]


def report_to_typo(tmp, cfg):
    cfg["train"]["report_to"] = ["tensorbord"]
    return [], ["cfg.yaml", "train.report_to", "did you mean 'tensorboard'?"]


def report_to_package_missing(tmp, cfg):
    cfg["train"]["report_to"] = "swanlab"  # a valid integration whose package this venv does not have
    return [], ["train.report_to", "'swanlab' needs the swanlab package"]


def vllm_where_it_cannot_run(tmp, cfg):
    cfg["train"]["use_vllm"] = True  # no CUDA here (and no vllm package): refused before anything is written
    return [], ["train.use_vllm: true needs"]


def own_task(tmp, cfg, reward: str, prompt: str = "question") -> None:
    rows = [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(8)]
    (tmp / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp / "score.py").write_text("def broken(prompts, completions, **kw):\n    raise ValueError('no')\n",
                                  encoding="utf-8")
    cfg["env"]["tasks"] = [{"kind": "dataset", "name": "qa", "params": {
        "path": str(tmp / "qa.jsonl"), "prompt": prompt, "rewards": [{"function": reward}]}}]


def own_task_missing_column(tmp, cfg):
    own_task(tmp, cfg, f"{tmp / 'score.py'}:broken", prompt="query")
    return [], ["qa.jsonl", "no column 'query'", "env.tasks[0].params.prompt"]


def own_task_unimportable_function(tmp, cfg):
    own_task(tmp, cfg, "no_such_package.rewards:score")
    return [], ["env.tasks[0].params.rewards[0].function", "cannot import 'no_such_package.rewards'"]


def own_task_reward_raises_on_first_rows(tmp, cfg):
    own_task(tmp, cfg, f"{tmp / 'score.py'}:broken")
    return [], ["env.tasks[0].params.rewards[0] (broken) failed on the first rows", "ValueError: no"]


def batch_that_fits_no_ranks(tmp, cfg):
    cfg["train"]["per_device_batch_size"] = 3
    return [], ["cfg.yaml", "train.per_device_batch_size 3", "4 sequences"]


# ------------------------------------------------------------------ issue 16, "Configs and inputs": strict configs


def empty_yaml(tmp, cfg):
    (tmp / "cfg.yaml").write_text("# all defaults?\n", encoding="utf-8")
    return [], ["cfg.yaml", "empty config"]


def duplicate_key(tmp, cfg):
    text = yaml.safe_dump(cfg, sort_keys=False).replace("  steps: 1\n", "  steps: 1\n  steps: 300\n")
    (tmp / "cfg.yaml").write_text(text, encoding="utf-8")
    line = text.splitlines().index("  steps: 300") + 1
    return [], ["cfg.yaml", f"line {line}", "duplicate key 'steps'"]


def yaml_alias_bomb(tmp, cfg):
    """600 bytes that expand to 9**9 items: refused at the first anchor, before anything is expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    (tmp / "cfg.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [], ["cfg.yaml", "line 1", "anchors and aliases are not allowed"]


def yaml_60_mb(tmp, cfg):
    with (tmp / "cfg.yaml").open("w", encoding="utf-8") as fh:
        fh.write(yaml.safe_dump(cfg))
        line = "# " + "x" * 77 + "\n"
        fh.write(line * (60 * 2**20 // len(line)))
    return [], ["cfg.yaml", "too large for a run config"]


def yaml_nested_too_deep(tmp, cfg):
    (tmp / "cfg.yaml").write_text("train: {trl: {x: " + "[" * 5000 + "]" * 5000 + "}}\n", encoding="utf-8")
    return [], ["cfg.yaml", "nested more than 64 levels deep"]


def setting(section: str, key: str, value, *expect: str):
    """A case that sets cfg[section][key] = value (section "" = top level) and expects the words `expect`."""
    def case(tmp, cfg):
        (cfg.setdefault(section, {}) if section else cfg)[key] = value
        return [], ["cfg.yaml", *expect]
    case.__name__ = f"{section or 'top'}_{key}_{value!r}"
    return case


def distillation_topk_beyond_vocabulary(tmp, cfg):
    cfg["train"]["distillation_topk"] = 100000
    return [], ["train.distillation_topk", "100000 is more than", "vocabulary of 167 tokens"]


def completion_beyond_context(tmp, cfg):
    cfg["train"]["max_completion_length"] = 100000
    return [], ["train.max_completion_length", "100256 tokens", "context of 1024"]


def prompts_per_step_beyond_training_set(tmp, cfg):
    """Was: exit 0, 0 steps trained, and the base model saved as final."""
    cfg["train"]["prompts_per_step"] = 50
    return [], ["train.prompts_per_step", "50 distinct problems per step", "training set has 2"]


def lenient_credit(value, *expect):
    def case(tmp, cfg):
        cfg["env"]["tasks"][0]["params"] = {**PARAMS, "lenient_credit": value}
        return [], ["env.tasks[0].params.lenient_credit", *expect]
    case.__name__ = f"lenient_credit_{value!r}"
    return case


def model_random_bytes_as_weights(tmp, cfg):
    dst = tmp / "random-model"
    shutil.copytree(cfg["model"]["name_or_path"], dst)
    (dst / "model.safetensors").write_bytes(os.urandom(200_000))
    cfg["model"]["name_or_path"] = str(dst)
    return [], ["random-model", "model.safetensors is not a readable safetensors file"]


def model_truncated_weights(tmp, cfg):
    dst = tmp / "truncated-model"
    shutil.copytree(cfg["model"]["name_or_path"], dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 2])
    cfg["model"]["name_or_path"] = str(dst)
    return [], ["truncated-model", "not a readable safetensors file"]


def model_weights_of_another_shape(tmp, cfg):
    """config.json of one model, weights of another (random values, valid file): the shapes disagree."""
    import torch
    from safetensors.torch import save_file

    dst = tmp / "mismatched-model"
    shutil.copytree(cfg["model"]["name_or_path"], dst)
    vocab = json.loads((dst / "config.json").read_text())["vocab_size"]
    save_file({"model.embed_tokens.weight": torch.randn(vocab, 64)}, str(dst / "model.safetensors"))
    cfg["model"]["name_or_path"] = str(dst)
    return [], ["mismatched-model", "model.embed_tokens.weight of shape [167, 64]", "expects [167, 32]"]


def hf_id_while_offline(tmp, cfg):
    """Was 12 lines (huggingface_hub's retries) after 25 s. The test runs with HF_HUB_OFFLINE=1."""
    cfg["model"]["name_or_path"] = "pmd-test-org/no-such-model"
    return [], ["pmd-test-org/no-such-model", "not in the local Hugging Face cache", "HF_HUB_OFFLINE"]


def missing_reflector(tmp, cfg):
    """Was: the run directory was created before the reflector failed to load."""
    cfg["memory"] = {"reflector": str(tmp / "no-such-reflector")}
    return [], ["memory.reflector", "no-such-reflector", "does not exist"]


def run_dir_in_proc(tmp, cfg):
    cfg["run_dir"] = "/proc/x"
    return [], ["run_dir", "/proc/x"]


STRICT_CONFIG_CASES = [
    empty_yaml, duplicate_key, yaml_alias_bomb, yaml_60_mb, yaml_nested_too_deep,
    setting("train", "steps", 1e30, "train.steps: expected an integer"),
    setting("train", "steps", 10**14, "train.steps", "at most 2147483647"),
    setting("train", "save_steps", -1, "train.save_steps: expected >= 0"),
    setting("train", "learning_rate", float("inf"), "train.learning_rate: expected a finite number"),
    setting("train", "learning_rate", float("nan"), "train.learning_rate: expected a finite number"),
    setting("train", "learning_rate", 3.0, "train.learning_rate: expected a value in (0, 1]"),
    setting("train", "top_p", 0, "train.top_p: expected a value in (0, 1]"),
    setting("train", "temperature", -1, "train.temperature: expected > 0"),
    setting("train", "max_prompt_length", 0, "train.max_prompt_length: expected a positive integer"),
    setting("train", "logging_steps", 0, "train.logging_steps: expected a positive integer"),
    setting("train", "num_generations", 1, "train.num_generations: expected >= 2"),
    setting("eval", "top_p", 1.5, "eval.top_p: expected a value in (0, 1]"),
    setting("", "run_dir", "", "run_dir: expected a non-empty string"),
    setting("", "run_dir", "runs/a\x00b", "run_dir: expected text without NUL characters"),
    setting("compare", "seeds", [], "compare.seeds: expected at least 1 item"),
    setting("compare", "variants", [], "compare.variants: expected at least 1 item"),
    setting("compare", "seeds", [0, 0], "compare.seeds", "names 0 twice"),
    lenient_credit("abc", "expected a number, got 'abc'"),
    lenient_credit(1.5, "expected a value in [0, 1]"),
    distillation_topk_beyond_vocabulary, completion_beyond_context, prompts_per_step_beyond_training_set,
    model_random_bytes_as_weights, model_truncated_weights, model_weights_of_another_shape, hf_id_while_offline,
    missing_reflector,
    run_dir_in_proc,  # rundir.check_run_dir, called by preflight
]


CASES = [bad_yaml, unknown_key, wrong_type, wrong_set_override, not_utf8_config, missing_model,
         model_without_weights, model_broken_config, memory_not_sqlite, memory_foreign, memory_newer_schema,
         memory_corrupt, dataset_malformed_row, dataset_empty, dataset_not_utf8, dataset_missing_field,
         trl_unknown_field, trl_field_pmd_owns, report_to_typo, batch_that_fits_no_ranks, report_to_package_missing,
         vllm_where_it_cannot_run, own_task_missing_column, own_task_unimportable_function,
         own_task_reward_raises_on_first_rows, *STRICT_CONFIG_CASES]


# ------------------------------------------------------------------ issue 27: user functions and data


def own_rows(tmp, name="qa.jsonl", rows=None) -> str:
    rows = rows if rows is not None else [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(8)]
    (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(tmp / name)


def own_data_task(cfg, path: str, rewards=None, **params) -> None:
    cfg["env"]["tasks"] = [{"kind": "dataset", "name": "qa", "params": {
        "path": path, "rewards": rewards or [{"verifier": "exact"}], **params}}]


def own_function(tmp, cfg, body: str, name: str = "f") -> None:
    (tmp / "score.py").write_text(body, encoding="utf-8")
    own_data_task(cfg, own_rows(tmp), [{"function": f"{tmp / 'score.py'}:{name}"}])


def reward_exits_0_on_first_rows(tmp, cfg):
    """Was: exit 0, no output, nothing trained."""
    own_function(tmp, cfg, "def f(prompts, completions, **kw):\n    raise SystemExit(0)\n")
    return [], ["env.tasks[0].params.rewards[0] (f) failed on the first rows", "SystemExit: 0"]


def reward_raises_generator_exit_on_first_rows(tmp, cfg):
    own_function(tmp, cfg, "def f(prompts, completions, **kw):\n    raise GeneratorExit('stop')\n")
    return [], ["env.tasks[0].params.rewards[0] (f)", "GeneratorExit: stop"]


def reward_module_exits_at_import(tmp, cfg):
    """Was: exit code 3 and not a word."""
    own_function(tmp, cfg, "import sys\nsys.exit(3)\ndef f(prompts, completions, **kw):\n    return [1.0]\n")
    return [], ["env.tasks[0].params.rewards[0].function", "cannot import", "SystemExit: 3"]


def reward_weight(value):
    def case(tmp, cfg):
        own_data_task(cfg, own_rows(tmp), [{"verifier": "exact", "weight": value}])
        return [], ["env.tasks[0].params.rewards[0].weight", "expected > 0", f"got {value}"]
    case.__name__ = f"reward_weight_{value}"  # was: every rollout passed, even one with no answer
    return case


def data_folder_mixing_formats(tmp, cfg):
    """Was: b.csv dropped without a word."""
    (tmp / "data").mkdir()
    own_rows(tmp / "data", "a.jsonl")
    (tmp / "data" / "b.csv").write_text("question,answer\n9 + 9?,18\n", encoding="utf-8")
    own_data_task(cfg, str(tmp / "data"))
    return [], ["env.tasks[0].params.path", "mixes formats", "a.jsonl and b.csv"]


def numeric_reference(answer: str, label: str):
    def case(tmp, cfg):
        rows = [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(8)]
        rows[3]["answer"] = answer
        own_data_task(cfg, own_rows(tmp, rows=rows), [{"verifier": "numeric"}])
        return [], ["qa.jsonl: row 4", "is not a number", "verifier numeric"]
    case.__name__ = f"numeric_reference_{label}"  # was: ValueError (int_max_str_digits) traceback
    return case


def jsonl_line_that_is_an_array(tmp, cfg):
    """Was two lines: datasets' "Failed to load JSON ..." log, then ours, which named no row."""
    (tmp / "qa.jsonl").write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n[1, 2]\n", encoding="utf-8")
    own_data_task(cfg, str(tmp / "qa.jsonl"))
    return [], ["qa.jsonl: row 2", "must be a JSON object, got list"]


def parquet_that_is_csv(tmp, cfg):
    (tmp / "qa.parquet").write_text("question,answer\n1 + 1?,2\n", encoding="utf-8")
    own_data_task(cfg, str(tmp / "qa.parquet"))
    return [], ["qa.parquet", "Parquet magic bytes not found"]


def ragged_csv(tmp, cfg):
    (tmp / "qa.csv").write_text("question,answer\n1 + 1?,2\n2 + 2?,4,extra,more\n", encoding="utf-8")
    own_data_task(cfg, str(tmp / "qa.csv"))
    return [], ["qa.csv", "Expected 2 fields in line 3, saw 4"]


def lone_surrogate(column: str):
    def case(tmp, cfg):
        text = own_rows(tmp)
        row = {"question": "What is x?", "answer": "1"}
        line = json.dumps(row).replace("x?" if column == "question" else '"1"', "x\\ud800?" if column == "question"
                                       else '"\\udc00"')
        Path(text).write_text(Path(text).read_text() + line + "\n", encoding="utf-8")
        own_data_task(cfg, text)
        return [], ["qa.jsonl: row 9", f"column {column!r} holds a lone surrogate", "not UTF-8 text"]
    case.__name__ = f"lone_surrogate_in_{column}"
    return case


# Cases of our own, in the same spirit


def pass_threshold_zero_with_verifiers_only(tmp, cfg):
    """Was: every rollout passed (verifiers score 0 to 1), as with a weight of 0."""
    own_data_task(cfg, own_rows(tmp), pass_threshold=0)
    return [], ["env.tasks[0].params.pass_threshold", "passes every reply"]


def pass_threshold_out_of_reach(tmp, cfg):
    """Was: no rollout could ever pass, and training went on without a word."""
    own_data_task(cfg, own_rows(tmp), [{"verifier": "exact"}, {"verifier": "numeric", "weight": 0.5}],
                  pass_threshold=2)
    return [], ["env.tasks[0].params.pass_threshold", "above the highest reward", "1.5"]


def reward_raising_unprintable_exception(tmp, cfg):
    """Was: a traceback (formatting the message raised again)."""
    own_function(tmp, cfg, "class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError('no text')\n"
                           "def f(prompts, completions, **kw):\n    raise Odd()\n")
    return [], ["env.tasks[0].params.rewards[0] (f) failed on the first rows", "Odd"]


def reward_returning_2d_array(tmp, cfg):
    own_function(tmp, cfg, "import numpy as np\ndef f(prompts, completions, **kw):\n"
                           "    return np.ones((len(completions), 1))\n")
    return [], ["env.tasks[0].params.rewards[0] (f)", "returned ndarray of shape (2, 1)"]


def reward_returning_endless_generator(tmp, cfg):
    own_function(tmp, cfg, "import itertools\ndef f(prompts, completions, **kw):\n"
                           "    return (1.0 for _ in itertools.count())\n")
    return [], ["env.tasks[0].params.rewards[0] (f)", "returned more than 2 values for 2 completions"]


def reward_returning_a_set(tmp, cfg):
    own_function(tmp, cfg, "def f(prompts, completions, **kw):\n    return {0.0, 1.0}\n")
    return [], ["env.tasks[0].params.rewards[0] (f)", "returned set"]


def data_path_that_is_a_device(tmp, cfg):
    """Was: datasets read /dev/zero forever."""
    (tmp / "qa.jsonl").symlink_to("/dev/zero")
    own_data_task(cfg, str(tmp / "qa.jsonl"))
    return [], ["env.tasks[0].params.path", "qa.jsonl is not a regular file"]


def data_folder_without_data_files(tmp, cfg):
    (tmp / "data").mkdir()
    (tmp / "data" / "notes.md").write_text("# my data\n", encoding="utf-8")
    own_data_task(cfg, str(tmp / "data"))
    return [], ["env.tasks[0].params.path", "no .jsonl, .json, .csv, .parquet file in this folder"]


def saved_dataset_dict_without_splits(tmp, cfg):
    import datasets

    datasets.DatasetDict({}).save_to_disk(str(tmp / "saved"))
    own_data_task(cfg, str(tmp / "saved"))
    return [], ["env.tasks[0].params.path", "has splits [], not 'train'"]


def column_named_like_a_trl_argument(tmp, cfg):
    """Was: "f() got multiple values for keyword argument 'completions'", blamed on the reward function."""
    own_function(tmp, cfg, "def f(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    rows = [{"question": f"{i} + 1?", "answer": str(i + 1), "completions": "x"} for i in range(8)]
    own_rows(tmp, rows=rows)
    return [], ["qa.jsonl", "column 'completions'", "rename the column"]


USER_FUNCTION_AND_DATA_CASES = [
    reward_exits_0_on_first_rows, reward_raises_generator_exit_on_first_rows, reward_module_exits_at_import,
    reward_weight(0), reward_weight(-1), data_folder_mixing_formats,
    numeric_reference("1/" + "7" * 5000, "5000_digit_denominator"),
    numeric_reference("1e" + "7" * 5000, "5000_digit_exponent"),
    jsonl_line_that_is_an_array, parquet_that_is_csv, ragged_csv, lone_surrogate("question"), lone_surrogate("answer"),
    pass_threshold_zero_with_verifiers_only, pass_threshold_out_of_reach, reward_raising_unprintable_exception,
    reward_returning_2d_array, reward_returning_endless_generator, reward_returning_a_set, data_path_that_is_a_device,
    data_folder_without_data_files, saved_dataset_dict_without_splits, column_named_like_a_trl_argument,
]
CASES += USER_FUNCTION_AND_DATA_CASES


def accepted_function(label: str, body: str):
    """A reward function TRL takes as it is: pmd must take it too (it was refused at the first rows)."""
    def case(tmp, cfg):
        own_function(tmp, cfg, body)
    case.__name__ = f"reward_returning_{label}"
    return case


USER_FUNCTION_AND_DATA_ACCEPTED = [
    accepted_function("numpy_array", "import numpy as np\ndef f(prompts, completions, **kw):\n"
                                     "    return np.ones(len(completions))\n"),
    accepted_function("generator", "def f(prompts, completions, **kw):\n    return (1.0 for _ in completions)\n"),
    accepted_function("from_async_def", "async def f(prompts, completions, **kw):\n"
                                        "    return [1.0] * len(completions)\n"),
    accepted_function("tensor", "import torch\ndef f(prompts, completions, **kw):\n"
                                "    return torch.ones(len(completions))\n"),
]


def case_id(case) -> str:
    return getattr(case, "__name__", None) or case.values[0].__name__


def existing_run(run_dir: Path) -> None:
    """A run directory as a killed run leaves it: config, metrics, a memory store with rows, a checkpoint dir."""
    (run_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (run_dir / "config.yaml").write_text("run_dir: x\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    with MemoryStore(run_dir / "memory.sqlite") as store:
        store.meta_set("last_reflected_step", 0)


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, resume, tmp_path, tiny_model_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    cfg = base_config(tiny_model_path, run_dir)
    if resume:
        existing_run(run_dir)
    extra, expect = case(tmp_path, cfg)
    if not (tmp_path / "cfg.yaml").exists():
        write_yaml(tmp_path / "cfg.yaml", cfg)
    before = snapshot(tmp_path)

    code = main(["train", "cfg.yaml", "--no-eval", *extra, *(["--resume"] if resume else [])])

    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pmd: error: "), err
    for word in expect:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path) == before, "no file was created, changed or removed"
    assert run_dir.exists() == resume


# ------------------------------------------------------------------ every subcommand
# Each case gets (tmp dir, tiny model path), prepares what it needs under tmp and returns (argv, words the one line
# must hold). It runs with tmp as the working directory; nothing under tmp may change.


def small_run(tmp: Path, name: str = "run") -> Path:
    """A run directory as `pmd train` starts one: config, metrics and a memory store with a row."""
    from pmd.config import RunConfig, save_config

    run = tmp / name
    run.mkdir()
    save_config(RunConfig(), run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    with MemoryStore(run / "memory.sqlite") as store:
        store.meta_set("last_reflected_step", 0)
    return run


def eval_set_without_config(tmp, model):
    """Was: --set ignored without a config file, and the full default evaluation run."""
    return ["eval", "--model", str(model), "--set", "eval.top_p=0"], ["--set eval.top_p=0", "eval.top_p"]


def eval_memory_without_memory_at_inference(tmp, model):
    small_run(tmp)
    return ["eval", "--model", str(model), "--memory", "run"], ["--memory run", "eval.memory_at_inference"]


def eval_model_random_bytes_as_weights(tmp, model):
    dst = tmp / "random-model"
    shutil.copytree(model, dst)
    (dst / "model.safetensors").write_bytes(os.urandom(200_000))
    return ["eval", "--model", str(dst), "--set", "env.eval_size=2"], ["random-model", "not a readable safetensors"]


def eval_hf_id_offline(tmp, model):
    return (["eval", "--model", "pmd-test-org/no-such-model", "--set", "env.eval_size=2"],
            ["pmd-test-org/no-such-model", "not in the local Hugging Face cache"])


def compare_config(tmp, model, **compare) -> list[str]:
    cfg = base_config(model, tmp / "unused")
    cfg["compare"] = {"out_dir": str(tmp / "cmp"), **compare}
    write_yaml(tmp / "cfg.yaml", cfg)
    return ["compare", "cfg.yaml"]


def compare_no_seeds(tmp, model):
    """Was: exit 0 and nothing run."""
    return compare_config(tmp, model, seeds=[]), ["compare.seeds: expected at least 1 item"]


def compare_no_variants(tmp, model):
    return compare_config(tmp, model, variants=[]), ["compare.variants: expected at least 1 item"]


def compare_unknown_variant(tmp, model):
    return compare_config(tmp, model, variants=["pmd", "ppo"]), ["compare.variants[1]", "unknown variant 'ppo'"]


def compare_prompts_per_step_beyond_training_set(tmp, model):
    argv = compare_config(tmp, model, variants=["grpo"], seeds=[0])
    cfg = yaml.safe_load((tmp / "cfg.yaml").read_text())
    cfg["train"]["prompts_per_step"] = 50
    write_yaml(tmp / "cfg.yaml", cfg)
    return argv, ["train.prompts_per_step", "training set has 2"]


def explain_relative_run_without_final(tmp, model):
    """Was: `run/final` looked up on the model hub (54 s, 23 lines)."""
    small_run(tmp)
    return ["explain", "run"], ["run/final", "no final weights"]


def report_truncated_summary(tmp, model):
    run = small_run(tmp)
    (run / "summary.json").write_text('{"algo": "pmd", "steps"')
    return ["report", "run"], ["summary.json", "unreadable"]


def report_wrong_typed_summary(tmp, model):
    run = small_run(tmp)
    (run / "summary.json").write_text('[1, 2, 3]')
    return ["report", "run"], ["summary.json"]


def memory_stats_not_a_store(tmp, model):
    (tmp / "notes.sqlite").write_bytes(os.urandom(4096))
    return ["memory", "stats", "notes.sqlite"], ["notes.sqlite", "not a SQLite database"]


def memory_export_onto_its_store(tmp, model):
    """Was: the store truncated to 0 bytes."""
    small_run(tmp)
    return ["memory", "export", "run", "--out", "run/memory.sqlite"], ["--out run/memory.sqlite", "memory store"]


def train_empty_config(tmp, model):
    (tmp / "cfg.yaml").write_text("")
    return ["train", "cfg.yaml"], ["cfg.yaml", "empty config"]


SUBCOMMAND_CASES = [
    train_empty_config, eval_set_without_config, eval_memory_without_memory_at_inference,
    eval_model_random_bytes_as_weights, eval_hf_id_offline, compare_no_seeds, compare_no_variants,
    compare_unknown_variant, compare_prompts_per_step_beyond_training_set, explain_relative_run_without_final,
    report_truncated_summary,
    report_wrong_typed_summary,  # report.check_inputs
    memory_stats_not_a_store, memory_export_onto_its_store,
]


# issue 27: memory files and run dir
# A store as pmd writes it, then changed outside pmd (`edit`: SQL run on it with CHECK constraints off).


def edited_store(path: Path, edit: str) -> Path:
    from pmd.memory.store import Experience, RetrievalRecord

    with MemoryStore(path) as store:
        store.add_experiences([Experience("p1", "arith", "q", "r", 0.0, False, "wrong", 0, 0)])
        store.log_retrieval([RetrievalRecord(0, "p1", 0, "shown", ["i:1"], 3)])
        store.meta_set("last_reflected_step", 0)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.executescript(edit)
    conn.commit()
    conn.close()
    return path


def train_with_seed(tmp, model, edit: str) -> list[str]:
    edited_store(tmp / "seed.sqlite", edit)
    cfg = base_config(model, tmp / "run")
    cfg["memory"] = {"load_from": str(tmp / "seed.sqlite")}
    write_yaml(tmp / "cfg.yaml", cfg)
    return ["train", "cfg.yaml"]


def load_from_with_a_trigger(tmp, model):
    """Was: the trigger was copied and rewrote every attempt as passed with reward 1.0."""
    edit = ("CREATE TRIGGER all_pass AFTER INSERT ON experiences BEGIN "
            "UPDATE experiences SET passed = 1, reward = 1.0; END;")
    return train_with_seed(tmp, model, edit), ["seed.sqlite", "trigger 'all_pass'"]


def load_from_last_reflected_step_text(tmp, model):
    edit = "UPDATE meta SET value = '\"abc\"' WHERE key = 'last_reflected_step'"
    return train_with_seed(tmp, model, edit), ["seed.sqlite", "meta.value", "last_reflected_step"]


def load_from_with_an_extra_column(tmp, model):
    """Own case. Was: accepted, and the foreign column copied into the run's store."""
    edit = "ALTER TABLE experiences ADD COLUMN note TEXT"
    return train_with_seed(tmp, model, edit), ["seed.sqlite", "table 'experiences'", "note"]


def load_from_step_not_an_integer(tmp, model):
    """Own case. Was: accepted; the seed's step 1.5 went into this run's history."""
    return train_with_seed(tmp, model, "UPDATE experiences SET step = 1.5"), ["seed.sqlite", "experiences.step"]


def memory_show_reward_text(tmp, model):
    """Was: a traceback (ValueError: Unknown format code 'f' for object of type 'str')."""
    small_run(tmp)
    edited_store(tmp / "memory.sqlite", "UPDATE experiences SET reward = 'abc'")
    return ["memory", "show", "memory.sqlite"], ["memory.sqlite", "experiences.reward", "row id 1"]


def memory_stats_item_refs_not_json(tmp, model):
    """Was: a traceback (JSONDecodeError)."""
    edited_store(tmp / "memory.sqlite", "UPDATE retrievals SET item_refs = 'not json'")
    return ["memory", "stats", "memory.sqlite"], ["memory.sqlite", "retrievals.item_refs", "row id 1"]


def memory_stats_item_refs_of_numbers(tmp, model):
    """Own case. Was: a traceback (AttributeError: 'int' object has no attribute 'split')."""
    edited_store(tmp / "memory.sqlite", "UPDATE retrievals SET item_refs = '[1, 2]'")
    return ["memory", "stats", "memory.sqlite"], ["memory.sqlite", "retrievals.item_refs", "JSON list of strings"]


def memory_show_prompt_bytes(tmp, model):
    """Own case. Was: exit 0, the prompt shown as Python bytes (and retrieval would read them as a prompt)."""
    edited_store(tmp / "memory.sqlite", "UPDATE experiences SET prompt = x'00ff'")
    return ["memory", "show", "memory.sqlite", "--problem", "p1"], ["memory.sqlite", "experiences.prompt"]


def report_where_report_md_is_a_directory(tmp, model):
    """Was: training.png replaced, then the error."""
    run = small_run(tmp)
    (run / "report.md").mkdir()
    (run / "training.png").write_bytes(b"an earlier figure")
    return ["report", "run"], ["run/report.md", "is a directory"]


def report_config_not_utf8(tmp, model):
    """Own case. Was: a traceback (UnicodeDecodeError) from the report's header."""
    run = small_run(tmp)
    (run / "config.yaml").write_bytes(b"train: {algo: caf\xe9}\n")
    return ["report", "run"], ["run/config.yaml", "unreadable"]


_HELD: list = []  # run-dir locks held for the length of the process, as a live `pmd train` holds its own


def held_run(tmp: Path) -> Path:
    from pmd.rundir import RunDirLock

    run = small_run(tmp)
    _HELD.append(RunDirLock(run).acquire())
    return run


def report_during_a_live_train(tmp, model):
    """Was: exit 0, report.md and both PNGs rewritten inside the run a live train holds."""
    held_run(tmp)
    return ["report", "run"], ["run", "another pmd process", "pmd report run"]


def eval_out_onto_a_memory_store(tmp, model):
    """Was: the store replaced by JSON."""
    small_run(tmp)
    return (["eval", "--model", str(model), "--set", "env.eval_size=2", "--out", "run/memory.sqlite"],
            ["--out run/memory.sqlite", "SQLite database"])


def eval_out_onto_its_config(tmp, model):
    """Was: the config replaced by the evaluation."""
    write_yaml(tmp / "cfg.yaml", base_config(model, tmp / "run"))
    return ["eval", "cfg.yaml", "--out", "cfg.yaml"], ["--out cfg.yaml", "config file"]


def eval_out_onto_a_file_of_notes(tmp, model):
    (tmp / "notes.txt").write_text("my notes\n")
    return (["eval", "--model", str(model), "--set", "env.eval_size=2", "--out", "notes.txt"],
            ["--out notes.txt", "not an earlier pmd evaluation"])


def eval_out_into_a_run_a_live_train_holds(tmp, model):
    """Own case. Was: the evaluation written into the held run directory."""
    held_run(tmp)
    return (["eval", "--model", str(model), "--set", "env.eval_size=2", "--out", "run/eval.json"],
            ["--out run/eval.json", "live pmd train"])


def export_out_into_a_run_a_live_train_holds(tmp, model):
    """Own case. Was: the export written into the held run directory."""
    held_run(tmp)
    edited_store(tmp / "other.sqlite", "")
    return ["memory", "export", "other.sqlite", "--out", "run/other.jsonl"], ["--out run/other.jsonl", "live pmd train"]


SUBCOMMAND_CASES += [
    load_from_with_a_trigger, load_from_last_reflected_step_text, load_from_with_an_extra_column,
    load_from_step_not_an_integer, memory_show_reward_text, memory_stats_item_refs_not_json,
    memory_stats_item_refs_of_numbers, memory_show_prompt_bytes, report_where_report_md_is_a_directory,
    report_config_not_utf8, report_during_a_live_train, eval_out_onto_a_memory_store, eval_out_onto_its_config,
    eval_out_onto_a_file_of_notes, eval_out_into_a_run_a_live_train_holds, export_out_into_a_run_a_live_train_holds,
]


@pytest.mark.parametrize("case", SUBCOMMAND_CASES, ids=case_id)
def test_each_subcommand_turns_bad_input_into_one_line(case, tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv, expect = case(tmp_path, tiny_model_path)
    before = snapshot(tmp_path)

    code = main(argv)

    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pmd: error: "), err
    assert out == ""
    for word in expect:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path) == before, "no file was created, changed or removed"


# ------------------------------------------------------------------ rightly accepted
# Inputs at the edges of what is allowed: they must load and pass preflight (which writes nothing), so that the
# strict checks above refuse only what is wrong.


def accept(section: str, key: str, value):
    def case(tmp, cfg):
        (cfg.setdefault(section, {}) if section else cfg)[key] = value
    case.__name__ = f"{section or 'top'}_{key}_{value!r}"
    return case


def yaml_12_number_spellings(tmp, cfg):
    text = yaml.safe_dump(cfg).replace("  steps: 1\n", "  steps: 1\n  learning_rate: 1e-4\n  temperature: '0.7'\n")
    (tmp / "cfg.yaml").write_text(text, encoding="utf-8")


def prompts_per_step_equal_to_training_set(tmp, cfg):
    cfg["train"]["prompts_per_step"] = 2  # the training set holds 2 problems


def completion_up_to_the_context(tmp, cfg):
    cfg["train"]["max_prompt_length"] = 24
    cfg["train"]["max_completion_length"] = 1000  # 24 + 1000 = the tiny model's 1024 positions


def distillation_topk_equal_to_vocabulary(tmp, cfg):
    cfg["train"]["distillation_topk"] = 167


def lenient_credit_at_its_bounds(tmp, cfg):
    cfg["env"]["tasks"] = [{"name": "basic_arithmetic", "params": {**PARAMS, "lenient_credit": 1}},
                           {"name": "chain_sum", "params": {"lenient_credit": 0.0}}]


def relative_run_dir(tmp, cfg):
    cfg["run_dir"] = "runs/first"


def config_of_half_a_megabyte(tmp, cfg):
    cfg["env"]["system_prompt"] = "Be brief. " * 50_000


def anchors_inside_quoted_text(tmp, cfg):
    cfg["env"]["system_prompt"] = "Use &a and *b as names, and repeat: steps: 3"


ACCEPTED_CASES = [
    yaml_12_number_spellings, prompts_per_step_equal_to_training_set, completion_up_to_the_context,
    distillation_topk_equal_to_vocabulary, lenient_credit_at_its_bounds, relative_run_dir,
    config_of_half_a_megabyte, anchors_inside_quoted_text,
    accept("train", "top_p", 1), accept("train", "learning_rate", 1.0), accept("train", "save_steps", 0),
    accept("train", "seed", 2**31 - 1), accept("train", "success_reward_threshold", -2.5),
    accept("compare", "seeds", [7]), accept("compare", "variants", ["pmd"]),
    *USER_FUNCTION_AND_DATA_ACCEPTED,
]


@pytest.mark.parametrize("case", ACCEPTED_CASES, ids=case_id)
def test_inputs_at_the_edges_are_rightly_accepted(case, tmp_path, tiny_model_path, monkeypatch):
    from pmd.config import load_config
    from pmd.preflight import preflight

    monkeypatch.chdir(tmp_path)
    cfg = base_config(tiny_model_path, tmp_path / "run")
    case(tmp_path, cfg)
    if not (tmp_path / "cfg.yaml").exists():
        write_yaml(tmp_path / "cfg.yaml", cfg)
    before = snapshot(tmp_path)
    preflight(load_config("cfg.yaml"))
    assert snapshot(tmp_path) == before


def test_fresh_run_into_existing_run_is_refused(tmp_path, tiny_model_path, capsys):
    run_dir = tmp_path / "run"
    existing_run(run_dir)
    config = write_yaml(tmp_path / "cfg.yaml", base_config(tiny_model_path, run_dir))
    before = snapshot(tmp_path)
    assert main(["train", str(config), "--no-eval"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a run" in err and "--resume" in err
    assert snapshot(tmp_path) == before


def test_resume_of_finished_run_without_checkpoints_is_refused(tmp_path, tiny_model_path, capsys):
    run_dir = tmp_path / "run"
    existing_run(run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "summary.json").write_text("{}")
    config = write_yaml(tmp_path / "cfg.yaml", base_config(tiny_model_path, run_dir))
    before = snapshot(tmp_path)
    assert main(["train", str(config), "--no-eval", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint to resume from" in err and "train.save_steps" in err
    assert snapshot(tmp_path) == before


def test_run_dir_that_is_a_file(tmp_path, tiny_model_path, capsys):
    (tmp_path / "run").write_text("not a directory")
    config = write_yaml(tmp_path / "cfg.yaml", base_config(tiny_model_path, tmp_path / "run"))
    before = snapshot(tmp_path)
    assert main(["train", str(config), "--no-eval"]) == 2
    assert "run_dir" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make_db", [memory_foreign, memory_corrupt], ids=["foreign", "corrupt"])
def test_memory_command_rejects_bad_store(make_db, tmp_path, capsys):
    _, expect = make_db(tmp_path, {})
    before = snapshot(tmp_path)
    assert main(["memory", "stats", str(tmp_path / "seed.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in expect), err
    assert snapshot(tmp_path) == before


@pytest.mark.slow  # a `pmd train` process: ~6 s
def test_real_process_prints_one_line(tmp_path, tiny_model_path):
    """Through a real interpreter: no traceback, no warnings, exactly one line on stderr."""
    cfg = base_config(tiny_model_path, tmp_path / "run")
    _, expect = memory_foreign(tmp_path, cfg)
    config = write_yaml(tmp_path / "cfg.yaml", cfg)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pmd.cli", "train", str(config), "--no-eval"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("pmd: error: "), proc.stderr
    assert all(word in proc.stderr for word in expect)
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ issue 27: configs
# Appended to the lists above in place (pytest reads a parametrize list when it collects, after this module has run,
# and benchmarks/reliability.py reads the lists), so that this area's cases stay in one block.


def yaml_text(tmp, cfg, extra: str) -> None:
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg) + extra, encoding="utf-8")


def number_key_beside_text_key(tmp, cfg):
    """Was: TypeError from sorted() over the unknown keys (int < str)."""
    yaml_text(tmp, cfg, "1: a\nfoo: b\n")
    return [], ["cfg.yaml", "top level: key 1 is a number, not a name"]


def null_key(tmp, cfg):
    yaml_text(tmp, cfg, "null: a\nfoo: b\n")
    return [], ["cfg.yaml", "key null is null, not a name"]


def boolean_key_in_a_section(tmp, cfg):
    text = yaml.safe_dump(cfg).replace("train:\n", "train:\n  true: 1\n  stepz: 2\n")
    (tmp / "cfg.yaml").write_text(text, encoding="utf-8")
    return [], ["cfg.yaml", "train: key true is a boolean, not a name"]


def number_key_in_trl_passthrough(tmp, cfg):
    cfg["train"]["trl"] = {1: 2}
    return [], ["cfg.yaml", "train.trl: key 1 is a number, not a name"]


def lone_surrogate(section: str, key: str):
    """Was: preflight passed, config.yaml and the lock were written, then build_dataset raised UnicodeEncodeError
    (and a rerun was refused: "already holds a run"); in run_dir it raised at once."""
    def case(tmp, cfg):
        (cfg[section] if section else cfg)[key] = "@@surrogate@@"
        (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg).replace("'@@surrogate@@'", '"a\\ud800b"'), encoding="utf-8")
        return [], ["cfg.yaml", f"{section + '.' if section else ''}{key}: not valid text", "lone surrogate"]
    case.__name__ = f"lone_surrogate_in_{section or 'top'}_{key}"
    return case


def tiny_copy(tmp, cfg, name: str) -> Path:
    dst = tmp / name
    shutil.copytree(cfg["model"]["name_or_path"], dst)
    cfg["model"]["name_or_path"] = str(dst)
    return dst


def lora_target_the_model_lacks(tmp, cfg):
    """Was: PEFT's "Target modules {'no_such_proj'} not found" traceback, after the run directory was written."""
    cfg["train"].update(lora_r=4, lora_target_modules=["no_such_proj"])
    return [], ["train.lora_target_modules[0]", "'no_such_proj' names no module", "q_proj", "v_proj"]


def lora_target_a_container(tmp, cfg):
    cfg["train"].update(lora_r=4, lora_target_modules=["q_proj", "mlp"])
    return [], ["train.lora_target_modules[1]", "LlamaMLP modules, which LoRA cannot adapt"]


def chat_template(name: str, template: str | None, *expect: str):
    """A tokenizer whose chat template is missing, not Jinja, or raises: was a failure at the first generation, after
    the run directory was written."""
    def case(tmp, cfg):
        dst = tiny_copy(tmp, cfg, "templated-model")
        if template is None:
            (dst / "chat_template.jinja").unlink()
        else:
            (dst / "chat_template.jinja").write_text(template, encoding="utf-8")
        return [], ["templated-model", *expect]
    case.__name__ = f"chat_template_{name}"
    return case


def model_config_edit(name: str, edit: dict, *expect: str):
    """config.json edited: a model that loads as a config but cannot be trained as a causal LM."""
    def case(tmp, cfg):
        dst = tiny_copy(tmp, cfg, "edited-model")
        data = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**data, **edit}), encoding="utf-8")
        return [], ["edited-model", *expect]
    case.__name__ = f"model_config_{name}"
    return case


def tokenizer_without_pad_or_eos(tmp, cfg):
    dst = tiny_copy(tmp, cfg, "padless-model")
    data = json.loads((dst / "tokenizer_config.json").read_text())
    data.pop("pad_token")
    data.pop("eos_token")
    (dst / "tokenizer_config.json").write_text(json.dumps(data), encoding="utf-8")
    return [], ["padless-model", "neither a pad_token nor an eos_token"]


def compare_seeds_100k(tmp, cfg):
    """Was: over 120 s in a quadratic duplicate check (600 KB, under the 1 MiB cap)."""
    text = yaml.safe_dump(cfg) + "compare: {seeds: [" + ", ".join(map(str, range(100_000))) + "]}\n"
    (tmp / "cfg.yaml").write_text(text, encoding="utf-8")
    return [], ["cfg.yaml", "compare.seeds: expected at most 1000 items", "got 100000"]


def generator_raising(tmp, cfg):
    """Was: ZeroDivisionError traceback from inside reasoning-gym (its default basic_arithmetic at this size)."""
    cfg["env"].update(tasks=[{"name": "basic_arithmetic"}], train_size=50_000)
    return [], ["task basic_arithmetic", "reasoning-gym generator raised ZeroDivisionError"]


def run_dir_name_too_long(tmp, cfg):
    """Was: OSError (File name too long) traceback from the first stat."""
    cfg["run_dir"] = str(tmp / ("x" * 300))
    return [], ["run_dir", "300 bytes", "at most 255"]


def run_dir_path_too_long(tmp, cfg):
    cfg["run_dir"] = str(tmp / "/".join(["y" * 200] * 20))
    return [], ["run_dir", "expected at most 3840"]


ISSUE_27_CONFIG_CASES = [
    number_key_beside_text_key, null_key, boolean_key_in_a_section, number_key_in_trl_passthrough,
    lone_surrogate("env", "system_prompt"), lone_surrogate("", "run_dir"), lone_surrogate("model", "name_or_path"),
    lora_target_the_model_lacks, lora_target_a_container,
    chat_template("missing", None, "has no chat template"),
    chat_template("not_jinja", "{% for m in messages %}{{ m['content'] }", "TemplateSyntaxError"),
    chat_template("raising", "{{ raise_exception('System role not supported') }}", "System role not supported"),
    setting("env", "train_size", 2147483647, "env.train_size", "at most 1000000", "generated when the run starts"),
    setting("env", "eval_size", 1_000_001, "env.eval_size", "at most 1000000"),
    compare_seeds_100k,
    # found by probing, beyond the issue's list:
    model_config_edit("seq2seq", {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]},
                      "model_type 't5' is not a causal language model"),
    model_config_edit("base_model_class", {"model_type": "bert", "architectures": ["BertModel"]},
                      "architectures names BertModel", "BertLMHeadModel"),
    model_config_edit("zero_heads", {"num_attention_heads": 0}, "unreadable config.json", "ZeroDivisionError"),
    model_config_edit("wrong_typed_field", {"max_position_embeddings": "big"}, "unreadable config.json",
                      "max_position_embeddings"),
    tokenizer_without_pad_or_eos,
    generator_raising,
    run_dir_name_too_long, run_dir_path_too_long,
]
CASES.extend(ISSUE_27_CONFIG_CASES)


def text_beyond_ascii(tmp, cfg):
    """Valid text of every plane (accents, CJK, an emoji as one character, not as a surrogate pair) is accepted."""
    cfg["env"]["system_prompt"] = "Réponds brièvement. 简短回答。 🙂"


def lora_on_named_linear_layers(tmp, cfg):
    cfg["train"].update(lora_r=4, lora_target_modules=["q_proj", "v_proj", "lm_head"])


ACCEPTED_CASES.extend([
    text_beyond_ascii, accept("env", "train_size", 1_000), accept("compare", "seeds", list(range(1000))),
    lora_on_named_linear_layers,
])
