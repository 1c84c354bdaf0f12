"""What a reward function trains on: the LI labels (GELI eq. 7's Γ, sentiment) and TrainData."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from geli_lib.listener.features import turn_listener_summary, vader_compound
from geli_lib.reward.reward_model.encoder import RewardModelError, pair_texts

# --------------------------------------------------------------------------- LI labels


def visual_affect_labels(corpus: Any, pairs: pd.DataFrame, min_words: int = 5) -> np.ndarray:
    """Γ (GELI eq. 7) per pair, from :func:`geli_lib.listener.features.turn_listener_summary`.

    1 when the listener's most frequent arg-max face emotion in the turn window
    is happiness; 0 otherwise, and 0 for turns of ≤ ``min_words`` words or
    without frames (authors' conventions); NaN for turns without timing (no
    window at all: ESConv, SODA).
    """
    s = turn_listener_summary(corpus, min_words=min_words)[["convo_id", "turn_idx", "va_label"]]
    m = pairs[["convo_id", "turn_idx"]].merge(s, on=["convo_id", "turn_idx"], how="left")
    return m["va_label"].to_numpy(dtype=float)


def sentiment_labels(pairs: pd.DataFrame, threshold: float = 0.05) -> np.ndarray:
    """Γ_LS per pair: 1 when VADER's compound score of the AI utterance is ≥ ``threshold``, else 0."""
    return (vader_compound(pairs["response"].tolist()) >= threshold).astype(float)


# --------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """Whole conversations as padded tensors: what every method trains on.

    ``X`` (C, T_max, d) features, ``mask`` (C, T_max) bool, ``lengths`` (C,)
    AI turns, ``R`` (C,) session scores, ``truth`` (C, T_max) planted reward
    (NaN when absent), ``li`` name → (C, T_max) labels Γ (NaN = none),
    ``rows`` (C, T_max) the pair row of each turn (-1 = padding), ``texts``
    the encoder inputs of those rows (for the naive benchmark).
    """

    convo_ids: list[str]
    X: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    R: torch.Tensor
    truth: torch.Tensor
    li: dict[str, torch.Tensor]
    rows: torch.Tensor
    texts: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def d(self) -> int:
        return int(self.X.shape[-1])

    def __len__(self) -> int:
        return len(self.convo_ids)

    def subset(self, idx: torch.Tensor) -> "TrainData":
        """The conversations at positions ``idx`` (pair rows and texts keep their meaning)."""
        i = idx.tolist()
        return dataclasses.replace(
            self,
            convo_ids=[self.convo_ids[k] for k in i],
            X=self.X[idx],
            mask=self.mask[idx],
            lengths=self.lengths[idx],
            R=self.R[idx],
            truth=self.truth[idx],
            li={k: v[idx] for k, v in self.li.items()},
            rows=self.rows[idx],
        )


def make_train_data(
    corpus: Any,
    pairs: pd.DataFrame,
    features: np.ndarray,
    convo_ids: Sequence[str] | None = None,
    li_labels: Mapping[str, Any] | np.ndarray | None = None,
) -> TrainData:
    """Group the pairs of ``convo_ids`` (default: all) into padded conversation tensors.

    ``features`` are aligned with ``pairs`` rows (:func:`encode_pairs`).
    ``li_labels``: ``{"va": array, "ls": array}`` aligned with ``pairs`` (a bare
    array is taken as ``va``); ``va`` is computed from ``corpus`` and ``ls``
    from the utterances when not given. Conversations without an AI turn or
    without a score are left out and listed in ``skipped``.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(pairs):
        raise RewardModelError(f"features must be (len(pairs), d) = ({len(pairs)}, d), got {features.shape}")
    if li_labels is None:
        li_labels = {}
    elif not isinstance(li_labels, Mapping):
        li_labels = {"va": li_labels}
    labels = {k: np.asarray(v, dtype=float) for k, v in li_labels.items()}
    for k, v in labels.items():
        if v.shape != (len(pairs),):
            raise RewardModelError(f"li_labels[{k!r}] must have one value per pair ({len(pairs)}), got {v.shape}")
    if "va" not in labels and corpus is not None:
        labels["va"] = visual_affect_labels(corpus, pairs)
    if "ls" not in labels:
        labels["ls"] = sentiment_labels(pairs)

    p = pairs.reset_index(drop=True)
    wanted = (
        list(dict.fromkeys(map(str, convo_ids)))
        if convo_ids is not None
        else sorted(pd.unique(p["convo_id"].astype(str)))
    )
    groups = {str(c): g.sort_values("turn_idx").index.to_numpy() for c, g in p.groupby("convo_id", sort=False)}
    skipped: dict[str, list[str]] = {}
    keep: list[str] = []
    for c in wanted:
        rows = groups.get(c)
        if rows is None or len(rows) == 0:
            skipped.setdefault("no_ai_turn", []).append(c)
        elif not np.isfinite(p["score"].to_numpy(float)[rows[0]]):
            skipped.setdefault("no_score", []).append(c)
        else:
            keep.append(c)
    if skipped:
        print("make_train_data: left out " + ", ".join(f"{len(v)} ({k})" for k, v in skipped.items()), file=sys.stderr)
    if not keep:
        raise RewardModelError(
            f"no trainable conversation among {len(wanted)} (skipped: { {k: len(v) for k, v in skipped.items()} })"
        )
    lengths = np.array([len(groups[c]) for c in keep])
    C, T = len(keep), int(lengths.max())
    rows = np.full((C, T), -1, dtype=np.int64)
    for i, c in enumerate(keep):
        rows[i, : lengths[i]] = groups[c]
    mask = rows >= 0
    safe = np.where(mask, rows, 0)

    def padded(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.where(mask, v[safe], np.nan).astype(np.float32))

    X = np.where(mask[..., None], features[safe], 0.0).astype(np.float32)
    texts = list(zip(*pair_texts(p)))
    return TrainData(
        convo_ids=keep,
        X=torch.from_numpy(X),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
        R=torch.tensor(p["score"].to_numpy(float)[rows[:, 0]], dtype=torch.float32),
        truth=padded(p["true_reward"].to_numpy(float)) if "true_reward" in p else torch.full((C, T), float("nan")),
        li={k: padded(v) for k, v in labels.items()},
        rows=torch.from_numpy(rows),
        texts=texts,
        skipped=skipped,
    )
