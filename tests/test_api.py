"""The Python API (`from pmd import RunConfig, train, evaluate_model`): the README's snippet runs as shown (the model
path and the step count substituted), in-memory datasets and reward callables reach the run, bad input is one
error before anything is written, and `import pmd` stays light (issue 26, item 6)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_snippet() -> str:
    """The python block of the README's "Python API" subsection, as a reader copies it."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^### Python API\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no python block under ### Python API"
    return match.group(1)


def test_the_readme_snippet_runs(tmp_path, tiny_model_path, monkeypatch, capsys):
    code = readme_snippet()
    assert code.count('"smollm2-135m-instruct"') == 1 and code.count('"steps": 8') == 1
    code = code.replace('"smollm2-135m-instruct"', repr(str(tiny_model_path))).replace('"steps": 8', '"steps": 1')
    monkeypatch.chdir(tmp_path)  # the snippet's run_dir is relative
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(README), "exec"), namespace)
    summary = namespace["summary"]
    run = tmp_path / "runs" / "python-api"
    assert summary["steps"] == 1 and (run / "final" / "config.json").is_file() and (run / "report.md").is_file()
    assert "trained_greedy_accuracy" in summary and capsys.readouterr().out.strip().endswith("report.md")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (task,) = saved["env"]["tasks"]
    assert task["kind"] == "dataset" and task["params"]["answer"] == "answer" and task["params"]["prompt"] == "prompt"
    assert task["params"]["rewards"] == [{"verifier": "numeric", "weight": 1.0},
                                         {"function": "pmd.api:has_answer_line", "weight": 0.5}]
    assert not Path(task["params"]["path"]).exists()  # the temporary save_to_disk folder is gone
    import pmd.api

    assert pmd.api._CALLABLES == {}  # served only for the length of the call


def _rows(n: int = 12) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Calculate {a} + {a} ."}], "answer": str(2 * a), "level": a % 3}
            for a in range(n)]


def test_train_with_a_dataset_and_a_callable_then_evaluate(tmp_path, tiny_model_path):
    from datasets import Dataset

    from pmd import RunConfig, evaluate_model, train

    calls = []

    def level_reward(prompts, completions, level, **kwargs):  # TRL's signature, a dataset column by name
        calls.append({"n": len(completions), "prompt": prompts[0], "completion": completions[0], "level": level,
                      "answer": kwargs["answer"]})
        return [0.5] * len(completions)

    ds = Dataset.from_list(_rows())
    config = RunConfig(model={"name_or_path": str(tiny_model_path)}, eval={"num_samples": 0, "max_new_tokens": 4},
                       train={"steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 4})
    summary = train(config, train_dataset=ds, eval_dataset=Dataset.from_list(_rows(16)[12:]),
                    reward_funcs=level_reward, run_dir=tmp_path / "run", evaluate=False)
    assert summary["steps"] == 1 and (tmp_path / "run" / "final").is_dir()
    assert calls, "the reward callable was never called"
    # called as TRL calls it: the prompt as chat messages, completions in TRL's form for them, every column
    training = [c for c in calls if c["n"] == 4]  # prompts_per_step x num_generations
    assert training and training[0]["prompt"][-1]["role"] == "user"
    assert training[0]["completion"][0]["role"] == "assistant"
    assert len(training[0]["level"]) == 4 and all(isinstance(x, int) for x in training[0]["level"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["env"]["tasks"][0]["params"]["rewards"] == [{"function": "pmd.api:level_reward", "weight": 1.0}]

    n_calls = len(calls)
    result = evaluate_model(tmp_path / "run", train_dataset=ds, eval_dataset=Dataset.from_list(_rows(16)[12:]),
                            reward_funcs=[level_reward])
    assert result["overall"]["n_problems"] == 4 and len(calls) > n_calls  # the held-out rows, scored by the callable
    assert json.dumps(result)  # the dict `pmd eval` prints


def test_bad_input_is_one_error_before_anything_is_written(tmp_path, tiny_model_path):
    from datasets import Dataset

    from pmd import ConfigError, PMDError, RunConfig, train

    with pytest.raises(ConfigError, match=r"^unknown config key train.lerning_rate \(did you mean "
                                          r"train.learning_rate\?\)$"):
        RunConfig(train={"lerning_rate": 1e-6})  # checked on construction
    config = RunConfig(model={"name_or_path": str(tiny_model_path)})
    config.train.steps = 0  # assigned after construction: checked when train() rebuilds it
    with pytest.raises(ConfigError, match=r"train.steps: expected a positive integer, got 0"):
        train(config, train_dataset=_rows(), run_dir=tmp_path / "run")
    config.train.steps = 1

    def broken(completions, **kwargs):
        raise ValueError("no such thing")

    cases = [
        (dict(reward_funcs=[broken]), r"rewards\[0\] \(broken\) failed on the first rows .*no such thing"),
        (dict(reward_funcs=[len]), r"does not take TRL's reward call"),
        (dict(reward_funcs=[broken, "exact"], reward_weights=[1.0]), r"reward_weights: 1 weights for 2 reward"),
        (dict(reward_funcs=["exakt"]), r"did you mean 'exact'"),
        (dict(prompt_column="question"), r"no column 'question'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PMDError, match=message):
            train(config, train_dataset=Dataset.from_list(_rows()), run_dir=tmp_path / "run", **kwargs)
    with pytest.raises(ConfigError, match="give train_dataset too"):
        train(config, reward_funcs=[broken], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="expected a datasets.Dataset or a non-empty list of row dicts"):
        train(config, train_dataset="data.jsonl", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not any(Path(p).name.startswith("pmd-api-data-") for p in _tmp_folders())


def _tmp_folders() -> list[str]:
    import tempfile

    return [str(p) for p in Path(tempfile.gettempdir()).iterdir()]


def module_reward(completions, **kwargs):
    return [1.0] * len(completions)


def test_reward_names_are_importable_when_they_can_be():
    from pmd.api import _CALLABLES, _reward_specs

    specs = _reward_specs([module_reward, lambda completions, **kw: [0.0] * len(completions), "exact"], [1, 2, 3])
    assert specs[0] == {"function": f"{__name__}:module_reward", "weight": 1}  # reusable from a YAML file
    assert specs[1] == {"function": "pmd.api:lambda", "weight": 2} and specs[2] == {"verifier": "exact", "weight": 3}
    from pmd.envs.reward_functions import load_function

    assert load_function(specs[1]["function"], "here") is _CALLABLES["lambda"]
    assert load_function(specs[0]["function"], "here") is module_reward
    _CALLABLES.clear()


def test_import_pmd_stays_light():
    code = ("import sys, pmd; before = set(sys.modules); from pmd import RunConfig, train, evaluate_model, load_config;"
            "heavy = [m for m in ('torch', 'trl', 'transformers', 'datasets', 'reasoning_gym') if m in sys.modules];"
            "print(heavy, sorted(pmd.__all__) == sorted(set(pmd.__all__)), callable(pmd.train))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True True"


def test_every_exported_name_resolves():
    import pmd

    for name in pmd.__all__:
        assert getattr(pmd, name) is not None
    with pytest.raises(AttributeError):
        pmd.no_such_name  # noqa: B018
