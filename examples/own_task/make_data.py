"""Writes data.jsonl: unit-conversion word problems with numeric answers (deterministic; run from anywhere).

Each row has the columns the example's config maps: `question` (the prompt), `answer` (the reference), and two
extra columns that the reward function reads as keyword arguments, exactly as a TRL reward function would:
`unit` (of the answer) and `tolerance` (relative error that still earns partial credit).

    python examples/own_task/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CONVERSIONS = [  # (from unit, to unit, factor, tolerance)
    ("minutes", "seconds", 60, 0.05),
    ("hours", "minutes", 60, 0.05),
    ("kilometres", "metres", 1000, 0.02),
    ("metres", "centimetres", 100, 0.02),
    ("kilograms", "grams", 1000, 0.02),
    ("litres", "millilitres", 1000, 0.02),
    ("days", "hours", 24, 0.05),
    ("weeks", "days", 7, 0.05),
]


def rows(n: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src, dst, factor, tol = rng.choice(CONVERSIONS)
        value = rng.randint(2, 40)
        out.append({"question": f"How many {dst} are in {value} {src}?", "answer": str(value * factor),
                    "unit": dst, "tolerance": tol})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("data.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    print(f"wrote {path}")
