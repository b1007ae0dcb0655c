"""The report's figures (plots.py): what each panel holds and how it is drawn, on hand-made rows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pmd.plots import (HELD_OUT_PANEL, REWARD_TERMS_PANEL, draw_panel, held_out_series, plot_training,  # noqa: E402
                       y_limits)


def _overall(acc, fmt, lenient):
    return {"overall": {"n_problems": 4, "greedy_accuracy": acc, "greedy_format_rate": fmt,
                        "greedy_lenient_accuracy": lenient}, "families": {}}


def test_held_out_accuracy_starts_at_the_base_model_and_ends_at_the_trained_one():
    periodic = [{"step": 2, "eval/greedy_accuracy": 0.25, "eval/greedy_format_rate": 0.5,
                 "eval/greedy_lenient_accuracy": 0.5}]
    s = held_out_series(periodic, _overall(0.0, 0.25, 0.5), {**_overall(0.5, 0.75, 0.75), "step": 4})
    assert s["eval/greedy_accuracy"] == [(0, 0.0), (2, 0.25), (4, 0.5)]
    assert s["eval/greedy_format_rate"] == [(0, 0.25), (2, 0.5), (4, 0.75)]  # format beside strict accuracy
    assert s["eval/greedy_lenient_accuracy"] == [(0, 0.5), (2, 0.5), (4, 0.75)]  # and content accuracy
    # without periodic evaluation: still a line, base -> trained
    assert held_out_series([], _overall(0.0, 0, 0), {**_overall(1.0, 1, 1), "step": 3})["eval/greedy_accuracy"] == [
        (0, 0.0), (3, 1.0)]


def test_training_figure_has_term_rewards_length_clipping_and_the_base_point(tmp_path):
    rows = [{"step": s, "loss": 0.1 * s, "reward": 0.5, "rewards/exact/mean": 0.25 * s, "rewards/fmt/mean": 0.5,
             "rewards/fmt/std": 0.1, "completions/mean_length": 10.0 + s, "completions/clipped_ratio": 0.0}
            for s in (1, 2)]
    plotted = plot_training(rows, [], tmp_path / "t.png", _overall(0.0, 0.5, 0.25),
                            {**_overall(0.5, 1.0, 0.5), "step": 2})
    assert plotted[REWARD_TERMS_PANEL] == ["rewards/exact/mean", "rewards/fmt/mean"]  # means only, not std
    assert plotted["completion length (tokens, mean)"] == ["completions/mean_length"]
    assert plotted["clipped fraction of completions (hit max_completion_length)"] == ["completions/clipped_ratio"]
    assert len(plotted[HELD_OUT_PANEL]) == 3 and (tmp_path / "t.png").stat().st_size > 0
    # SDPO/PMD log their per-term means under self_distillation/rewards/<name>
    sdpo = plot_training([{"step": 1, "self_distillation/rewards/env_reward": 0.0, "loss": 1.0}], [],
                         tmp_path / "s.png")
    assert sdpo[REWARD_TERMS_PANEL] == ["self_distillation/rewards/env_reward"]
    both = plot_training([{"step": 1, "self_distillation/rewards/env_reward": 0.5, "rewards/env_reward/mean": 0.5,
                           "rewards/exact/mean": 1.0}], [], tmp_path / "b.png")
    assert both[REWARD_TERMS_PANEL] == ["rewards/env_reward/mean", "rewards/exact/mean"]  # each term drawn once


def test_a_flat_zero_is_not_drawn_as_noise():
    """matplotlib zooms a constant series into +-0.04 of its value; fractions get [0, 1], others a wide band."""
    assert y_limits(HELD_OUT_PANEL, [0.0, 0.0]) == (-0.05, 1.05)
    assert y_limits("loss", [0.0, 0.0]) == (-1.0, 1.0)
    assert y_limits("completion length (tokens, mean)", [6.0, 6.0]) == (3.0, 9.0)
    assert y_limits("loss", [0.0, 0.5]) is None  # a moving series keeps matplotlib's range


def test_overlapping_series_stay_visible():
    fig, ax = plt.subplots()
    draw_panel(ax, HELD_OUT_PANEL, {"a": [(0, 0.0), (1, 0.0)], "b": [(0, 0.0), (1, 0.0)], "c": [(0, 0.0), (1, 0.5)]})
    lines = ax.get_lines()
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 3  # no two drawn alike
    assert all(ln.get_alpha() < 1 for ln in lines)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (constant 0)", "b (constant 0)", "c"]
    assert ax.get_ylim() == (-0.05, 1.05)
    plt.close(fig)
