"""The seeded split of conversations and the (history, response) pairs in the authors' format."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from geli_lib.core.params import DataParams, SplitParams
from geli_lib.corpus.schema import Corpus

SPLITS: tuple[str, ...] = ("reward_train", "reward_test", "rl")


# --------------------------------------------------------------------------- splits and pairs


def split_sizes(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Counts per split for ``n`` conversations.

    Largest-remainder rounding of ``fraction × n`` (ties go to the earlier
    split), then every split with a non-zero fraction gets at least one
    conversation when ``n`` allows it, taken from the currently largest split.
    """
    raw = [round(f * n, 9) for f in fractions]  # so float noise never decides a tie
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    need = [k for k, f in enumerate(fractions) if f > 0]
    if n >= len(need):
        for k in need:
            if counts[k] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[k] += 1
    return counts


def split_conversations(conversations: pd.DataFrame, params: SplitParams) -> pd.Series:
    """convo_id -> ``reward_train`` | ``reward_test`` | ``rl``, reproducibly.

    The ids are sorted (the authors took an unsorted directory listing, which
    is not reproducible), permuted with ``numpy.random.default_rng(params.seed)``
    and cut in the order reward_train, reward_test, rl with the counts of
    :func:`split_sizes`. Returns a Series indexed by sorted convo_id.
    """
    ids = np.array(sorted(pd.unique(conversations["convo_id"].astype(str))), dtype=object)
    counts = split_sizes(len(ids), (params.reward_train, params.reward_test, params.rl))
    labels = np.repeat(np.array(SPLITS, dtype=object), counts)
    perm = np.random.default_rng(params.seed).permutation(len(ids))
    out = np.empty(len(ids), dtype=object)
    out[perm] = labels
    return pd.Series(out, index=pd.Index(ids, name="convo_id"), name="split")


def build_pairs(corpus: Corpus, params: DataParams, convo_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per AI turn: the reward model's input (s_t, a_t) and its targets.

    ``history`` is the authors' context format: the last ``params.history_turns``
    turns before the AI turn (both roles), each as ``" User: <text>"`` or
    ``" AI: <text>"``, concatenated (so it starts with a space), then cut from
    the left to ``params.history_chars`` characters, keeping the most recent
    text. The first turn of a conversation has an empty history. ``response``
    is the AI utterance. ``true_reward`` (simulated), ``local_feedback``
    (ESConv) and the session ``score`` come along. Columns: convo_id, turn_idx,
    history, response, true_reward, local_feedback, score.
    """
    t = corpus.turns
    if convo_ids is not None:
        t = t[t["convo_id"].isin(set(map(str, convo_ids)))]
    t = t.sort_values(["convo_id", "turn_idx"], kind="stable")
    conv = t["convo_id"].to_numpy()
    is_ai = t["is_ai"].to_numpy(dtype=bool)
    utt = t["utterance"].to_numpy(dtype=object)
    pieces = [(" AI: " if a else " User: ") + u for a, u in zip(is_ai, utt)]
    n = len(conv)
    first = np.r_[True, conv[1:] != conv[:-1]] if n else np.zeros(0, bool)
    conv_start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, int)
    rows = np.flatnonzero(is_ai)
    lo = np.maximum(conv_start[rows], rows - params.history_turns)
    cap = params.history_chars
    history = ["".join(pieces[a:b])[-cap:] for a, b in zip(lo, rows)]
    score = corpus.conversations.set_index("convo_id")["score"]
    out = pd.DataFrame(
        {
            "convo_id": conv[rows],
            "turn_idx": t["turn_idx"].to_numpy()[rows],
            "history": history,
            "response": utt[rows],
            "true_reward": t["true_reward"].to_numpy(dtype=float)[rows],
            "local_feedback": t["local_feedback"].to_numpy(dtype=float)[rows],
        }
    )
    out["score"] = score.reindex(out["convo_id"]).to_numpy(dtype=float)
    return out
