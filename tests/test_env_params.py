"""Environment params are typed dataclasses checked by the config machinery: errors name the dotted key at load."""

from __future__ import annotations

import dataclasses

import pytest

from pmd.config import build_dataclass, load_config, save_config
from pmd.envs import EnvironmentSuite
from pmd.envs.code import CodeParams
from pmd.envs.reasoning_gym import ReasoningGymParams
from pmd.envs.sciknoweval import SciKnowEvalParams
from pmd.errors import ConfigError
from pmd.envs.code.sandbox import SandboxLimits


def _load(tmp_path, tasks: str, *overrides: str):
    path = tmp_path / "c.yaml"
    path.write_text(f"env:\n  tasks:\n{tasks}", encoding="utf-8")
    return load_config(path, list(overrides))


@pytest.mark.parametrize(
    "tasks, needle",
    [
        ("    - {kind: code, params: {eval_fraction: half}}\n", "env.tasks[0].params.eval_fraction: expected a number"),
        ("    - {kind: code, params: {colour: red}}\n", "unknown config key env.tasks[0].params.colour"),
        ("    - {name: chain_sum}\n    - {kind: code, params: {reward: partial}}\n",
         "env.tasks[1].params.reward: expected one of"),
        ("    - {kind: code, params: {eval_fraction: 1.5}}\n", "env.tasks[0].params: eval_fraction must be strictly"),
        ("    - {kind: code, params: {limits: {wall_seconds: soon}}}\n",
         "env.tasks[0].params.limits.wall_seconds: expected a number"),
        ("    - {kind: code, params: {limits: {cpu: 1}}}\n", "unknown config key env.tasks[0].params.limits.cpu"),
        ("    - {kind: code, params: {limits: {cpu_seconds: -1}}}\n",
         "env.tasks[0].params.limits: SandboxLimits.cpu_seconds must be a positive number"),
        ("    - {kind: sciknoweval, params: {}}\n", "env.tasks[0].params: path is required"),
        ("    - {kind: sciknoweval, params: {path: x, domains: Biology}}\n", "env.tasks[0].params.domains: expected"),
        ("    - {name: chain_sum, params: {lenient_credit: lots}}\n",
         "env.tasks[0].params.lenient_credit: expected a number"),
        ("    - {name: chain_sum, params: {min_termz: 2}}\n", "unknown config key env.tasks[0].params.min_termz"),
        ("    - {name: chain_sum, params: {seed: 2}}\n", "unknown config key env.tasks[0].params.seed"),
        ("    - {name: chain_sum, params: {min_terms: 0}}\n", "env.tasks[0].params: invalid generator params"),
        ("    - {kind: reasoning_gym}\n", "env.tasks[0].name: a reasoning_gym task needs a name"),
        ("    - {name: nope}\n", "env.tasks[0].name: unknown reasoning-gym task 'nope'"),
    ],
)
def test_bad_params_fail_at_load_naming_the_dotted_key(tmp_path, tasks, needle):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, tasks)
    assert needle in str(info.value) and "c.yaml" in str(info.value)


def test_sandbox_limits_from_yaml_reach_the_sandbox(tmp_path):
    cfg = _load(tmp_path, "    - {kind: code, params: {max_problems: 1, limits: {cpu_seconds: 1, wall_seconds: 3}}}\n")
    env = EnvironmentSuite.from_config(cfg.env).environments["humaneval"]
    assert env.limits == SandboxLimits(cpu_seconds=1.0, wall_seconds=3.0)
    problem = env.problems("train")[0]
    verdict = env.verify(problem, f"```python\n{problem.metadata['prompt']}    while True:\n        pass\n```")
    assert verdict.details["status"] == "time_limit"
    assert "(limits: 1 s CPU, 3 s wall)" in verdict.feedback


def test_params_from_set_and_round_trip(tmp_path):
    cfg = load_config(None, ["env.tasks=[{kind: code, name: he, params: {reward: fraction, limits: {memory_mb: 256}}}]"])
    assert cfg.env.tasks[0].params == {"reward": "fraction", "limits": {"memory_mb": 256}}  # saved as written
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


def test_reasoning_gym_params_split_typed_keys_from_the_generators():
    from pmd.envs.reasoning_gym import reasoning_gym_params

    params = reasoning_gym_params("chain_sum", {"min_terms": 2, "max_terms": 2, "lenient_credit": 1}, "p", "n")
    assert params == ReasoningGymParams(lenient_credit=1.0, generator={"min_terms": 2, "max_terms": 2})


def test_every_param_has_a_default_and_one_line_help():
    for cls in (CodeParams, SciKnowEvalParams, ReasoningGymParams, SandboxLimits):
        for f in dataclasses.fields(cls):
            help_text = f.metadata.get("help", "")
            assert help_text and "\n" not in help_text, f"{cls.__name__}.{f.name}"
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def test_build_dataclass_is_the_config_machinery():
    assert build_dataclass(SandboxLimits, {"memory_mb": 128}, "x") == SandboxLimits(memory_mb=128)
    with pytest.raises(ConfigError, match=r"^x\.memory_mb: expected an integer"):
        build_dataclass(SandboxLimits, {"memory_mb": "lots"}, "x")
    with pytest.raises(ConfigError, match=r"^x: expected a mapping"):
        build_dataclass(SandboxLimits, [1], "x")
