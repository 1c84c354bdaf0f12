"""Reward-function metrics on hand-made inputs (GELI eq. 4 as a metric, eq. 8; within-conversation Spearman)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from geli_lib.reward.evaluation import (
    REWARD_TABLE_COLUMNS,
    EvaluationError,
    evaluate_reward,
    reward_table_row,
    within_spearman,
)


def _pairs(truth=None) -> pd.DataFrame:
    # conversation a: 3 AI turns, score 30; conversation b: 2 AI turns, score 10
    return pd.DataFrame(
        {
            "convo_id": ["a", "a", "a", "b", "b"],
            "turn_idx": [1, 3, 5, 1, 3],
            "true_reward": truth if truth is not None else [1.0, 2.0, 3.0, 5.0, 4.0],
            "local_feedback": np.nan,
            "score": [30.0, 30, 30, 10, 10],
        }
    )


class _Corpus:
    def __init__(self, n_a=3, n_b=2):
        self.conversations = pd.DataFrame({"convo_id": ["a", "b"], "n_ai_turns": [n_a, n_b]})


def test_l_ge_and_delta_li_by_hand():
    pred = np.array([10.0, 10.0, 4.0, 2.0, 1.0])
    m = evaluate_reward(pred, _pairs(), np.array([1, 0, 1, np.nan, 0]), _Corpus())
    # sums: a = 24 (R 30, err 6), b = 3 (R 10, err 7)
    assert m["l_ge_mse"] == pytest.approx((36 + 49) / 2)
    assert m["l_ge_mae"] == pytest.approx(6.5)
    assert m["pos_mean"] == pytest.approx(7.0)  # turns 0, 2
    assert m["nonpos_mean"] == pytest.approx(5.5)  # turns 1, 4 (NaN label left out)
    assert m["delta_li"] == pytest.approx(1.5)
    assert (m["n_pos"], m["n_nonpos"], m["n_conversations"]) == (2, 2, 2)
    # demeaned inside each conversation: a = (10,10,4) - 8 -> (2,2,-4); b = (2,1) - 1.5 -> (.5,-.5)
    # Γ=1: turns 0, 2 -> (2 - 4)/2 = -1 ; Γ=0: turns 1, 4 -> (2 - .5)/2 = .75
    assert m["delta_li_within"] == pytest.approx(-1.75)


def test_l_ge_in_the_fixed_t_mean_form():
    pred = np.array([10.0, 10.0, 4.0, 2.0, 1.0])
    m = evaluate_reward(pred, _pairs(), None, _Corpus(), T_bar=4.0)
    # a: 4 · mean(10,10,4) = 32 (R 30, err -2); b: 4 · mean(2,1) = 6 (R 10, err 4)
    assert m["l_ge_mse"] == pytest.approx((4 + 16) / 2)
    assert m["l_ge_mae"] == pytest.approx(3.0)


def test_delta_within_removes_the_conversation_level():
    """A model that only knows each conversation's level: eq. 8 rewards it, the demeaned Δ does not."""
    pairs = _pairs()
    level = np.array([9.0, 9, 9, 1, 1])  # conversation a is the happy one
    labels = np.array([1, 1, 0, 0, 0])  # and its listener smiled more
    m = evaluate_reward(level, pairs, labels)
    assert m["delta_li"] == pytest.approx(9 - (9 + 1 + 1) / 3)
    assert m["delta_li_within"] == pytest.approx(0.0)


def test_correlations_pooled_and_within():
    pred = np.array([0.1, 0.3, 0.2, 1.0, 2.0])
    m = evaluate_reward(pred, _pairs(), None)
    t = _pairs()["true_reward"].to_numpy()
    assert m["gt_pearson"] == pytest.approx(pearsonr(pred, t)[0])
    assert m["gt_spearman"] == pytest.approx(spearmanr(pred, t)[0])
    # a: ranks (1,3,2) vs (1,2,3) -> rho 0.5; b: 2 turns in reverse order -> -1
    assert m["gt_spearman_within"] == pytest.approx((0.5 - 1.0) / 2)
    assert m["gt_column"] == "true_reward" and m["gt_within_n"] == 2
    assert math.isnan(m["delta_li"])


def test_within_skips_constant_truth_and_zeroes_constant_predictions():
    out = within_spearman(
        np.array([1.0, 2, 3, 5, 5, 7, 8]),
        np.array([3.0, 3, 3, 1, 2, 1, np.nan]),
        np.array(["a", "a", "a", "b", "b", "c", "c"]),
    )
    # a: constant truth -> skipped; b: constant prediction -> 0; c: one turn with truth -> skipped
    assert out == {"gt_spearman_within": 0.0, "gt_within_n": 1, "gt_within_skipped": 2, "gt_within_constant": 1}
    m = evaluate_reward(np.full(5, 4.0), _pairs(), None)
    assert m["gt_spearman_within"] == 0.0 and math.isnan(m["gt_spearman"])


def test_esconv_local_feedback_and_no_truth():
    p = _pairs(truth=[np.nan] * 5).assign(local_feedback=[5.0, np.nan, 1.0, 2.0, 4.0])
    m = evaluate_reward(np.array([3.0, 0, 1, 1, 2]), p, None)
    assert m["gt_column"] == "local_feedback"
    assert m["gt_pearson"] == pytest.approx(pearsonr([3.0, 1, 1, 2], [5.0, 1, 2, 4])[0])
    m = evaluate_reward(np.ones(5), p.assign(local_feedback=np.nan), None)
    assert m["gt_column"] == "" and math.isnan(m["gt_spearman_within"]) and math.isnan(m["gt_pearson"])


def test_bad_input():
    with pytest.raises(EvaluationError, match="5 pairs"):
        evaluate_reward(np.ones(4), _pairs(), None)
    with pytest.raises(EvaluationError, match="not whole"):
        evaluate_reward(np.ones(5), _pairs(), None, _Corpus(n_a=4))
    with pytest.raises(EvaluationError, match="non-finite"):
        evaluate_reward(np.array([1, 2, np.nan, 1, 1]), _pairs(), None)
    with pytest.raises(EvaluationError, match="li_labels"):
        evaluate_reward(np.ones(5), _pairs(), np.ones(3))


def test_reward_table_row_has_the_contract_columns():
    m = evaluate_reward(np.ones(5), _pairs(), np.array([1, 0, 1, 0, 1]))
    row = reward_table_row("rrd", "GE", 0, "simulated", None, 32, m)
    assert list(row) == list(REWARD_TABLE_COLUMNS)
    assert row["K"] == 32 and math.isnan(row["lam"]) and row["delta_li"] == 0.0
    df = pd.DataFrame([row, reward_table_row("geli", "GELI", 1, "simulated", 0.5, 32, m)])
    assert list(df.columns) == list(REWARD_TABLE_COLUMNS)
    with pytest.raises(EvaluationError, match="family"):
        reward_table_row("x", "nonsense", 0, "simulated", None, None, m)
