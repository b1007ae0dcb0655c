"""Options are discoverable: `pmd config [SECTION]` lists every field with its default, allowed values and help;
`pmd config --dump` prints the resolved config; an unknown key names the closest known one; `pmd train` runs
without a YAML file; a TRL-style flag is answered with the `--set` it means (issue 26, item 5)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from pmd.cli import main
from pmd.config import (ConsolidationConfig, EvalConfig, MemoryConfig, RetrievalConfig, RunConfig, TrainConfig,
                        load_config, to_dict)
from pmd.config_help import SECTIONS, _section_class
from pmd.envs.env_config import EnvConfig
from pmd.errors import ConfigError


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("section, cls, prefix", [
    ("train", TrainConfig, "train."), ("memory", MemoryConfig, "memory."),
    ("memory.consolidation", ConsolidationConfig, "memory.consolidation."),
    ("memory.retrieval", RetrievalConfig, "memory.retrieval."), ("eval", EvalConfig, "eval."),
    ("env", EnvConfig, "env."),
])
def test_a_section_lists_every_field_with_default_and_help(capsys, section, cls, prefix):
    code, out, err = _run(capsys, "config", section)
    assert code == 0 and err == ""
    lines = out.splitlines()
    for f in dataclasses.fields(cls):
        head = next((i for i, line in enumerate(lines) if line.startswith(f"{prefix}{f.name}: ")), None)
        assert head is not None, f"{prefix}{f.name} missing from pmd config {section}"
        assert lines[head + 1].strip() == f.metadata["help"]  # the help line follows the field's line
    # the default and the allowed values, as written for a few fields
    if section == "train":
        assert "train.learning_rate: 1.0e-05  (a value in (0, 1])" in lines
        assert "train.algo: sdpo  (one of: grpo, sdpo, pmd)" in lines
        assert "train.num_generations: 4  (>= 2 (groups need siblings))" in lines
    if section == "memory.consolidation":
        assert "memory.consolidation.mode: deterministic  (one of: deterministic, model)" in lines


def test_every_listed_default_is_the_dataclass_default(capsys):
    """The value shown is what RunConfig() holds (read back as YAML), for every field of every run-config section."""
    defaults = to_dict(RunConfig())
    code, out, _ = _run(capsys, "config")
    assert code == 0
    shown = {}
    for line in out.splitlines():
        if line.startswith((" ", "#")) or ": " not in line or "(section:" in line:
            continue
        key, _, rest = line.partition(": ")
        shown[key] = yaml.safe_load(rest.rsplit("  (", 1)[0])
    checked = 0
    for key, value in shown.items():
        if "[i]" in key:
            continue
        node = defaults
        for step in key.split("."):
            node = node[step]
        if key == "env.tasks":  # [] in the dataclass, basic_arithmetic once built (its help says so)
            assert value == [] and node[0]["name"] == "basic_arithmetic"
        else:
            assert value == node, key
        checked += 1
    assert checked >= 80  # every section of the run config, not a handful


def test_task_kind_sections_and_one_field(capsys):
    code, out, _ = _run(capsys, "config", "dataset")
    assert code == 0 and "env.tasks[i].params.prompt: question  (text)" in out.splitlines()
    code, out, _ = _run(capsys, "config", "train.learning_rate")
    assert code == 0 and out.splitlines() == ["train.learning_rate: 1.0e-05  (a value in (0, 1])",
                                              "    AdamW learning rate, in (0, 1]."]
    for name in SECTIONS:  # every registered section resolves to a dataclass and lists something
        assert dataclasses.is_dataclass(_section_class(name))
        code, out, _ = _run(capsys, "config", name)
        assert code == 0 and out.strip()


@pytest.mark.parametrize("argv, expected", [
    (["config", "trian"], "pmd: error: pmd config: unknown section 'trian' (did you mean train?)"),
    (["config", "memory.consolidaton"], "pmd: error: pmd config: memory has no field 'consolidaton' (did you mean "
                                        "memory.consolidation?)"),
    (["config", "xyzzy"], "pmd: error: pmd config: unknown section 'xyzzy' (known: code, code.limits, compare, "
                          "dataset, dataset.rewards, env, env.tasks, eval, memory, memory.consolidation, "
                          "memory.retrieval, model, reasoning_gym, sciknoweval, top, train)"),
    (["config", "train.lerning_rate"], "pmd: error: pmd config: train has no field 'lerning_rate' (did you mean "
                                       "train.learning_rate?)"),
    (["config", "--set", "train.steps=2"], "pmd: error: --set applies to `pmd config --dump [CONFIG]` (the resolved "
                                           "config), not to the listing"),
])
def test_unknown_sections_get_one_line_and_exit_2(capsys, argv, expected):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and err == expected + "\n"


def test_dump_shows_overrides_and_defaults(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  algo: pmd\n  steps: 5\n", encoding="utf-8")
    code, out, err = _run(capsys, "config", "--dump", str(cfg), "--set", "train.learning_rate=3e-6")
    assert code == 0 and err == ""
    dumped = yaml.safe_load(out)
    assert dumped["train"]["learning_rate"] == 3e-6
    assert dumped["train"]["steps"] == 5 and dumped["train"]["algo"] == "pmd"
    assert dumped["memory"]["consolidation"]["min_problems"] == 2  # a default, filled in
    resolved = load_config(cfg, ["train.learning_rate=3e-6"])
    assert dumped == to_dict(resolved)  # what the run would use, and write to RUN/config.yaml
    code, out, _ = _run(capsys, "config", "--dump")  # no file: the defaults
    assert code == 0 and yaml.safe_load(out) == to_dict(RunConfig())
    code, out, _ = _run(capsys, "config", "memory.retrieval", "--dump", str(cfg))
    assert code == 0 and yaml.safe_load(out) == {"memory.retrieval": to_dict(RunConfig().memory.retrieval)}
    code, out, err = _run(capsys, "config", "--dump", str(cfg), "--set", "train.lerning_rate=1")
    assert code == 2 and out == ""
    assert err.strip().endswith("unknown config key train.lerning_rate (did you mean train.learning_rate?)")


@pytest.mark.parametrize("override, suggestion", [
    ("train.lerning_rate=1e-6", "train.learning_rate"),
    ("train.num_generation=4", "train.num_generations"),
    ("memory.consolidation.min_problem=3", "memory.consolidation.min_problems"),
    ("eval.num_sample=2", "eval.num_samples"),
    ("env.train_sise=8", "env.train_size"),
    ("trian.steps=2", "train"),
    ("env.tasks[0].params.max_term=3", "env.tasks[0].params.max_terms"),  # a reasoning-gym generator's own key
])
def test_unknown_keys_name_the_closest_one(override, suggestion):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    message = str(exc.value)
    assert message.endswith(f"(did you mean {suggestion}?)") and "known:" not in message
    assert "\n" not in message


def test_an_unknown_section_in_a_set_names_the_set():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["train.steps=3", "memroy.reflect_every=2"])
    assert str(exc.value) == ("--set memroy.reflect_every=2: unknown config key memroy (did you mean memory?)")


def test_a_key_with_nothing_close_lists_the_known_ones():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["train.zzzzzz=1"])
    assert "unknown config key train.zzzzzz (known: algo, " in str(exc.value)


def test_cli_unknown_train_key_is_one_line(capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  lerning_rate: 1.0e-6\n", encoding="utf-8")
    code, out, err = _run(capsys, "train", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and out == ""
    assert err == f"pmd: error: {cfg}: unknown config key train.lerning_rate (did you mean train.learning_rate?)\n"
    assert not (tmp_path / "run").exists()


class _AfterPreflight(Exception):
    pass


def test_train_without_a_yaml_file_gets_through_preflight(tmp_path, tiny_model_path, monkeypatch, capsys):
    """`pmd train --set ...` with no file: the defaults plus the overrides reach preflight, which passes; the run is
    stopped where it would start writing (Run.prepare), so nothing is written."""
    from pmd import run as run_module

    seen = {}

    def stop(self):
        seen["cfg"], seen["model_path"] = self.cfg, self.model_path
        raise _AfterPreflight()

    monkeypatch.setattr(run_module.Run, "prepare", stop)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_AfterPreflight):
        main(["train", "--set", f"model.name_or_path={tiny_model_path}", "--set", "train.steps=2",
              "--run-dir", str(tmp_path / "run")])
    cfg = seen["cfg"]
    assert seen["model_path"] == str(tiny_model_path)
    expected = to_dict(RunConfig())
    expected["model"]["name_or_path"] = str(tiny_model_path)
    expected["train"]["steps"] = 2
    expected["run_dir"] = str(tmp_path / "run")
    assert to_dict(cfg) == expected  # the defaults, with the overrides, nothing else
    assert list(tmp_path.iterdir()) == []  # preflight wrote nothing


@pytest.mark.parametrize("argv, key, value", [
    (["train", "--learning_rate", "1e-6"], "train.learning_rate", "1e-6"),
    (["train", "cfg.yaml", "--learning_rate=2e-6"], "train.learning_rate", "2e-6"),
    (["train", "--max_steps", "3"], "train.steps", "3"),
    (["train", "--num_generations", "8"], "train.num_generations", "8"),
    (["train", "--output_dir", "runs/x"], "run_dir", "runs/x"),
    (["train", "--per_device_train_batch_size", "4"], "train.per_device_batch_size", "4"),
    (["eval", "--temperature", "0.5"], "eval.temperature", "0.5"),  # the command's own section first
    (["train", "--temperature", "0.5"], "train.temperature", "0.5"),
    (["train", "--beta", "0.1"], "train.trl.beta", "0.1"),  # TRL's own field: the passthrough
])
def test_trl_style_flags_are_answered_with_the_set_they_mean(capsys, argv, key, value):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("pmd: error: --")
    assert f"--set {key}={value}" in err
    flag = argv[-1].partition("=")[0] if "=" in argv[-1] else argv[-2]
    assert err.startswith(f"pmd: error: {flag}: not a pmd option")
    if not key.startswith("train.trl"):  # the suggested override is one pmd accepts, with the value given
        assert load_config(None, [f"{key}={value}"]) is not None
    else:
        cfg = load_config(None, ["train.algo=grpo", f"{key}={value}"])
        assert cfg.train.trl == {"beta": 0.1}


def test_unknown_flags_elsewhere_keep_argparses_line(capsys):
    code, out, err = _run(capsys, "memory", "show", "somewhere", "--learning_rate", "1")
    assert code == 2 and err.startswith("pmd: error: unrecognized arguments: --learning_rate")
