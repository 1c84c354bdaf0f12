"""Figures: what a reader is meant to see is drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.markers import MarkerStyle  # noqa: E402

from geli_lib import figures  # noqa: E402


def _evals() -> pd.DataFrame:
    rows = [
        (name, 0, "simulated", "rloo", step, f"c{c}", 1.0 + 0.1 * step + 0.01 * c, 0.2 * step, 5, "a b c")
        for name in ("GELI", "LS")
        for step in (0, 5, 10)
        for c in range(3)
    ]
    cols = ["reward_fn", "seed", "corpus", "algorithm", "step", "context_id", "reward", "kl", "words", "response"]
    return pd.DataFrame(rows, columns=cols)


def _vertical_lines(ax) -> list[float]:  # noqa: ANN001
    return [float(line.get_xdata()[0]) for line in ax.lines if len(set(line.get_xdata())) == 1]


def test_rl_eval_curves_marks_the_kept_update_only_where_it_is_not_the_last():
    fig = figures.rl_eval_curves(_evals(), kept={"GELI": 5, "LS": 10})
    geli_top, ls_top = fig.axes[0], fig.axes[1]
    assert _vertical_lines(geli_top) == [5.0] and _vertical_lines(fig.axes[2]) == [5.0]  # reward and KL panels
    assert _vertical_lines(ls_top) == []  # kept its last update: nothing to mark
    assert "RLOO" in geli_top.get_title()
    assert _vertical_lines(figures.rl_eval_curves(_evals()).axes[0]) == []


def _horizontal_lines(ax) -> list[float]:  # noqa: ANN001
    return [float(line.get_ydata()[0]) for line in ax.lines if len(set(line.get_ydata())) == 1]


def test_best_of_n_draws_a_panel_per_reward_function_with_rl_beside_it_and_the_oracle_last():
    rows = [
        {"selected by": name, "n": n, "KL bound (nats)": 0.1 * n, "gain vs greedy": g * n, "r̂: Oracle": 2.0 + 0.1 * n}
        for name, g in (("GELI", 0.1), ("VA", 0.05))
        for n in (1, 2, 4)
    ] + [{"selected by": "greedy base", "n": 0, "gain vs greedy": 0.0, "r̂: Oracle": 2.3}]
    rl = pd.DataFrame({"reward function": ["GELI"], "gain": [0.25]})
    fig = figures.best_of_n(pd.DataFrame(rows), rl, "Oracle")
    geli, va, oracle = fig.axes
    assert [geli.get_title(), va.get_title()] == ["GELI", "VA"]
    assert list(geli.lines[0].get_ydata()) == [0.1, 0.2, 0.4]
    assert 0.25 in _horizontal_lines(geli) and 0.25 not in _horizontal_lines(va)  # RL's gain where it ran
    assert 2.3 in _horizontal_lines(oracle) and len(oracle.lines) == 3  # two reward functions' picks + greedy
    assert len(figures.best_of_n(pd.DataFrame(rows)).axes) == 2  # no truth judge: no oracle panel
    assert [t.get_text() for t in geli.get_xticklabels()] == ["1\n≤0.10", "2\n≤0.20", "4\n≤0.40"]  # the table's bound


def test_diversity_vs_kl_crosses_the_collapsed_evaluations_and_draws_the_threshold():
    path = pd.DataFrame({
        "reward_fn": ["GELI"] * 3 + ["VA"] * 3, "seed": 0, "step": [0, 3, 6] * 2,
        "KL (nats)": [0.0, 1.0, 2.0, 0.0, 1.5, 3.0], "distinct-2 / base": [1.0, 1.1, 0.9, 1.0, 0.4, 0.2],
        "collapsed": [False, False, False, False, True, True],
    })  # fmt: skip
    ax = figures.diversity_vs_kl(path, 0.5).axes[0]
    assert 0.5 in _horizontal_lines(ax)
    x = MarkerStyle("x")
    cross = x.get_path().transformed(x.get_transform()).vertices
    marked = {
        "x" if np.array_equal(c.get_paths()[0].vertices, cross) else "o": c for c in ax.collections[2:]
    }  # the VA run's two scatters (GELI's come first)
    assert [tuple(xy) for xy in marked["x"].get_offsets()] == [(1.5, 0.4), (3.0, 0.2)]
    assert [tuple(xy) for xy in marked["o"].get_offsets()] == [(0.0, 1.0)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GELI", "VA"]
