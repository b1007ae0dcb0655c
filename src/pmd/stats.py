"""Paired bootstrap intervals for `pmd compare`: is a variant's held-out gain over a reference more than noise?

The statistic is the mean, over seeds and held-out problems, of (variant outcome − reference outcome) on the same
problem. Pairing by problem removes the (large) spread between easy and hard problems; pairing by seed compares
runs that saw the same training stream. Both are finite samples of what we want to generalise over, so the
bootstrap resamples both levels with replacement: a gain carried by one lucky seed or a handful of problems gets
a wide interval. The 95% interval is the 2.5% / 97.5% percentiles of B resampled statistics, drawn from a numpy
Generator with a fixed seed, so the same records always give the same table.

numpy only, no I/O: `pmd compare`'s tables call it on the per-problem rows in records.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLES = 2000  # bootstrap resamples (B)
DEFAULT_SEED = 0  # the Generator's seed: a fixed one makes the intervals reproducible


@dataclass(frozen=True)
class Interval:
    """The observed mean difference and its bootstrap percentile interval."""

    mean: float
    lo: float
    hi: float

    @property
    def verdict(self) -> str:
        return verdict(self.lo, self.hi)


def is_win(lo: float) -> bool:
    """A win only when the whole interval is above 0 (its lower end `lo`): a positive mean alone is not one."""
    return lo > 0


def verdict(lo: float, hi: float) -> str:
    """The word the tables print for an interval of (variant − reference)."""
    if is_win(lo):
        return "win"
    if hi < 0:
        return "loss"
    return "no difference shown"


def paired_bootstrap(variant: np.ndarray, reference: np.ndarray, n_samples: int = DEFAULT_SAMPLES,
                     seed: int = DEFAULT_SEED) -> Interval:
    """Mean of (variant − reference) over seeds × problems, with a two-level bootstrap 95% interval.

    `variant` is (seeds, problems); `reference` is the same shape (paired by row: the same seed) or one vector of
    problems (the base model: one evaluation shared by every seed). Columns must be the same problems in the same
    order (`outcome_matrix` builds them by uid). Each resample draws seeds and problems with replacement,
    independently; the statistic of a resample is the mean of the difference over the drawn (seed, problem) grid.
    """
    v = np.asarray(variant, dtype=float)
    r = np.asarray(reference, dtype=float)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"paired_bootstrap: variant must be a non-empty (seeds, problems) array, got shape {v.shape}")
    if r.ndim == 1:
        r = np.broadcast_to(r, v.shape) if r.shape[0] == v.shape[1] else r
    if r.shape != v.shape:
        raise ValueError(f"paired_bootstrap: reference shape {r.shape} does not pair with variant shape {v.shape}")
    if n_samples < 1:
        raise ValueError(f"paired_bootstrap: n_samples must be >= 1, got {n_samples}")
    diff = v - r
    n_seeds, n_problems = diff.shape
    rng = np.random.default_rng(seed)
    # a resample is known by how often it drew each seed / problem; its mean is then a bilinear form in the counts
    seed_counts = _draw_counts(rng, n_seeds, n_samples)
    problem_counts = _draw_counts(rng, n_problems, n_samples)
    stats = ((seed_counts @ diff) * problem_counts).sum(axis=1) / (n_seeds * n_problems)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Interval(float(diff.mean()), float(lo), float(hi))


def _draw_counts(rng: np.random.Generator, n: int, n_samples: int) -> np.ndarray:
    """(n_samples, n): how many times each of n items was drawn in n draws with replacement, per resample."""
    idx = rng.integers(0, n, size=(n_samples, n)) + np.arange(n_samples)[:, None] * n
    return np.bincount(idx.ravel(), minlength=n_samples * n).reshape(n_samples, n)


def outcome_matrix(runs: Sequence[Mapping[str, float]],
                   uids: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-seed {uid: outcome} mappings as a (seeds, problems) array with columns in `uids` order (sorted uids of
    the first run if None). Every run must hold exactly the same problems: a comparison over different held-out
    sets would pair unrelated outcomes."""
    if not runs:
        raise ValueError("outcome_matrix: no runs")
    order = sorted(runs[0]) if uids is None else list(uids)
    want = set(order)
    for i, run in enumerate(runs):
        if set(run) != want:
            extra, missing = sorted(set(run) - want), sorted(want - set(run))
            raise ValueError(f"outcome_matrix: run {i} has a different problem set ({len(missing)} missing, e.g. "
                             f"{missing[:1]}; {len(extra)} extra, e.g. {extra[:1]})")
    return np.array([[float(run[u]) for u in order] for run in runs], dtype=float), order


def compare_outcomes(variant: Sequence[Mapping[str, float]],
                     reference: Sequence[Mapping[str, float]] | Mapping[str, float],
                     n_samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> Interval:
    """`paired_bootstrap` on uid-keyed outcomes. `reference` is a list paired with `variant` by position (same
    seeds, same order) or one mapping shared by every seed (the base model). Different problem sets: ValueError."""
    v, order = outcome_matrix(variant)
    if isinstance(reference, Mapping):
        r, _ = outcome_matrix([reference], order)
        return paired_bootstrap(v, r[0], n_samples, seed)
    if len(reference) != len(variant):
        raise ValueError(f"compare_outcomes: {len(variant)} variant seeds but {len(reference)} reference seeds")
    r, _ = outcome_matrix(reference, order)
    return paired_bootstrap(v, r, n_samples, seed)
