"""Every config we ship validates: a typo in a committed YAML must fail here, not hours into a GPU job."""

from pathlib import Path

import pytest

from pmd.config import load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert "quickstart.yaml" in names
    assert {"qwen3-8b-livecodebench.yaml", "qwen3-8b-sciknoweval.yaml", "olmo3-7b-instruct-livecodebench.yaml",
            "olmo3-7b-instruct-sciknoweval.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0 and cfg.env.tasks
