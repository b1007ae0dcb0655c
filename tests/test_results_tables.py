"""Every committed results table shows what its records hold: table.md is regenerated from the records.json beside
it and must match byte for byte (a table edited by hand, or left from another run, fails here)."""

import json
from pathlib import Path

import pytest

from pmd.compare_tables import render_table

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FOLDERS = sorted(p.parent for p in RESULTS.rglob("records.json") if (p.parent / "table.md").is_file())


def test_there_are_committed_results_to_check():
    assert len(FOLDERS) >= 6


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_table_is_rendered_from_its_records(folder):
    records = json.loads((folder / "records.json").read_text(encoding="utf-8"))
    assert render_table(records) == (folder / "table.md").read_text(encoding="utf-8")
