import subprocess
import sys

import pytest

from pmd.config import RunConfig, load_config, save_config
from pmd.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_and_yaml_override(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  steps: 3\n  algo: pmd\nenv:\n  tasks:\n    - name: chain_sum\n"))
    assert cfg.train.steps == 3 and cfg.train.algo == "pmd"
    assert cfg.env.tasks[0].name == "chain_sum" and cfg.env.tasks[0].kind == "reasoning_gym"
    assert cfg.train.learning_rate == RunConfig().train.learning_rate


def test_cli_set_overrides_yaml(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  steps: 3\n"), ["train.steps=7", "memory.retrieval.token_budget=10"])
    assert cfg.train.steps == 7 and cfg.memory.retrieval.token_budget == 10


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  stepz: 3\n", "train.stepz"),
        ("train:\n  steps: three\n", "train.steps: expected an integer"),
        ("train:\n  algo: ppo\n", "train.algo: expected one of"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
        ("train:\n  steps: 0\n", "train.steps: expected a positive integer"),
        ("train:\n  steps: [3\n", "invalid YAML"),
        ("env:\n  tasks:\n    - kind: chess\n", "env.tasks[0].kind"),
        ("train:\n  num_generations: 1\n", "train.num_generations"),
    ],
)
def test_malformed_configs_name_the_problem(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert needle in str(info.value)
    assert "c.yaml" in str(info.value)


def test_non_utf8_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"train:\n  steps: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["train.steps"])


def test_round_trip(tmp_path):
    cfg = load_config(None, ["train.steps=5", "env.seed=3"])
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg


def test_cli_prints_one_line_error_for_bad_config(tmp_path):
    p = write(tmp_path, "train:\n  lr: 1\n")
    proc = subprocess.run([sys.executable, "-m", "pmd.cli", "train", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown config key train.lr" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # a `pmd train` process: ~6 s
def test_cli_unknown_model_is_one_line(tmp_path):
    p = write(tmp_path, f"model:\n  name_or_path: ./no/such/model\nrun_dir: {tmp_path / 'run'}\n")
    proc = subprocess.run([sys.executable, "-m", "pmd.cli", "train", str(p), "--no-eval"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pmd: error: model path ./no/such/model does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_memory_subsections_reachable_from_set_and_range_checked():
    cfg = load_config(None, ["memory.retrieval.max_patterns=2", "memory.consolidation.stale_after_steps=7",
                             "memory.retrieval.include_experience=false"])
    assert cfg.memory.retrieval.max_patterns == 2 and cfg.memory.retrieval.include_experience is False
    assert cfg.memory.consolidation.stale_after_steps == 7
    with pytest.raises(ConfigError, match=r"^--set memory\.retrieval\.max_patterns=-1: "
                                          r"memory\.retrieval\.max_patterns: expected >= 0, got -1$"):
        load_config(None, ["memory.retrieval.max_patterns=-1"])
    with pytest.raises(ConfigError, match=r"^--set memory\.consolidation\.similarity_threshold=0: "
                                          r"memory\.consolidation\.similarity_threshold: expected a value in"):
        load_config(None, ["memory.consolidation.similarity_threshold=0"])


def test_moved_key_points_to_its_new_place():
    with pytest.raises(ConfigError, match="memory.token_budget moved to memory.retrieval.token_budget"):
        load_config(None, ["memory.token_budget=10"])


def test_every_config_field_has_one_line_help():
    """One config surface: every tunable, nested sections included, carries a one-line help."""
    import dataclasses

    def walk(cls, path):
        for f in dataclasses.fields(cls):
            help_text = f.metadata.get("help", "")
            assert help_text and "\n" not in help_text, f"{path}{f.name} has no one-line help"
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{path}{f.name}.")

    for f in dataclasses.fields(RunConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            walk(type(default), f"{f.name}.")


# ------------------------------------------------------------------------------- numbers in any YAML spelling

FLOAT_SPELLINGS = [("1e-4", 1e-4), ("5E3", 5e3), (".5", 0.5), ("+1.5e-3", 1.5e-3), ("1.0e-4", 1e-4), ("1.0e4", 1e4),
                   ("2.5E+2", 250.0), ("3.", 3.0), ("1_000.5", 1000.5), ("2", 2.0), ("-0.25", -0.25)]


@pytest.mark.parametrize("text, value", FLOAT_SPELLINGS)
def test_float_fields_take_every_yaml_number_spelling_from_set_and_file(tmp_path, text, value):
    # train.success_reward_threshold takes any finite number; the ranged fields get the values their range allows
    ranged = [f"train.learning_rate={text}", f"memory.consolidation.similarity_threshold={text}"] if 0 < value <= 1 else []
    from_set = load_config(None, [f"train.success_reward_threshold={text}", *ranged])
    assert from_set.train.success_reward_threshold == pytest.approx(value)
    assert isinstance(from_set.train.success_reward_threshold, float)
    from_file = load_config(write(tmp_path, f"train:\n  success_reward_threshold: {text}\n"
                                            + (f"  temperature: {text}\n" if value > 0 else "")))
    assert from_file.train.success_reward_threshold == pytest.approx(value)
    quoted = load_config(write(tmp_path, f"train:\n  success_reward_threshold: '{text}'\n"))  # still a number
    assert quoted.train.success_reward_threshold == pytest.approx(value)


def test_the_issue_case_learning_rate_1e_4():
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4


def test_yaml_1_2_numbers_reach_untyped_values_as_numbers():
    """Not only typed fields: a task's generator params and TRL pass-through values get numbers, not strings."""
    cfg = load_config(None, ["env.tasks[0].params.lenient_credit=5e-1"])
    assert cfg.env.tasks[0].params == {"lenient_credit": 0.5}
    assert load_config(None, ["train.seed=0o17"]).train.seed == 15  # YAML 1.2 octal where an integer is expected


@pytest.mark.parametrize("text, needle", [
    ("fast", "expected a number, got 'fast'"),
    ("nan", "expected a number, got 'nan'"),
    ("inf", "expected a number, got 'inf'"),
    ("1e-4x", "expected a number, got '1e-4x'"),
    ("true", "expected a number, got True"),
    (".nan", "expected a finite number, got nan"),
    (".inf", "expected a finite number, got inf"),
    ("-.inf", "expected a finite number, got -inf"),
])
def test_float_fields_reject_words_bools_and_non_finite_numbers(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.learning_rate={text}"])
    assert str(info.value) == f"--set train.learning_rate={text}: train.learning_rate: {needle}"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"train:\n  learning_rate: {text}\n"))
    assert str(info.value).endswith(f"c.yaml: train.learning_rate: {needle}")


def test_integer_fields_still_reject_floats_and_strings():
    with pytest.raises(ConfigError, match="train.steps: expected an integer, got 1000.0"):
        load_config(None, ["train.steps=1e3"])
    with pytest.raises(ConfigError, match="train.steps: expected an integer, got '4'"):
        load_config(None, ["train.steps='4'"])


# ------------------------------------------------------------------------------- errors name the --set they came from


def test_an_error_from_a_set_names_the_set_not_the_file(tmp_path):
    path = write(tmp_path, "train:\n  steps: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.learning_rate=fast"])
    assert str(info.value) == "--set train.learning_rate=fast: train.learning_rate: expected a number, got 'fast'"
    assert "c.yaml" not in str(info.value)


def test_an_error_from_the_file_still_names_the_file(tmp_path):
    path = write(tmp_path, "train:\n  steps: three\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.learning_rate=1e-4", "train.temperature=0.5"])
    assert str(info.value).startswith(f"{path}: train.steps: expected an integer")
    assert "--set" not in str(info.value)


def test_a_set_that_fixes_the_file_wins(tmp_path):
    assert load_config(write(tmp_path, "train:\n  steps: three\n"), ["train.steps=4"]).train.steps == 4


@pytest.mark.parametrize("override, needle", [
    ("train.lr=1", "--set train.lr=1: unknown config key train.lr"),
    ("memory.token_budget=10", "--set memory.token_budget=10: config key memory.token_budget moved to"),
    ("train.per_device_batch_size=3", "--set train.per_device_batch_size=3: train.prompts_per_step x"),
    ("env.tasks[0].params.colour=red", "--set env.tasks[0].params.colour=red: unknown config key "
                                       "env.tasks[0].params.colour"),
    ("env.tasks[0].params.max_terms=0", "--set env.tasks[0].params.max_terms=0: env.tasks[0].params: invalid "
                                        "generator params"),
    ("env.tasks=[{kind: chess}]", "--set env.tasks=[{kind: chess}]: env.tasks[0].kind: expected one of"),
    ("train.steps=[3", "--set train.steps=[3: value '[3' is not valid YAML"),
])
def test_set_errors_of_every_kind_name_the_set(tmp_path, override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train:\n  steps: 3\n"), [override])
    assert str(info.value).startswith(needle), str(info.value)
    assert "c.yaml" not in str(info.value)


def test_a_long_set_value_is_clipped_in_the_message():
    value = "[" + ", ".join(["{name: basic_arithmetic}"] * 5) + ", {kind: chess}]"
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"env.tasks={value}"])
    assert str(info.value).startswith(f"--set env.tasks={value[:37]}...: env.tasks[5].kind: expected one of")


def test_dedicated_flags_are_named_as_given(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train:\n  steps: 3\n"), ["train.algo=ppo"], ["--algo ppo"])
    assert str(info.value).startswith("--algo ppo: train.algo: expected one of")


# ------------------------------------------------------------------------------- list items by index

TWO_TASKS = "env:\n  tasks:\n    - name: basic_arithmetic\n    - name: chain_sum\n      params: {min_terms: 2}\n"


def test_set_addresses_list_items_by_index(tmp_path):
    path = write(tmp_path, TWO_TASKS)
    cfg = load_config(path, ["env.tasks[0].params.max_terms=3", "env.tasks[1].params.max_terms=4",
                             "env.tasks[1].kind=reasoning_gym", "compare.seeds[2]=9"])
    assert cfg.env.tasks[0].params == {"max_terms": 3}
    assert cfg.env.tasks[1].name == "chain_sum" and cfg.env.tasks[1].params == {"min_terms": 2, "max_terms": 4}
    assert cfg.compare.seeds == [0, 1, 9]  # a list the file does not set: its default, edited
    assert load_config(path, ["env.tasks[1]={name: chain_sum}"]).env.tasks[1].params == {}  # a whole item
    assert load_config(None, ["env.tasks[0].params.max_terms=3"]).env.tasks[0].params == {"max_terms": 3}


@pytest.mark.parametrize("override, needle", [
    ("env.tasks[2].name=x", "--set env.tasks[2].name=x: env.tasks[2]: index out of range (env.tasks has 2 items; "
                            "to add one, set the whole list"),
    ("compare.seeds[3]=1", "--set compare.seeds[3]=1: compare.seeds[3]: index out of range (compare.seeds has 3 "
                           "items"),
    ("train.steps[0]=1", "--set train.steps[0]=1: train.steps is not a list"),
    ("train[0].steps=1", "--set train[0].steps=1: train is not a list"),
    ("env.tasks[0][1]=1", "--set env.tasks[0][1]=1: env.tasks[0] is not a list"),
    ("env.tasks.0.name=x", "--set env.tasks.0.name=x: '.0' is not a key: address list items as env.tasks[0]"),
    ("env.tasks.name=x", "--set env.tasks.name=x: env.tasks is a list: address an item as env.tasks[N]"),
    ("env.tasks[-1].name=x", "--set env.tasks[-1].name=x: [-1]: a list index is a number >= 0"),
    ("env.tasks[a].name=x", "--set env.tasks[a].name=x: [a]: a list index is a number >= 0"),
    ("train..steps=1", "--set train..steps=1: '' is not a key"),
])
def test_bad_list_addressing_is_one_error_naming_the_set(tmp_path, override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, TWO_TASKS), [override])
    assert str(info.value).startswith(needle), str(info.value)


# ------------------------------------------------------------------------------- strict YAML (issue 16)

import dataclasses  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402

from pmd.config import INT_MAX, check_training_set  # noqa: E402
from pmd.yaml_input import MAX_CONFIG_BYTES  # noqa: E402


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, needle", [
    ("", "c.yaml: empty config"),
    ("# only a comment\n\n", "c.yaml: empty config"),
    ("train:\n  steps: 3\n  algo: pmd\n  steps: 300\n", "c.yaml: line 4 invalid YAML: duplicate key 'steps' (first on line 2)"),
    ("train: {steps: 3}\nenv: {}\ntrain: {steps: 4}\n", "c.yaml: line 3 invalid YAML: duplicate key 'train' (first on line 1)"),
    ("env:\n  tasks:\n    - name: a\n      params: {x: 1, x: 2}\n", "line 4 invalid YAML: duplicate key 'x'"),
    ("train: &t {steps: 3}\nenv: {}\n", "c.yaml: line 1 invalid YAML: anchor &t (anchors and aliases are not allowed"),
    (alias_bomb(), "c.yaml: line 1 invalid YAML: anchor &a"),
    ("train: {trl: {x: " + "[" * 200 + "]" * 200 + "}}\n", "c.yaml: line 1 invalid YAML: nested more than 64 levels"),
])
def test_yaml_that_is_empty_repeated_aliased_or_too_deep_is_refused(tmp_path, text, needle):
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert needle in str(info.value)
    assert time.monotonic() - start < 1


def test_an_alias_given_by_set_is_refused():
    with pytest.raises(ConfigError, match=r"^--set train.trl=\*x: value '\*x' is not valid YAML \(alias \*x"):
        load_config(None, ["train.trl=*x"])


def test_a_60_mb_yaml_is_refused_by_its_size_in_well_under_a_second(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("train:\n  steps: 3\n")
        line = "# " + "x" * 77 + "\n"
        fh.write(line * (60 * 2**20 // len(line)))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"big.yaml: larger than 1024 KiB, too large for a run config"):
        load_config(path)
    assert time.monotonic() - start < 0.5


def test_a_config_just_under_the_size_limit_loads(tmp_path):
    prompt = "x" * (MAX_CONFIG_BYTES - 100)
    assert len(load_config(write(tmp_path, f"env:\n  system_prompt: {prompt}\n")).env.system_prompt) == len(prompt)


def test_an_explicit_empty_mapping_means_every_default(tmp_path):
    assert load_config(write(tmp_path, "{}\n")) == load_config(None)


# ------------------------------------------------------------------------------- every number has a range

def numeric_fields():
    """(dotted key, field, item type) for every number (or list of numbers) in the run config, sections included."""
    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else (args[0] if len(args) == 1 else tp)
            if item in (int, float):
                out.append((f"{prefix}{f.name}", f, item))

    walk(RunConfig, "")
    return out


NUMERIC = numeric_fields()


def test_every_number_field_states_its_range_or_why_it_has_none():
    assert len(NUMERIC) > 40
    for key, f, _ in NUMERIC:
        assert f.metadata.get("range") or f.metadata.get("unbounded"), f"{key}: no range in its _f(...)"
        bounds = f.metadata.get("range", {})
        assert "ge" in bounds or "gt" in bounds or f.metadata.get("unbounded"), f"{key}: no lower bound"


def outside(bounds, kind):
    """Values just outside `bounds`."""
    step = 1 if kind is int else 0.5
    values = []
    if "ge" in bounds:
        values.append(bounds["ge"] - step)
    if "gt" in bounds:
        values.append(bounds["gt"])
    if "le" in bounds:
        values.append(bounds["le"] + step)
    if "lt" in bounds:
        values.append(bounds["lt"])
    return [int(v) if kind is int else float(v) for v in values]


@pytest.mark.parametrize("key, f, kind", [n for n in NUMERIC if n[1].metadata.get("range")], ids=lambda x: x
                         if isinstance(x, str) else "")
def test_every_ranged_field_refuses_values_outside_its_range_by_name(key, f, kind):
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    for value in outside(f.metadata["range"], kind):
        text = f"[{value}]" if isinstance(default, list) else str(value)
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{key}={text}"])
        assert f"{key}: expected" in str(info.value) or f"{key}[0]: expected" in str(info.value), str(info.value)
    if kind is int:
        with pytest.raises(ConfigError, match=f"at most {INT_MAX}"):
            load_config(None, [f"{key}={'[' if isinstance(default, list) else ''}{INT_MAX + 1}"
                               f"{']' if isinstance(default, list) else ''}"])
    else:
        for bad in (".nan", ".inf"):
            with pytest.raises(ConfigError, match=f"{key}: expected a finite number"):
                load_config(None, [f"{key}={bad}"])


@pytest.mark.parametrize("override, needle", [
    ("train.steps=1e30", "train.steps: expected an integer, got 1e+30"),
    ("train.steps=100000000000000", "train.steps: expected an integer of at most 2147483647 in size"),
    ("train.save_steps=-1", "train.save_steps: expected >= 0 (0 = no checkpoints), got -1"),
    ("train.learning_rate=.inf", "train.learning_rate: expected a finite number, got inf"),
    ("train.learning_rate=.nan", "train.learning_rate: expected a finite number, got nan"),
    ("train.top_p=0", "train.top_p: expected a value in (0, 1], got 0.0"),
    ("train.temperature=-1", "train.temperature: expected > 0, got -1.0"),
    ("train.max_prompt_length=0", "train.max_prompt_length: expected a positive integer, got 0"),
    ("train.logging_steps=0", "train.logging_steps: expected a positive integer, got 0"),
    ("env.tasks[0].params.lenient_credit=abc", "env.tasks[0].params.lenient_credit: expected a number, got 'abc'"),
    ("env.tasks[0].params.lenient_credit=1.5", "env.tasks[0].params.lenient_credit: expected a value in [0, 1]"),
    ("run_dir=", "run_dir: expected a non-empty string, got ''"),
    ("run_dir='  '", "run_dir: expected a non-empty string"),
    ('run_dir="a\\0b"', "run_dir: expected text without NUL characters"),
    ("model.name_or_path=''", "model.name_or_path: expected a non-empty string"),
    ("compare.seeds=[]", "compare.seeds: expected at least 1 item, got []"),
    ("compare.variants=[]", "compare.variants: expected at least 1 item, got []"),
    ("compare.seeds=[1, -1]", "compare.seeds[1]: expected >= 0, got -1"),
    ("compare.seeds=[1, 2, 1]", "compare.seeds: names 1 twice (compare.seeds[0] and [2])"),
    ("compare.variants=[pmd, ppo]", "compare.variants[1]: unknown variant 'ppo'"),
    ("compare.variants=[pmd, pmd]", "compare.variants: names pmd twice (compare.variants[0] and [1])"),
    ("memory.content=nothing", "memory.content: expected one of 'retrieved', 'placebo', got 'nothing'"),
    ("memory.retrieval.scope=family", "memory.retrieval.scope: expected one of 'all', 'same_problem', got 'family'"),
])
def test_the_issue_cases_are_one_error_naming_the_field(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert needle in str(info.value)


def test_the_memory_controls_load_as_switches_and_as_compare_arms():
    cfg = load_config(None, ["memory.content=placebo", "memory.retrieval.scope=same_problem",
                             "compare.variants=[pmd, pmd-placebo, pmd-same-problem]"])
    assert (cfg.memory.content, cfg.memory.retrieval.scope) == ("placebo", "same_problem")
    assert cfg.compare.variants == ["pmd", "pmd-placebo", "pmd-same-problem"]
    default = load_config(None, [])
    assert (default.memory.content, default.memory.retrieval.scope) == ("retrieved", "all")
    assert {"pmd-placebo", "pmd-same-problem"} <= set(default.compare.variants)


def test_prompts_per_step_beyond_the_training_set_is_refused():
    train = load_config(None, ["train.prompts_per_step=50"]).train
    with pytest.raises(ConfigError, match=r"^train.prompts_per_step: 50 distinct problems per step, but the training "
                                          r"set has 4; lower train.prompts_per_step to at most 4"):
        check_training_set(train, 4)
    check_training_set(train, 50)


# ------------------------------------------------------------------ issue 27: keys, text and bounds


@pytest.mark.parametrize("text, needle", [
    ("1: a\nfoo: b\n", "top level: key 1 is a number, not a name"),
    ("null: a\n", "top level: key null is null, not a name"),
    ("train: {true: 1, stepz: 2}\n", "train: key true is a boolean, not a name"),
    ("env: {tasks: [{name: chain_sum, params: {3: x}}]}\n", "key 3 is a number, not a name"),
    ("memory: {retrieval: {level_shares: {~: 0.1}}}\n", "memory.retrieval.level_shares: key null is null"),
])
def test_a_key_that_is_not_text_is_one_error_naming_it(tmp_path, text, needle):
    (tmp_path / "cfg.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "cfg.yaml")
    assert needle in str(info.value)


@pytest.mark.parametrize("override, needle", [
    ('env.system_prompt="\\ud800"', "env.system_prompt: not valid text (a lone surrogate '\\ud800' at character 0"),
    ('run_dir="runs/\\udfff"', "run_dir: not valid text"),
    ('train.trl={run_name: "x\\ud83d"}', "train.trl.run_name: not valid text"),
    ('env.tasks[0].params={generator_note: ["ok", "\\ud800"]}', "not valid text"),
])
def test_text_that_utf8_cannot_hold_is_refused_at_load(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert needle in str(info.value)
    assert "\ud800" not in str(info.value) and "\udfff" not in str(info.value)  # printable: the repr, not the char


def test_text_of_every_plane_is_accepted():
    cfg = load_config(None, ['env.system_prompt="Réponds 简短 \\U0001F642"'])
    assert cfg.env.system_prompt == "Réponds 简短 \U0001F642"


def test_check_text_walks_deeper_than_the_recursion_limit():
    from pmd.config_fields import check_text

    deep: list = ["\ud800"]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ConfigError, match="not valid text"):
        check_text(deep, "x")


def test_problem_counts_and_seeds_are_bounded_with_the_reason():
    with pytest.raises(ConfigError, match=r"env.train_size: .*at most 1000000 \(problems are generated"):
        load_config(None, ["env.train_size=2147483647"])
    with pytest.raises(ConfigError, match=r"compare.seeds: expected at most 1000 items \(each seed is one training"):
        load_config(None, [f"compare.seeds=[{', '.join(map(str, range(1001)))}]"])
    assert load_config(None, ["env.train_size=1000000", "env.eval_size=1000000"]).env.train_size == 1_000_000


def test_duplicate_seed_check_is_one_pass():
    """1000 seeds (the most allowed) with the repeat last: list.count per item made this 10**6 comparisons; the
    linear check answers in well under the time that took for 100,000 seeds (minutes)."""
    from pmd.config import CompareConfig, _check_compare

    seeds = list(range(999)) + [998]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"compare.seeds: names 998 twice \(compare.seeds\[998\] and \[999\]\)"):
        _check_compare(CompareConfig(seeds=seeds))
    assert time.perf_counter() - t0 < 0.05


# ------------------------------------------------------------------------------- sections check themselves

import pmd.config as config_module  # noqa: E402

# (section, its arguments, the same value as an override, what both say)
CONSTRUCTED = [
    ("TrainConfig", {"learning_rate": 5.0, "num_generations": 1}, "train.learning_rate=5.0",
     "train.learning_rate: expected a value in (0, 1], got 5.0"),
    ("TrainConfig", {"steps": "8"}, "train.steps='8'", "train.steps: expected an integer, got '8'"),
    ("TrainConfig", {"algo": "ppo"}, "train.algo=ppo", "train.algo: expected one of 'grpo', 'sdpo', 'pmd', got 'ppo'"),
    ("TrainConfig", {"save_total_limit": 1}, "train.save_total_limit=1",
     "train.save_total_limit: expected 0 (keep all) or >= 2, got 1"),
    ("TrainConfig", {"per_device_batch_size": 3}, "train.per_device_batch_size=3",
     "train.prompts_per_step x train.num_generations = 4 x 4 = 16 sequences do not split into "
     "train.per_device_batch_size 3"),
    ("TrainConfig", {"report_to": "wandbb"}, "train.report_to=wandbb", "train.report_to: unknown integration 'wandbb'"),
    ("TrainConfig", {"lora_target_modules": "q_proj"}, "train.lora_target_modules=q_proj",
     "train.lora_target_modules: expected 'all-linear' or a list of module names, got 'q_proj'"),
    ("TrainConfig", {"length_groups": 0}, "train.length_groups=0", "train.length_groups: expected >= 1, got 0"),
    ("ModelConfig", {"name_or_path": " "}, "model.name_or_path=' '", "model.name_or_path: expected a non-empty string"),
    ("EnvConfig", {"train_size": 0}, "env.train_size=0", "env.train_size: expected a positive integer of at most"),
    ("MemoryConfig", {"reflect_every": 0}, "memory.reflect_every=0",
     "memory.reflect_every: expected a positive integer, got 0"),
    ("MemoryConfig", {"consolidation": {"mode": "model"}}, "memory.consolidation.mode=model",
     "memory.consolidation.mode: 'model' needs a model to write patterns"),
    ("RetrievalConfig", {"max_patterns": -1}, "memory.retrieval.max_patterns=-1",
     "memory.retrieval.max_patterns: expected >= 0, got -1"),
    ("ConsolidationConfig", {"model_notes": 1}, "memory.consolidation.model_notes=1",
     "memory.consolidation.model_notes: expected >= 2 (a pattern spans problems), got 1"),
    ("EvalConfig", {"top_p": 0}, "eval.top_p=0", "eval.top_p: expected a value in (0, 1], got 0.0"),
    ("CompareConfig", {"seeds": [1, 1]}, "compare.seeds=[1, 1]", "compare.seeds: names 1 twice"),
    ("RunConfig", {"run_dir": ""}, "run_dir=''", "run_dir: expected a non-empty string, got ''"),
]


@pytest.mark.parametrize("section, kwargs, override, message", CONSTRUCTED, ids=[c[2] for c in CONSTRUCTED])
def test_a_section_built_in_python_is_checked_like_one_read_from_yaml(section, kwargs, override, message):
    """`TrainConfig(learning_rate=5.0, num_generations=1)` used to pass every check (preflight included)."""
    with pytest.raises(ConfigError) as built:
        getattr(config_module, section)(**kwargs)
    with pytest.raises(ConfigError) as loaded:
        load_config(None, [override])
    assert str(built.value).startswith(message), str(built.value)
    assert str(loaded.value) == f"--set {override}: {built.value}"


def test_a_section_built_in_python_gets_the_types_yaml_would_give():
    assert config_module.TrainConfig(learning_rate=1).learning_rate == 1.0
    assert type(config_module.TrainConfig(learning_rate=1).learning_rate) is float
    cfg = RunConfig(train={"steps": 3}, memory={"retrieval": {"token_budget": 7}})  # mappings become sections
    assert cfg.train.steps == 3 and cfg.memory.retrieval.token_budget == 7
    with pytest.raises(ConfigError, match=r"^env\.tasks\[i\]\.kind: expected one of 'reasoning_gym', "):
        config_module.TaskConfig(kind="ppo")
    with pytest.raises(ConfigError, match=r"^train\.distil_active_rows_only: expected true/false, got 'yes'$"):
        config_module.TrainConfig(distil_active_rows_only="yes")


def test_the_distillation_speed_switches_are_config_fields():
    """Set on the trainer as class attributes before; now knobs (read by the trainer as cfg.train.*)."""
    t = RunConfig().train
    assert t.distil_active_rows_only is True and t.length_groups == 4
    t = load_config(None, ["train.distil_active_rows_only=false", "train.length_groups=1"]).train
    assert t.distil_active_rows_only is False and t.length_groups == 1


@pytest.mark.parametrize("old, new", [
    ("memory.teacher=frozen", "config key memory.teacher moved to train.teacher_model_kind (memory.teacher: frozen "
                              "is train.teacher_model_kind: base)"),
    ("compare.eval_every=3", "config key compare.eval_every moved to eval.every_steps (pmd compare reads it too)"),
])
def test_a_merged_key_is_refused_with_its_new_place(tmp_path, old, new):
    with pytest.raises(ConfigError) as info:
        load_config(None, [old])
    assert str(info.value) == f"--set {old}: {new}"
    section, rest = old.split(".", 1)
    key, value = rest.split("=")
    path = write(tmp_path, f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {new}"


def test_one_key_each_for_the_frozen_teacher_and_the_evaluation_period(tmp_path):
    from pmd.trl_args import trl_config

    assert not hasattr(RunConfig().memory, "teacher") and not hasattr(RunConfig().compare, "eval_every")
    for algo in ("sdpo", "pmd"):
        cfg = load_config(None, [f"train.algo={algo}", "train.teacher_model_kind=base", f"run_dir={tmp_path}"])
        assert trl_config(cfg, str(tmp_path / "out")).teacher_model_kind == "base"
    assert config_module.compare_eval_every(load_config(None, ["eval.every_steps=3"]).eval) == 3
    assert config_module.compare_eval_every(RunConfig().eval) == config_module.COMPARE_EVAL_EVERY == 4
