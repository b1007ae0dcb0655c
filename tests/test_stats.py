"""Paired bootstrap (pmd.stats) on hand-made outcome vectors: what counts as a win, and that it is reproducible."""

import numpy as np
import pytest

from pmd.stats import Interval, compare_outcomes, is_win, outcome_matrix, paired_bootstrap, verdict


def test_identical_pair_is_exactly_zero():
    a = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]])
    got = paired_bootstrap(a, a.copy())
    assert got == Interval(0.0, 0.0, 0.0)
    assert got.verdict == "no difference shown"


def test_clear_difference_excludes_zero():
    rng = np.random.default_rng(1)
    ref = (rng.random((3, 240)) < 0.2).astype(float)
    better = np.maximum(ref, (rng.random((3, 240)) < 0.4))  # solves everything ref solves and more
    got = paired_bootstrap(better, ref)
    assert got.mean == pytest.approx((better - ref).mean())
    assert 0 < got.lo < got.mean < got.hi
    assert got.verdict == "win" and is_win(got.lo)
    worse = paired_bootstrap(ref, better)
    assert worse.hi < 0 and worse.verdict == "loss"


def test_small_noisy_difference_includes_zero():
    # 16 problems, 2 seeds: one problem more solved on one seed, one fewer on the other
    ref = np.zeros((2, 16))
    ref[:, :4] = 1
    var = ref.copy()
    var[0, 5] = 1
    var[1, 6] = 1
    var[1, 0] = 0
    got = paired_bootstrap(var, ref)
    assert got.mean == pytest.approx(1 / 32)
    assert got.lo < 0 < got.hi and got.verdict == "no difference shown"


def test_seed_level_is_resampled():
    # every problem gains on seed 0 and loses as much on seed 1: resampling problems alone would see no spread in
    # the per-seed means; resampling seeds shows the interval is wide
    ref = np.zeros((2, 50))
    var = np.vstack([np.ones(50), -np.ones(50)])
    got = paired_bootstrap(var, ref)
    assert got.mean == 0 and got.lo == pytest.approx(-1) and got.hi == pytest.approx(1)


def test_base_reference_is_one_vector_for_all_seeds():
    base = np.array([1, 0, 0, 1])
    var = np.array([[1, 1, 0, 1], [1, 1, 1, 1]])
    got = paired_bootstrap(var, base)
    assert got.mean == pytest.approx(3 / 8)
    assert got == paired_bootstrap(var, np.vstack([base, base]))


def test_deterministic_and_seeded():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 100)) < 0.3, rng.random((3, 100)) < 0.35
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    assert paired_bootstrap(a, b, seed=1) != paired_bootstrap(a, b)
    assert paired_bootstrap(a, b, n_samples=200) != paired_bootstrap(a, b)


def test_shapes_must_pair():
    with pytest.raises(ValueError, match="does not pair"):
        paired_bootstrap(np.zeros((2, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="does not pair"):
        paired_bootstrap(np.zeros((2, 5)), np.zeros(4))
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(np.zeros((0, 5)), np.zeros((0, 5)))


def test_uid_keyed_outcomes_align_and_mismatched_problem_sets_are_an_error():
    var = [{"a": 1, "b": 0, "c": 1}, {"c": 1, "a": 0, "b": 1}]
    ref = [{"b": 0, "a": 0, "c": 1}, {"a": 0, "c": 0, "b": 1}]
    got = compare_outcomes(var, ref)
    assert got.mean == pytest.approx((1 + 0 + 0 + 0 + 0 + 1) / 6)
    assert compare_outcomes(var, {"a": 0, "b": 0, "c": 1}).mean == pytest.approx(2 / 6)
    m, order = outcome_matrix(var)
    assert order == ["a", "b", "c"] and m.tolist() == [[1, 0, 1], [0, 1, 1]]
    with pytest.raises(ValueError, match="different problem set"):
        compare_outcomes(var, [{"a": 1, "b": 0, "d": 1}, ref[1]])
    with pytest.raises(ValueError, match="different problem set"):
        compare_outcomes(var, {"a": 1, "b": 0})
    with pytest.raises(ValueError, match="2 variant seeds but 1 reference"):
        compare_outcomes(var, ref[:1])


@pytest.mark.parametrize("lo, hi, word", [(0.01, 0.2, "win"), (-0.2, -0.01, "loss"), (-0.1, 0.1, "no difference shown"),
                                          (0.0, 0.1, "no difference shown"), (-0.1, 0.0, "no difference shown")])
def test_verdict(lo, hi, word):
    assert verdict(lo, hi) == word
    assert is_win(lo) == (word == "win")
