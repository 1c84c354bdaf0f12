"""Reward-function metrics on held-out whole conversations (GELI Sec. 5, Tables 1 and 3).

:func:`evaluate_reward` turns per-turn predictions r̂_t into one row of
``results/<profile>/tables/reward_functions.csv``:

- ``l_ge_mse``, ``l_ge_mae``: (R_GE − Ŝ)² and |R_GE − Ŝ| averaged over held-out
  conversations (eq. 4 as a metric; Table 3's MSE / MAE), where Ŝ is what the
  per-turn rewards add up to in the form they were trained in: the fixed-T mean
  form (T̄/T) Σ_t r̂_t, or the sum Σ_t r̂_t (``T_bar=None``; see
  :func:`geli_lib.reward.losses.session_estimate`). Every AI turn of a conversation
  must be present (checked against the corpus), otherwise Ŝ is not the
  conversation's return.
- ``pos_mean``, ``nonpos_mean``, ``delta_li``: E[r̂ | Γ=1], E[r̂ | Γ=0] and their
  difference ΔR_LI (GELI eq. 8); turns without a label (NaN) are left out.
- ``delta_li_within``: eq. 8 on predictions demeaned inside each conversation,
  r̂_t − mean_{t' ∈ τ} r̂_t'. The listener's mood moves Γ and R together, so a
  model that only gets each conversation's level right already earns
  ΔR_LI > 0; the within-conversation Δ is what is left when the level is
  removed: does the reward favour the turns the listener smiled at?
- ``gt_pearson``, ``gt_spearman``: correlation of r̂_t with the turn truth, pooled
  over all held-out turns that have one; ``gt_spearman_within``: the mean over
  conversations of the Spearman correlation inside one conversation, the
  credit-assignment measure. The truth is the planted ``true_reward``
  (simulated corpus) or else the seeker's ``local_feedback`` (ESConv); NaN when
  the corpus has neither.

Within-conversation convention: a conversation needs ≥ 2 turns with truth and
a non-constant truth, else it is skipped (``gt_within_skipped``: there is no
ranking to recover). A conversation whose *predictions* are constant (the
Mean / Mode baselines, or a collapsed head) gets correlation 0, not NaN: it
assigns no credit, and a score copied to every turn must not pass the measure
by being left out (``gt_within_constant`` counts them). A constant predictor
has NaN pooled correlations (undefined).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

#: The results-contract columns of ``tables/reward_functions.csv`` (what 06, the book and PPO read), in order.
REWARD_TABLE_COLUMNS: tuple[str, ...] = (
    "method",
    "family",
    "seed",
    "corpus",
    "lam",
    "K",
    "l_ge_mse",
    "l_ge_mae",
    "pos_mean",
    "nonpos_mean",
    "delta_li",
    "delta_li_within",
    "gt_pearson",
    "gt_spearman",
    "gt_spearman_within",
)
FAMILIES = ("baseline", "GE", "LI", "GELI", "LLM", "oracle")


class EvaluationError(ValueError):
    """Predictions and pairs do not fit together (length, missing turns)."""


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    return rankdata(x, method="average")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when fewer than 2 points or either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xc**2).sum()) * float((yc**2).sum()))
    if den <= 1e-12 * max(1.0, float(np.abs(x).max()) * float(np.abs(y).max())):
        return math.nan
    return float((xc * yc).sum() / den)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson of average ranks); NaN when undefined."""
    if len(x) < 2:
        return math.nan
    return pearson(_rank(np.asarray(x, float)), _rank(np.asarray(y, float)))


def truth_column(pairs: pd.DataFrame) -> str | None:
    """``true_reward`` when any is finite, else ``local_feedback`` when any is, else None."""
    for col in ("true_reward", "local_feedback"):
        if col in pairs and np.isfinite(pairs[col].to_numpy(float)).any():
            return col
    return None


def within_spearman(pred: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Mean within-group Spearman of ``pred`` vs ``truth`` (see the module docstring for skips)."""
    df = pd.DataFrame({"p": np.asarray(pred, float), "t": np.asarray(truth, float), "g": groups})
    df = df[np.isfinite(df["t"])]
    rhos: list[float] = []
    skipped = constant = 0
    for _, g in df.groupby("g", sort=True):
        if len(g) < 2 or np.ptp(g["t"].to_numpy()) == 0:
            skipped += 1
            continue
        if np.ptp(g["p"].to_numpy()) <= 1e-12 * max(1.0, float(np.abs(g["p"]).max())):
            constant += 1
            rhos.append(0.0)
            continue
        rhos.append(spearman(g["p"].to_numpy(), g["t"].to_numpy()))
    return {
        "gt_spearman_within": float(np.mean(rhos)) if rhos else math.nan,
        "gt_within_n": len(rhos),
        "gt_within_skipped": skipped,
        "gt_within_constant": constant,
    }


def demean_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` minus the mean of their group (conversation)."""
    v = pd.Series(np.asarray(values, float))
    return (v - v.groupby(np.asarray(groups)).transform("mean")).to_numpy()


def delta_li(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """GELI eq. 8: (E[r̂ | Γ=1], E[r̂ | Γ=0], their difference); NaN labels are left out."""
    pos, neg = labels == 1, labels == 0
    p = float(pred[pos].mean()) if pos.any() else math.nan
    n = float(pred[neg].mean()) if neg.any() else math.nan
    return p, n, p - n


def evaluate_reward(
    pred: np.ndarray, pairs: pd.DataFrame, li_labels: np.ndarray | None, corpus: Any = None, T_bar: float | None = None
) -> dict[str, float]:
    """Metrics of per-turn predictions ``pred`` (aligned with ``pairs`` rows) on held-out conversations.

    ``li_labels``: Γ per pair (eq. 7; NaN = no label) for eq. 8, or None.
    ``T_bar``: the T̄ of the mean form the rewards were trained in, None for the sum form.
    ``corpus``: when given, every conversation in ``pairs`` must carry all its
    AI turns (``n_ai_turns``), so Σ_t r̂_t is its whole return.
    Returns the metric columns of :data:`REWARD_TABLE_COLUMNS` plus counts
    (``n_conversations``, ``n_turns``, ``n_pos``, ``n_nonpos``, ``gt_column``,
    ``gt_within_*``).
    """
    pred = np.asarray(pred, dtype=float).reshape(-1)
    if len(pred) != len(pairs):
        raise EvaluationError(f"pred has {len(pred)} values but there are {len(pairs)} pairs")
    if not np.isfinite(pred).all():
        raise EvaluationError(f"pred holds {int((~np.isfinite(pred)).sum())} non-finite values")
    conv = pairs["convo_id"].astype(str).to_numpy()
    if corpus is not None:
        want = corpus.conversations.set_index("convo_id")["n_ai_turns"]
        got = pd.Series(conv).value_counts()
        short = [c for c, n in got.items() if c in want.index and int(want[c]) != int(n)]
        if short:
            raise EvaluationError(
                f"{len(short)} conversation(s) are not whole (e.g. {short[0]}: {int(got[short[0]])} of "
                f"{int(want[short[0]])} AI turns): L_GE needs every AI turn of a held-out conversation"
            )
    out: dict[str, Any] = {}
    df = pd.DataFrame({"c": conv, "p": pred, "R": pairs["score"].to_numpy(float)})
    g = df.groupby("c", sort=True).agg(s=("p", "sum" if T_bar is None else "mean"), R=("R", "first"))
    if T_bar is not None:
        g["s"] *= float(T_bar)
    g = g[np.isfinite(g["R"])]
    err = g["R"] - g["s"]
    out["l_ge_mse"] = float((err**2).mean()) if len(g) else math.nan
    out["l_ge_mae"] = float(err.abs().mean()) if len(g) else math.nan
    out["n_conversations"] = int(len(g))
    out["n_turns"] = int(len(pred))

    if li_labels is None:
        lab = np.full(len(pred), np.nan)
    else:
        lab = np.asarray(li_labels, dtype=float).reshape(-1)
        if len(lab) != len(pred):
            raise EvaluationError(f"li_labels has {len(lab)} values but there are {len(pred)} pairs")
    out["pos_mean"], out["nonpos_mean"], out["delta_li"] = delta_li(pred, lab)
    out["delta_li_within"] = delta_li(demean_within(pred, conv), lab)[2]
    out["n_pos"], out["n_nonpos"] = int((lab == 1).sum()), int((lab == 0).sum())

    col = truth_column(pairs)
    out["gt_column"] = col or ""
    if col is None:
        out.update(
            gt_pearson=math.nan,
            gt_spearman=math.nan,
            gt_spearman_within=math.nan,
            gt_within_n=0,
            gt_within_skipped=0,
            gt_within_constant=0,
        )
    else:
        t = pairs[col].to_numpy(float)
        ok = np.isfinite(t)
        out["gt_pearson"] = pearson(pred[ok], t[ok])
        out["gt_spearman"] = spearman(pred[ok], t[ok])
        out.update(within_spearman(pred, t, conv))
    return out


def reward_table_row(
    method: str, family: str, seed: int, corpus: str, lam: float | None, K: int | None, metrics: dict[str, Any]
) -> dict[str, Any]:
    """One row of ``reward_functions.csv`` in :data:`REWARD_TABLE_COLUMNS` order.

    ``lam`` / ``K`` are NaN where they do not apply (pass None).
    """
    if family not in FAMILIES:
        raise EvaluationError(f"family {family!r} unknown: choose one of {FAMILIES}")
    row: dict[str, Any] = {
        "method": method,
        "family": family,
        "seed": int(seed),
        "corpus": corpus,
        "lam": math.nan if lam is None else float(lam),
        "K": math.nan if K is None else int(K),
    }
    for c in REWARD_TABLE_COLUMNS[6:]:
        row[c] = float(metrics.get(c, math.nan))
    return row
