"""How good a decomposition is: agreement with the planted truth, classes, consistency between runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from geli_lib.corpus.schema import Corpus
from geli_lib.reward.evaluation import pearson, spearman, truth_column, within_spearman
from geli_lib.reward.llm.decomposition import Decomposition

#: The classes of App. J.
CLASSES = ("positive", "zero_or_negative", "no_annotation")


# --------------------------------------------------------------------------- quality and consistency


def quality(labels: pd.DataFrame, corpus: Corpus, reference: pd.DataFrame | None = None) -> dict[str, float]:
    """How a decomposition compares with the turn truth (planted reward, or ESConv's local feedback).

    Pooled Pearson / Spearman over the turns with a label (those of parsed
    chunks, left-out turns at 0) and the mean within-conversation Spearman
    (:func:`geli_lib.reward.evaluation.within_spearman`), plus coverage (turns with a
    label) and the annotated fraction. With ``reference`` (another
    decomposition's labels, e.g. the reference decomposer's), the same two
    Spearmans against it: ``ref_spearman``, ``ref_spearman_within``.
    """
    t = corpus.turns[["convo_id", "turn_idx", "true_reward", "local_feedback"]].astype({"convo_id": str})
    m = labels.astype({"convo_id": str}).merge(t, on=["convo_id", "turn_idx"], how="left")
    out: dict[str, float] = {
        "turns": float(len(m)),
        "coverage": float(m["label"].notna().mean()) if len(m) else math.nan,
        "annotated": float(m["annotated"].mean()) if len(m) and "annotated" in m else math.nan,
    }
    ok = m["label"].notna().to_numpy()
    if reference is not None:
        r = reference[["convo_id", "turn_idx", "label"]].astype({"convo_id": str}).rename(columns={"label": "ref"})
        mr = m[["convo_id", "turn_idx", "label"]].merge(r, on=["convo_id", "turn_idx"], how="left")
        both = (mr["label"].notna() & mr["ref"].notna()).to_numpy()
        p, y = mr["label"].to_numpy(float)[both], mr["ref"].to_numpy(float)[both]
        out["ref_spearman"] = spearman(p, y) if both.any() else math.nan
        out["ref_spearman_within"] = (
            within_spearman(p, y, mr["convo_id"].to_numpy()[both])["gt_spearman_within"] if both.any() else math.nan
        )
    col = truth_column(m)
    if col is None or not ok.any():
        return {**out, "gt_pearson": math.nan, "gt_spearman": math.nan, "gt_spearman_within": math.nan}
    p, y = m["label"].to_numpy(float)[ok], m[col].to_numpy(float)[ok]
    fin = np.isfinite(y)
    w = within_spearman(p, y, m["convo_id"].to_numpy()[ok])
    return {
        **out,
        "gt_pearson": pearson(p[fin], y[fin]),
        "gt_spearman": spearman(p[fin], y[fin]),
        "gt_spearman_within": w["gt_spearman_within"],
    }


def label_classes(labels: pd.Series, annotated: pd.Series | None = None) -> pd.Series:
    """App. J classes: no_annotation (not ``annotated``, or a NaN label), else positive (> 0) or
    zero_or_negative (≤ 0). Without ``annotated``, a NaN label alone marks no annotation."""
    v = labels.to_numpy(float)
    none = np.isnan(v) if annotated is None else ~annotated.to_numpy(bool) | np.isnan(v)
    return pd.Series(np.where(none, CLASSES[2], np.where(v > 0, CLASSES[0], CLASSES[1])), index=labels.index)


def consistency(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per conversation, the share of AI turns whose App. J class agrees between two samples.

    The class comes from what the LLM annotated (the ``annotated`` column,
    when present), so a left-out turn (label 0) is "no annotation", not
    "zero or negative".
    """
    cols = ["convo_id", "turn_idx", "label"] + (["annotated"] if "annotated" in a and "annotated" in b else [])
    m = a[cols].merge(b[cols], on=["convo_id", "turn_idx"], suffixes=("_a", "_b"))
    ann = "annotated" in cols
    m["agree"] = (
        label_classes(m["label_a"], m["annotated_a"] if ann else None).to_numpy()
        == label_classes(m["label_b"], m["annotated_b"] if ann else None).to_numpy()
    )
    return m.groupby("convo_id", sort=True).agg(turns=("agree", "size"), agreement=("agree", "mean")).reset_index()


def decomposition_table(
    decs: dict[str, Decomposition], corpus: Corpus, reference: Decomposition | None = None
) -> pd.DataFrame:
    """One row per named decomposition: :meth:`Decomposition.summary` and :func:`quality` (against
    ``reference``'s labels too, when given)."""
    ref = reference.labels if reference is not None else None
    rows = [{"decomposition": name, **d.summary(), **quality(d.labels, corpus, ref)} for name, d in decs.items()]
    return pd.DataFrame(rows)
