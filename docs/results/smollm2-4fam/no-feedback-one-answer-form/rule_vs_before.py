"""PMD with the one-answer-form rule (this folder, code 06f4e0b) against PMD before it (../no-feedback, code e3faf79):
the same config, seeds and held-out problems, paired by seed; the same paired bootstrap as the tables.

    python docs/results/smollm2-4fam/no-feedback-one-answer-form/rule_vs_before.py
"""

import json
from pathlib import Path

from pmd.compare_tables import OUTCOMES, outcomes_of
from pmd.stats import compare_outcomes

HERE = Path(__file__).resolve().parent


def pmd_runs(folder: Path) -> list[dict]:
    return sorted(json.loads((folder / "records.json").read_text())["variants"]["pmd"], key=lambda r: r["seed"])


after, before = pmd_runs(HERE), pmd_runs(HERE.parent / "no-feedback")
assert [r["seed"] for r in after] == [r["seed"] for r in before]
for kind in OUTCOMES:
    iv = compare_outcomes([outcomes_of(r["per_problem"], kind) for r in after],
                          [outcomes_of(r["per_problem"], kind) for r in before])
    print(f"{kind}: after − before {iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}] {iv.verdict}")
