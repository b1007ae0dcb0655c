"""The name pmd is installed under, and the install line of an optional extra.

PyPI's `pmd` is an unrelated package (a markdown-to-PDF tool), so an install line naming `pmd` would install the
wrong thing: pmd's distribution is `procedural-memory-distillation` (pyproject.toml `[project] name`; a test keeps
the two equal). The import name and the command stay `pmd`: PyPI owns distribution names only, and a distribution may
install a package of another name (scikit-learn installs `sklearn`). Every message that tells the user to install an
extra builds its line here, so the name is written once.
"""

from __future__ import annotations

DISTRIBUTION = "procedural-memory-distillation"


def install_extra(extra: str) -> str:
    """The pip command that installs pmd with one of its extras (pyproject.toml `[project.optional-dependencies]`)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
