"""The listener's per-second signals aggregated per AI turn (GELI §4.2 eq. 7; LLM-GELI §4.1).

:func:`turn_listener_summary` is the one place where frames meet turns: the
visual-affect label Γ (GELI eq. 7) and, later, the LLM-GELI multimodal
descriptors are both read off its columns. A later issue adds video feature
extraction to this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from geli_lib.schema import EMOTIONS, FACE_COLUMNS, PROSODY, Corpus

#: A nod (or any indicator column) counts as present in a second when its value is at least this.
INDICATOR_THRESHOLD = 0.5

SUMMARY_COLUMNS = (
    "convo_id", "turn_idx", "start", "stop", "n_words", "n_frames", "n_face_frames",
    *FACE_COLUMNS, "top_emotion", "happiness_mean", "smile_mean", "gaze_mean", "speaking_mean",
    "nod_yes_any", "va_label", "va_reason",
)


def _window_bounds(frame_convo: np.ndarray, frame_t: np.ndarray, turn_convo: np.ndarray,
                   start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global row range [a, b) of the frames with ``start <= t <= stop`` in each turn's conversation.

    ``frame_convo`` / ``turn_convo`` are integer conversation codes; frames must be
    sorted by (code, t). One ``np.searchsorted`` per conversation, no loop over frames.
    """
    a = np.zeros(len(start), dtype=np.int64)
    b = np.zeros(len(start), dtype=np.int64)
    if len(start) == 0:
        return a, b
    lo = np.searchsorted(frame_convo, turn_convo, side="left")
    hi = np.searchsorted(frame_convo, turn_convo, side="right")
    # turns arrive grouped by conversation: handle each group in one vectorised call
    cuts = np.flatnonzero(np.r_[True, turn_convo[1:] != turn_convo[:-1], True])
    for g0, g1 in zip(cuts[:-1], cuts[1:]):
        f0, f1 = lo[g0], hi[g0]
        ts = frame_t[f0:f1]
        a[g0:g1] = f0 + np.searchsorted(ts, start[g0:g1], side="left")
        b[g0:g1] = f0 + np.searchsorted(ts, stop[g0:g1], side="right")
    return a, b


def _range_sums(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of the non-NaN entries of ``values`` (n × k) over row ranges [a, b).

    Prefix sums make every window O(1), whatever its length.
    """
    v = np.ascontiguousarray(values.T)  # one contiguous row per column: a fast cumsum
    ok = ~np.isnan(v)
    cs = np.zeros((v.shape[0], v.shape[1] + 1))
    np.cumsum(np.where(ok, v, 0.0), axis=1, out=cs[:, 1:])
    cn = np.zeros((v.shape[0], v.shape[1] + 1), dtype=np.int64)
    np.cumsum(ok, axis=1, out=cn[:, 1:])
    return (cs[:, b] - cs[:, a]).T, (cn[:, b] - cn[:, a]).T


def turn_listener_summary(corpus: Corpus, min_words: int = 5) -> pd.DataFrame:
    """Aggregate the listener's frames inside each timed AI turn's window [start, stop].

    One row per AI turn with timing (turns without start/stop, e.g. ESConv and
    SODA, are left out). Columns:

    - ``n_frames``: the listener's frames with start <= t <= stop;
      ``n_face_frames``: those with a detected face (all ``prob_face_*`` present).
    - ``prob_face_<emotion>``: the window mean of each face probability;
      ``happiness_mean`` repeats ``prob_face_happiness`` under a short name.
    - ``top_emotion``: the most frequent per-frame arg-max emotion (the authors'
      convention, GELI eq. 7); ties go to the emotion listed first in
      :data:`~geli_lib.schema.EMOTIONS`; "" without face frames.
    - ``smile_mean``, ``gaze_mean`` (gaze_on), ``speaking_mean`` (is_speaking), and
      ``<prosody>_mean`` for each prosodic column present: window means (NaN
      when the window has no value).
    - ``nod_yes_any``: whether any frame has nod_yes >= 0.5 (nullable boolean;
      NA when the window has no nod_yes value, so absence is never read as "no").
    - ``va_label``: Γ (GELI eq. 7) = 1 when ``top_emotion`` is happiness, else 0.
      Authors' convention: turns of <= ``min_words`` words and turns without
      frames get 0. ``va_reason`` says why a 0 was forced: ``"short"``,
      ``"no_frames"`` (no frame in the window) or ``"no_face"`` (frames but no
      face detected); "" when Γ comes from the face.
    """
    conv = corpus.conversations
    turns = corpus.turns
    turns = turns[turns["is_ai"] & turns["start"].notna() & turns["stop"].notna()]
    turns = turns.sort_values(["convo_id", "turn_idx"], kind="stable").reset_index(drop=True)
    frames = corpus.frames
    # only the listener's frames (the loader keeps only those; this makes it a contract)
    listener = conv.set_index("convo_id")["listener_id"]
    frames = frames[frames["user_id"].to_numpy() == listener.reindex(frames["convo_id"]).to_numpy()]
    codes = pd.Index(sorted(conv["convo_id"]))
    f_code = codes.get_indexer(frames["convo_id"]).astype(np.int64)
    order = np.lexsort((frames["t"].to_numpy(), f_code))
    if not (np.diff(order) > 0).all():  # the loader's frames are already sorted: skip the copy
        frames = frames.iloc[order]
        f_code = f_code[order]
    t_code = codes.get_indexer(turns["convo_id"]).astype(np.int64)

    a, b = _window_bounds(f_code, frames["t"].to_numpy(dtype=float), t_code,
                          turns["start"].to_numpy(dtype=float), turns["stop"].to_numpy(dtype=float))
    n_frames = b - a

    face = frames[list(FACE_COLUMNS)].to_numpy(dtype=float)
    has_face = ~np.isnan(face).any(axis=1)
    onehot = np.zeros_like(face)
    if len(face):
        top = np.argmax(np.where(np.isnan(face), -np.inf, face), axis=1)
        onehot[np.arange(len(face)), top] = 1.0
    onehot[~has_face] = 0.0
    votes, _ = _range_sums(onehot, a, b)
    n_face = votes.sum(axis=1).round().astype(np.int64)
    top_emotion = np.where(n_face > 0, np.asarray(EMOTIONS, dtype=object)[np.argmax(votes, axis=1)], "")

    face_masked = np.where(has_face[:, None], face, np.nan)
    extra = [c for c in ("smile", "gaze_on", "is_speaking", *PROSODY) if c in frames]
    values = np.hstack([face_masked, frames[extra].to_numpy(dtype=float)])
    sums, counts = _range_sums(values, a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    nod = frames["nod_yes"].to_numpy(dtype=float)[:, None] if "nod_yes" in frames else \
        np.full((len(frames), 1), np.nan)
    nod_hits, nod_n = _range_sums(np.where(np.isnan(nod), np.nan, (nod >= INDICATOR_THRESHOLD) * 1.0), a, b)
    nod_any = pd.array(np.where(nod_n[:, 0] > 0, nod_hits[:, 0] > 0, False), dtype="boolean")
    nod_any[nod_n[:, 0] == 0] = pd.NA

    n_words = turns["n_words"].to_numpy(dtype=np.int64)
    reason = np.where(n_words <= min_words, "short",
                      np.where(n_frames == 0, "no_frames", np.where(n_face == 0, "no_face", "")))
    va = ((reason == "") & (top_emotion == "happiness")).astype(np.int64)

    out = pd.DataFrame({
        "convo_id": turns["convo_id"].to_numpy(), "turn_idx": turns["turn_idx"].to_numpy(),
        "start": turns["start"].to_numpy(), "stop": turns["stop"].to_numpy(), "n_words": n_words,
        "n_frames": n_frames, "n_face_frames": n_face})
    for j, col in enumerate(FACE_COLUMNS):
        out[col] = means[:, j]
    out["top_emotion"] = top_emotion.astype(object)
    out["happiness_mean"] = out["prob_face_happiness"]
    named = {"smile": "smile_mean", "gaze_on": "gaze_mean", "is_speaking": "speaking_mean"}
    for j, col in enumerate(extra):
        out[named.get(col, f"{col}_mean")] = means[:, len(FACE_COLUMNS) + j]
    for col in ("smile_mean", "gaze_mean", "speaking_mean"):
        if col not in out:
            out[col] = np.nan
    out["nod_yes_any"] = nod_any
    out["va_label"] = va
    out["va_reason"] = reason.astype(object)
    first = list(SUMMARY_COLUMNS)
    return out[first + [c for c in out.columns if c not in first]]
