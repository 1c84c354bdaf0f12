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

from geli_lib.core.io import atomic_write
from geli_lib.core.runs import results_dir
from geli_lib.corpus.schema import EMOTIONS

#: LLM-GELI App. E.1: CANDOR's overall-affect (×10) distribution, percent per bin.
CANDOR_SCORE_BINS: dict[str, float] = {
    "<50": 2.2,
    "50-60": 6.7,
    "60-70": 14.5,
    "70-80": 30.4,
    "80-90": 24.6,
    "90-100": 21.6,
}
#: LLM-GELI App. E.1: CANDOR listener emotion distribution, percent of frames.
CANDOR_EMOTIONS: dict[str, float] = {
    "anger": 3.9,
    "contempt": 0.08,
    "disgust": 1.98,
    "fear": 2.23,
    "sadness": 8.84,
    "neutral": 35.61,
    "happiness": 40.01,
    "surprise": 7.35,
}


def save_figure(fig: plt.Figure, profile: str, name: str) -> None:
    """Save ``fig`` atomically as ``results/<profile>/figures/<name>.png``."""
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
    ax.bar(x + 0.2, list(CANDOR_SCORE_BINS.values()), width=0.4, label="CANDOR (LLM-GELI App. E.1)", color="0.7")
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


def unroll(
    predictions: pd.DataFrame, convo_id: str, methods: list[str], max_chars: int = 60, max_turns: int = 14
) -> plt.Figure:
    """GELI Fig. 2: per-turn rewards of one unseen conversation, methods side by side.

    ``predictions``: long table (convo_id, turn_idx, response, true_reward,
    method, pred). The planted truth, when present, is the first panel.
    Utterances label the rows (shortened to ``max_chars``).
    """
    df = predictions[predictions["convo_id"] == convo_id]
    turns = df.drop_duplicates("turn_idx").sort_values("turn_idx").head(max_turns)
    panels = [("planted truth", turns["true_reward"].to_numpy())] if turns["true_reward"].notna().any() else []
    for m in methods:
        sub = df[df["method"] == m].set_index("turn_idx").reindex(turns["turn_idx"])
        panels.append((m, sub["pred"].to_numpy()))
    labels = [u if len(u) <= max_chars else u[: max_chars - 1] + "…" for u in turns["response"].astype(str)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 4.5, 0.38 * len(turns) + 1.4), sharey=True)
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


def sweep(
    rows: pd.DataFrame,
    x: str,
    metrics: dict[str, str],
    hue: str = "method",
    xlabel: str | None = None,
    xscale: str = "linear",
) -> plt.Figure:
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


def loss_curves(losses: dict[str, list[list[float]]]) -> plt.Figure:
    """Training loss per epoch of each reward function (one line per seed), on a log scale.

    ``losses``: method name -> one list of per-epoch losses per seed (``info["loss"]`` of the
    trained functions, :func:`geli_lib.reward.experiments.saved_info`). Each method's loss has its own
    unit (eq. 2 mixes two), so each gets its own panel.
    """
    n = len(losses)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, seeds) in zip(axes.flat, losses.items()):
        for k, hist in enumerate(seeds):
            ax.plot(np.arange(1, len(hist) + 1), hist, color=f"C{k}", lw=1, label=f"seed {k}")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    axes.flat[0].set_ylabel("training loss")
    axes.flat[0].legend(frameon=False, fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def auto_eval_bars(rows: pd.DataFrame, metrics: dict[str, str] | None = None) -> plt.Figure:
    """Automatic scores of each model's generations, mean ± sd over seeds (``tables/auto_eval.csv``).

    Left: cross-scoring, one bar group per model and one bar per reward function
    (the ``reward: …`` metrics). Right: one small panel per text metric in ``metrics``.
    """
    metrics = metrics or {
        "vader_positive": "VADER positive share ↑",
        "context_overlap": "context overlap ↑",
        "distinct_2": "distinct-2 ↑",
        "repetition": "repetition ↓",
        "same_as_base": "identical to base",
    }
    stats = rows.groupby(["model", "metric"], sort=False)["value"].agg(["mean", "std"]).fillna(0)
    models = list(dict.fromkeys(rows["model"]))
    rewards = [m for m in dict.fromkeys(rows["metric"]) if m.startswith("reward: ")]
    shown = [m for m in metrics if m in set(rows["metric"])]
    # Cross-scoring across the top row, one small panel per text metric below it.
    mosaic = [["cross"] * max(1, len(shown))] + ([shown] if shown else [])
    fig, ax_by = plt.subplot_mosaic(
        mosaic, figsize=(max(8.0, 2.6 * len(shown)), 3.8 + 2.8 * bool(shown)), height_ratios=[1.4, 1][: len(mosaic)]
    )
    axes = [ax_by["cross"]] + [ax_by[m] for m in shown]
    x = np.arange(len(models))
    width = 0.8 / max(1, len(rewards))
    for k, r in enumerate(rewards):
        s = stats.xs(r, level="metric").reindex(models)
        axes[0].bar(
            x + (k - (len(rewards) - 1) / 2) * width,
            s["mean"],
            width,
            yerr=s["std"],
            capsize=2,
            label=r.removeprefix("reward: "),
        )
    axes[0].set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("mean r̂ of the responses")
    axes[0].set_title("Cross-scoring: every model under every reward function", fontsize=9)
    axes[0].axhline(0, color="0.5", lw=0.5)
    if rewards:
        axes[0].legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    for ax, m in zip(axes[1:], shown):
        s = stats.xs(m, level="metric").reindex(models)
        ax.bar(x, s["mean"], yerr=s["std"], capsize=2, color="C7")
        ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
        ax.set_title(metrics[m], fontsize=9)
    fig.tight_layout()
    return fig


def ppo_curves(curves: pd.DataFrame) -> plt.Figure:
    """GELI Figs. 7-10: mean reward r̂ (top) and KL to the reference (bottom) per PPO update.

    One column per reward function; r̂ is raw (the reward table's scale).

    ``curves``: rows of ``tables/ppo_curves.csv``; several seeds of a reward
    function are drawn as separate lines.
    """
    names = list(dict.fromkeys(curves["reward_fn"]))
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 5.0), squeeze=False, sharex=True)
    for j, name in enumerate(names):
        for seed, g in curves[curves["reward_fn"] == name].groupby("seed"):
            g = g.sort_values("step")
            axes[0, j].plot(g["step"], g["reward_mean"], marker="o", ms=3, label=f"seed {seed}")
            axes[1, j].plot(g["step"], g["kl"], marker="o", ms=3, color="tab:red")
        axes[0, j].set_title(name, fontsize=10)
        axes[1, j].set_xlabel("PPO update")
    axes[0, 0].set_ylabel("mean reward r̂")
    axes[1, 0].set_ylabel("KL (nats / response)")
    fig.tight_layout()
    return fig


def listener_signals(rows: pd.DataFrame, title: str = "") -> plt.Figure:
    """One listener's per-second features (an ``audio_video_features.csv``): face, smile, gaze, nods, pitch.

    Top: the FER probabilities of happiness and neutral; middle: smile and gaze
    shares with nod_yes / nod_no marks; bottom: f0 (Hz) and is_speaking.
    """
    t = (
        pd.to_timedelta(rows["timedelta"]).dt.total_seconds().to_numpy()
        if "timedelta" in rows
        else rows["t"].to_numpy()
    )
    fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
    for emo in ("happiness", "neutral"):
        axes[0].plot(t, rows[f"prob_face_{emo}"], marker="o", label=emo)
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_ylabel("P(emotion)")
    axes[0].legend(loc="center right")
    axes[1].step(t, rows["smile"], where="post", label="smile")
    axes[1].step(t, rows["gaze_on"], where="post", label="gaze on screen", linestyle="--")
    for col, y, marker in (("nod_yes", 1.1, "v"), ("nod_no", 1.2, ">")):
        hit = rows[col].to_numpy() >= 0.5
        axes[1].scatter(t[hit], np.full(hit.sum(), y), marker=marker, label=col)
    axes[1].set_ylim(-0.05, 1.3)
    axes[1].set_ylabel("share of frames")
    axes[1].legend(loc="lower right", ncol=4, fontsize=8)
    axes[2].plot(t, rows["f0_mean"], marker="o", color="C3", label="f0 (Hz)")
    axes[2].set_ylabel("f0 (Hz)")
    twin = axes[2].twinx()
    twin.step(t, rows["is_speaking"], where="post", color="grey", alpha=0.6)
    twin.set_ylabel("voiced share", color="grey")
    twin.set_ylim(-0.05, 1.05)
    axes[2].set_xlabel("second")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig


def consistency_bars(table: pd.DataFrame, paper: tuple[float, float] = (89.10, 5.37)) -> plt.Figure:
    """LLM-GELI App. J: per-conversation agreement (%) of two decomposition samples, per variant.

    ``table``: convo_id, variant, agreement (0-1) (:func:`geli_lib.reward.llm.consistency`
    plus a ``variant`` column); the paper's o3-mini mean ± sd is the band.
    """
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(table) + 2.5), 3.0))
    ax.axhspan(paper[0] - paper[1], paper[0] + paper[1], color="0.85", label="paper (o3-mini), mean ± sd")
    x = 0
    for i, (variant, g) in enumerate(table.groupby("variant", sort=False)):
        xs = np.arange(x, x + len(g))
        ax.bar(xs, 100 * g["agreement"].to_numpy(), color=f"C{i}", label=variant)
        x += len(g) + 1
    ax.set_ylim(0, 100)
    ax.set_ylabel("agreement of two samples (%)")
    ax.set_xticks([])
    ax.set_xlabel("conversation")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def rl_eval_curves(
    evals: pd.DataFrame, curves: pd.DataFrame | None = None, kept: dict[str, int] | None = None
) -> plt.Figure:
    """GELI Figs. 7-10, measured: reward and KL of the policy on fixed held-out contexts per update.

    One column per reward function. Top: mean r̂ of the greedy responses to the
    fixed contexts (``tables/rl_eval_curves.csv``) with a 95% normal interval over
    contexts, and (thin, grey) the batch means of the sampled training responses
    (``tables/ppo_curves.csv``). Bottom: the mean KL to the reference (nats per
    response). Titles name the algorithm; several seeds are separate lines.
    ``kept``: reward function -> the update whose adapter the run kept (a dotted
    line, drawn when it is not the last: the curve's responses collapsed after it).
    """
    source = evals if len(evals) else (curves if curves is not None else evals)
    names = list(dict.fromkeys(source["reward_fn"]))
    fig, axes = plt.subplots(2, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 5.2), squeeze=False, sharex=True)
    for j, name in enumerate(names):
        ev = evals[evals["reward_fn"] == name]
        alg = ""
        for seed, g in ev.groupby("seed"):
            alg = str(g["algorithm"].iloc[0])
            s = g.groupby("step")["reward"].agg(["mean", "std", "count"])
            half = 1.96 * s["std"].fillna(0) / np.sqrt(s["count"])
            axes[0, j].plot(s.index, s["mean"], marker="o", ms=3, label=f"held-out, seed {seed}")
            axes[0, j].fill_between(s.index, s["mean"] - half, s["mean"] + half, alpha=0.2)
            k = g.groupby("step")["kl"].mean()
            axes[1, j].plot(k.index, k.to_numpy(), marker="o", ms=3, color="tab:red")
        if curves is not None and len(curves):
            for seed, g in curves[curves["reward_fn"] == name].groupby("seed"):
                alg = alg or str(g["algorithm"].iloc[0])
                g = g.sort_values("step")
                axes[0, j].plot(g["step"], g["reward_mean"], lw=0.8, color="0.6", label=f"train batches, seed {seed}")
                if ev.empty:
                    axes[1, j].plot(g["step"], g["kl"], marker="o", ms=3, color="tab:red")
        last = source.loc[source["reward_fn"] == name, "step"].max()
        if kept and name in kept and kept[name] < last:
            for ax in axes[:, j]:
                ax.axvline(kept[name], color="0.3", ls=":", lw=1.2)
            axes[0, j].annotate(f"kept: update {kept[name]}", (kept[name], 0.02), xycoords=("data", "axes fraction"),
                                fontsize=7, ha="right", rotation=90)  # fmt: skip
        axes[0, j].set_title(f"{name} ({alg.upper()})" if alg else name, fontsize=10)
        axes[1, j].set_xlabel("update")
    axes[0, 0].set_ylabel("mean reward r̂")
    axes[1, 0].set_ylabel("KL to reference (nats / response)")
    if names:
        axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def best_of_n(table: pd.DataFrame, rl_summary: pd.DataFrame | None = None, truth: str | None = None) -> plt.Figure:
    """07's control: best-of-n of the base policy per reward function (``tables/best_of_n.csv``, one seed).

    One panel per reward function: its gain under itself over the base's greedy replies against n (log
    scale), RL's gain (``rl_summary``, the same comparison) dashed. With a ``truth`` judge (the oracle), a
    last panel: its mean r̂ of every reward function's picks, the greedy base's dashed. The x labels give
    the KL bound log n − (n−1)/n.
    """
    picks = table[table["n"] > 0]
    greedy = table[table["selected by"] == "greedy base"]
    names = list(dict.fromkeys(picks["selected by"]))
    with_truth = bool(truth) and f"r̂: {truth}" in table
    cols = len(names) + with_truth
    fig, axes = plt.subplots(1, cols, figsize=(3.0 * cols, 3.2), squeeze=False)
    rl = {} if rl_summary is None else rl_summary.set_index("reward function")["gain"].to_dict()
    for i, name in enumerate(names):
        g, ax, colour = picks[picks["selected by"] == name], axes[0, i], f"C{i}"
        ax.plot(g["n"], g["gain vs greedy"], marker="o", ms=3, color=colour, label="best-of-n")
        if name in rl:
            ax.axhline(rl[name], color=colour, ls="--", lw=1, label="RL (kept update)")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
        if with_truth:
            axes[0, -1].plot(g["n"], g[f"r̂: {truth}"], marker="o", ms=3, color=colour, label=name)
    axes[0, 0].set_ylabel("own r̂ over the greedy base")
    if with_truth:
        ax = axes[0, -1]
        if len(greedy):
            ax.axhline(float(greedy[f"r̂: {truth}"].iloc[0]), color="k", ls="--", lw=1, label="greedy base")
        ax.set_title(f"the picks under {truth}", fontsize=9)
        ax.set_ylabel("mean r̂")
        ax.legend(fontsize=6)
    bound = picks.groupby("n")["KL bound (nats)"].first()
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(bound.index, [f"{n}\n≤{kl:.2f}" for n, kl in bound.items()], fontsize=7)
        ax.set_xlabel("best-of-n (KL bound, nats)", fontsize=8)
    fig.tight_layout()
    return fig


def diversity_vs_kl(path: pd.DataFrame, threshold: float) -> plt.Figure:
    """07's diversity against distance (:func:`geli_lib.alignment.rl.curve.diversity_path`): the distinct-2 of each
    run's greedy responses to the curve contexts, as a share of the base's, against its KL to the reference, one
    colour per reward function (one line per seed). Evaluations whose responses collapsed are crosses; the dashed
    line is the distinct-2 share under which a model counts as collapsed (``threshold``: ``rl.COLLAPSE_DISTINCT2``)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, runs) in enumerate(path.groupby("reward_fn", sort=False)):
        for j, (_, run) in enumerate(runs.groupby("seed")):
            run = run.sort_values("step")
            ax.plot(run["KL (nats)"], run["distinct-2 / base"], color=f"C{i}", lw=1, alpha=0.8,
                    label=name if j == 0 else None)  # fmt: skip
            bad = run[run["collapsed"]]
            ax.scatter(bad["KL (nats)"], bad["distinct-2 / base"], color=f"C{i}", marker="x", s=30)
            ax.scatter(run.loc[~run["collapsed"], "KL (nats)"], run.loc[~run["collapsed"], "distinct-2 / base"],
                       color=f"C{i}", marker="o", s=10)  # fmt: skip
    ax.axhline(threshold, color="0.3", ls="--", lw=1)
    ax.annotate("collapsed below", (0.99, threshold), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                fontsize=7)  # fmt: skip
    ax.set_xlabel("KL to reference (nats / response)")
    ax.set_ylabel("distinct-2, share of the base's")
    ax.set_title("Do the replies stay varied as the policy moves? (× collapsed)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
