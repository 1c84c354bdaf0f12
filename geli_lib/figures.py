"""Figures shared by the notebooks and the book.

Each function takes canonical tables and returns a matplotlib Figure; the
notebook displays it (so it appears in the book) and :func:`save_figure` keeps a
PNG under ``results/<profile>/figures/``. Never switch the backend to Agg in a
notebook: the book would get no figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from geli_lib.io import atomic_write
from geli_lib.schema import EMOTIONS

#: LLM-GELI App. E.1: CANDOR's overall-affect (×10) distribution, percent per bin.
CANDOR_SCORE_BINS: dict[str, float] = {
    "<50": 2.2, "50-60": 6.7, "60-70": 14.5, "70-80": 30.4, "80-90": 24.6, "90-100": 21.6,
}
#: LLM-GELI App. E.1: CANDOR listener emotion distribution, percent of frames.
CANDOR_EMOTIONS: dict[str, float] = {
    "anger": 3.9, "contempt": 0.08, "disgust": 1.98, "fear": 2.23, "sadness": 8.84,
    "neutral": 35.61, "happiness": 40.01, "surprise": 7.35,
}


def save_figure(fig: plt.Figure, profile: str, name: str) -> None:
    """Save ``fig`` atomically as ``results/<profile>/figures/<name>.png``."""
    from geli_lib.runs import results_dir

    path = results_dir(profile, "figures") / f"{name}.png"
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def score_bins(scores: pd.Series) -> pd.Series:
    """Percent of conversations per App. E.1 bin of the 0-100 session score."""
    edges = [-np.inf, 50, 60, 70, 80, 90, np.inf]
    binned = pd.cut(scores, edges, right=False, labels=list(CANDOR_SCORE_BINS))
    return (binned.value_counts(normalize=True).reindex(list(CANDOR_SCORE_BINS)).fillna(0) * 100).round(1)


def score_histogram(conversations: pd.DataFrame, corpus: str) -> plt.Figure:
    """Session-score distribution next to CANDOR's (LLM-GELI App. E.1)."""
    ours = score_bins(conversations["score"].dropna())
    x = np.arange(len(ours))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar(x - 0.2, ours.values, width=0.4, label=f"{corpus} (n={conversations['score'].notna().sum()})")
    ax.bar(x + 0.2, list(CANDOR_SCORE_BINS.values()), width=0.4, label="CANDOR (LLM-GELI App. E.1)",
           color="0.7")
    ax.set_xticks(x, list(CANDOR_SCORE_BINS))
    ax.set_xlabel("session score R_GE (0-100)")
    ax.set_ylabel("% of conversations")
    ax.legend(frameon=False)
    ax.set_title("Global explicit score")
    fig.tight_layout()
    return fig


def length_panels(conversations: pd.DataFrame, turns: pd.DataFrame) -> plt.Figure:
    """Turns per conversation and words per turn, by role."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist(conversations["n_turns"], bins=20, color="C0")
    axes[0].set_xlabel("turns per conversation")
    axes[0].set_ylabel("conversations")
    for role, color in (("User", "C1"), ("AI", "C2")):
        words = turns.loc[turns["role"] == role, "n_words"]
        axes[1].hist(words.clip(upper=words.quantile(0.99)), bins=30, alpha=0.6, label=role, color=color)
    axes[1].set_xlabel("words per turn")
    axes[1].legend(frameon=False)
    fig.tight_layout()
    return fig


def emotion_distribution(frames: pd.DataFrame) -> pd.DataFrame:
    """Percent of face frames per arg-max emotion, ours next to CANDOR's."""
    probs = frames[[f"prob_face_{e}" for e in EMOTIONS]].dropna()
    top = pd.Series(np.array(EMOTIONS)[probs.to_numpy().argmax(axis=1)]) if len(probs) else pd.Series([], dtype=str)
    ours = (top.value_counts(normalize=True).reindex(list(EMOTIONS)).fillna(0) * 100).round(2)
    return pd.DataFrame({"this corpus (%)": ours, "CANDOR (%)": pd.Series(CANDOR_EMOTIONS)})


def emotion_bars(table: pd.DataFrame) -> plt.Figure:
    """Bar chart of :func:`emotion_distribution`."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    table.plot.bar(ax=ax, color=["C0", "0.7"], width=0.8)
    ax.set_ylabel("% of listener face frames")
    ax.set_title("Listener's arg-max facial emotion")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def affect_vs_truth(summary: pd.DataFrame, turns: pd.DataFrame) -> plt.Figure:
    """How the listener's visual affect relates to the planted turn reward.

    Left: true reward of AI turns by visual-affect label Γ (GELI eq. 7).
    Right: mean listener happiness probability per decile of true reward.
    """
    df = summary.merge(turns[["convo_id", "turn_idx", "true_reward"]], on=["convo_id", "turn_idx"])
    df = df.dropna(subset=["true_reward"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    groups = [df.loc[df["va_label"] == g, "true_reward"] for g in (0, 1)]
    axes[0].boxplot(groups, showfliers=False)
    axes[0].set_xticks([1, 2], [f"Γ=0 (n={len(groups[0])})", f"Γ=1 (n={len(groups[1])})"])
    axes[0].set_ylabel("planted turn reward")
    axes[0].set_title("Reward by visual-affect label")
    if len(df) >= 10:
        dec = pd.qcut(df["true_reward"].rank(method="first"), 10, labels=False)
        means = df.groupby(dec).agg(r=("true_reward", "mean"), h=("happiness_mean", "mean"))
        axes[1].plot(means["r"], means["h"], marker="o")
    axes[1].set_xlabel("planted turn reward (decile mean)")
    axes[1].set_ylabel("listener P(happiness)")
    axes[1].set_title("Face follows reward, noisily")
    fig.tight_layout()
    return fig


def unroll(predictions: pd.DataFrame, convo_id: str, methods: list[str], max_chars: int = 60,
           max_turns: int = 14) -> plt.Figure:
    """GELI Fig. 2: per-turn rewards of one unseen conversation, methods side by side.

    ``predictions``: long table (convo_id, turn_idx, response, true_reward,
    method, pred). The planted truth, when present, is the first panel.
    Utterances label the rows (shortened to ``max_chars``).
    """
    df = predictions[predictions["convo_id"] == convo_id]
    turns = df.drop_duplicates("turn_idx").sort_values("turn_idx").head(max_turns)
    panels = ([("planted truth", turns["true_reward"].to_numpy())]
              if turns["true_reward"].notna().any() else [])
    for m in methods:
        sub = df[df["method"] == m].set_index("turn_idx").reindex(turns["turn_idx"])
        panels.append((m, sub["pred"].to_numpy()))
    labels = [u if len(u) <= max_chars else u[:max_chars - 1] + "…" for u in turns["response"].astype(str)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 4.5, 0.38 * len(turns) + 1.4),
                             sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(turns))
    for i, (ax, (name, vals)) in enumerate(zip(axes, panels)):
        ax.barh(y, vals, color=np.where(np.asarray(vals) >= np.nanmedian(vals), "C2", "C3"))
        ax.set_title(name, fontsize=9)
        ax.axvline(0, color="0.5", lw=0.5)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"Reward unroll of held-out conversation {convo_id[:8]}… (AI turns)", fontsize=10)
    fig.tight_layout()
    return fig


def sweep(rows: pd.DataFrame, x: str, metrics: dict[str, str], hue: str = "method",
          xlabel: str | None = None, xscale: str = "linear") -> plt.Figure:
    """Metrics (mean ± sd over seeds) against a swept parameter ``x``, one line per ``hue``.

    ``xscale="symlog"`` spreads a grid that is dense near 0 (linear below 0.01).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (col, title) in zip(axes, metrics.items()):
        for name, g in rows.groupby(hue, sort=False):
            s = g.groupby(x)[col].agg(["mean", "std"]).fillna(0)
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel or x)
        if xscale == "symlog":
            ax.set_xscale("symlog", linthresh=0.01)
        else:
            ax.set_xscale(xscale)
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
