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
    with pytest.raises(ConfigError, match=r"^memory\.retrieval\.max_patterns: expected >= 0, got -1$"):
        load_config(None, ["memory.retrieval.max_patterns=-1"])
    with pytest.raises(ConfigError, match=r"^memory\.consolidation\.similarity_threshold: expected a value in"):
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
