"""Train/held-out splits for file-backed datasets: deduplicated first, then a seeded disjoint partition.

Deduplication comes first so that one question can never sit in both splits (a memorised question would
inflate held-out accuracy).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any


def dedupe(records: list[Any], key: Callable[[Any], Hashable]) -> tuple[list[Any], int]:
    """Keep the first record of each `key`; returns the kept records and how many were dropped."""
    seen: set[Hashable] = set()
    kept = []
    for record in records:
        k = key(record)
        if k not in seen:
            seen.add(k)
            kept.append(record)
    return kept, len(records) - len(kept)


def split(records: list[Any], eval_fraction: float, seed: int) -> dict[str, list[Any]]:
    """Seeded shuffle of indices, first share to eval; both sides keep file order. Disjoint by construction."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(records) * eval_fraction)
    if len(records) >= 2:
        n_eval = min(max(n_eval, 1), len(records) - 1)
    return {"train": [records[i] for i in sorted(order[n_eval:])], "eval": [records[i] for i in sorted(order[:n_eval])]}
