"""The listener's signals: from recordings to per-second features to per-turn labels and words.

Three steps (LLM-GELI §5.1 "Multimodal Features" and "Language Descriptors";
GELI §4.2 eq. 7):

1. :func:`extract_listener_features` turns one listener's video (and optional
   audio, else the video's own track) into per-second rows in CANDOR's
   ``audio_video_features.csv`` schema: face, smile, gaze, emotion and nods
   from :mod:`geli_lib.listener.face`, f0 / intensity / jitter / log energy from
   :mod:`geli_lib.listener.prosody`. ``python -m geli_lib.listener.features RECORDINGS_DIR
   OUT_DIR`` does it for a folder of recordings (:func:`main`).
2. :func:`turn_listener_summary` is the one place where frames meet turns:
   the visual-affect label Γ (GELI eq. 7, per frame and over 2-second sliding
   windows) and the window means are read off its columns.
3. :func:`describe_listener` writes those columns as LLM-GELI's
   natural-language descriptors, used in the multimodal LLM prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from distributed import as_completed
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from geli_lib.core.compute import dashboard_link, dask_client, start_progress_bar
from geli_lib.core.io import content_key, file_key, progress_bar, progress_enabled, write_csv, write_json
from geli_lib.core.params import FeatureParams, to_dict
from geli_lib.corpus.schema import EMOTIONS, FACE_COLUMNS, PROSODY, Corpus
from geli_lib.listener.face import CONTEMPT_NOTE, analyse_video, visual_per_second
from geli_lib.listener.prosody import AudioError, prosody_per_second, read_sound

#: A nod (or any indicator column) counts as present in a second when its value is at least this.
INDICATOR_THRESHOLD = 0.5
#: Length (s) of the trailing sliding window over which face probabilities are smoothed
#: before the 2-second visual-affect label (GELI §5.2: "2 second sliding windows").
SLIDING_WINDOW_S = 2.0

SUMMARY_COLUMNS = (
    "convo_id",
    "turn_idx",
    "start",
    "stop",
    "n_words",
    "n_frames",
    "n_face_frames",
    *FACE_COLUMNS,
    "top_emotion",
    "happiness_mean",
    "smile_mean",
    "gaze_mean",
    "speaking_mean",
    "nod_yes_any",
    "va_label",
    "va_reason",
)


def _window_bounds(
    frame_convo: np.ndarray, frame_t: np.ndarray, turn_convo: np.ndarray, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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


def _window_sums(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column sums of NaN-free ``values`` (n × k) over row ranges [a, b) (prefix sums: O(1) per window)."""
    v = np.ascontiguousarray(values.T, dtype=float)  # one contiguous row per column: a fast cumsum
    cs = np.zeros((v.shape[0], v.shape[1] + 1))
    np.cumsum(v, axis=1, out=cs[:, 1:])
    return (cs[:, b] - cs[:, a]).T


def _range_sums(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of the non-NaN entries of ``values`` (n × k) over row ranges [a, b)."""
    ok = ~np.isnan(values)
    return _window_sums(np.where(ok, values, 0.0), a, b), _window_sums(ok, a, b).round().astype(np.int64)


def _mode_emotion(probs: np.ndarray, valid: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent per-row arg-max emotion over row ranges [a, b) and the number of voting rows.

    Only ``valid`` rows vote; ties go to the emotion listed first in EMOTIONS; "" without votes.
    """
    onehot = np.zeros_like(probs)
    if len(probs):
        top = np.argmax(np.where(np.isnan(probs), -np.inf, probs), axis=1)
        onehot[np.arange(len(probs)), top] = 1.0
    onehot[~valid] = 0.0
    votes = _window_sums(onehot, a, b)
    n = votes.sum(axis=1).round().astype(np.int64)
    return np.where(n > 0, np.asarray(EMOTIONS, dtype=object)[np.argmax(votes, axis=1)], ""), n


def _top_emotion_2s(
    face: np.ndarray, has_face: np.ndarray, f_code: np.ndarray, t: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """The turn's most frequent arg-max of face probabilities smoothed over 2-second sliding windows.

    GELI §5.2 (LI: Visual Affect): "predictions are captured in 2 second sliding
    windows". Each frame's probabilities are replaced by the mean over the
    listener's face frames with ``t - SLIDING_WINDOW_S < t' <= t`` (a trailing
    window, so a frame never looks ahead); the turn label is then the mode of
    the smoothed arg-max, as in eq. 7.
    """
    lo, hi = _window_bounds(f_code, t, f_code, np.nextafter(t - SLIDING_WINDOW_S, np.inf), t)
    sums = _window_sums(np.column_stack([np.where(has_face[:, None], face, 0.0), has_face]), lo, hi)
    counts = sums[:, -1]
    ok = counts > 0.5
    smooth = sums[:, :-1] / np.maximum(counts, 1.0)[:, None]  # arg-max only: no need to NaN the rest
    return _mode_emotion(smooth, ok, a, b)[0]


def _indicator_any(frames: pd.DataFrame, col: str, a: np.ndarray, b: np.ndarray) -> pd.arrays.BooleanArray:
    """Whether any frame in [a, b) has ``col`` >= INDICATOR_THRESHOLD; NA when the window has no value."""
    v = frames[col].to_numpy(dtype=float)[:, None] if col in frames else np.full((len(frames), 1), np.nan)
    hits, n = _range_sums(np.where(np.isnan(v), np.nan, (v >= INDICATOR_THRESHOLD) * 1.0), a, b)
    out = pd.array(hits[:, 0] > 0, dtype="boolean")
    out[n[:, 0] == 0] = pd.NA
    return out


def _window_slopes(frames: pd.DataFrame, col: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``col`` against ``t`` (units per second) over each window [a, b).

    NaN when the column is absent or the window has fewer than two values.
    Prefix sums of t, y, t·y and t² keep it O(1) per window.
    """
    if col not in frames:
        return np.full(len(a), np.nan)
    y = frames[col].to_numpy(dtype=float)
    t = frames["t"].to_numpy(dtype=float)
    t = np.where(np.isnan(y), np.nan, t)
    sums, counts = _range_sums(np.column_stack([t, y, t * y, t * t]), a, b)
    n = counts[:, 1].astype(float)
    st, sy, sty, stt = sums.T
    den = n * stt - st * st
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n >= 2) & (den > 1e-9), (n * sty - st * sy) / den, np.nan)


def vader_compound(texts: Sequence[str]) -> np.ndarray:
    """VADER's compound sentiment in [-1, 1] per text (offline lexicon): the language-sentiment signal.

    One function behind Γ_LS (GELI's LS baseline), the reference decomposer
    without video, and the positivity of generated responses.
    """
    sia = SentimentIntensityAnalyzer()
    return np.array([sia.polarity_scores(str(t))["compound"] for t in texts], dtype=float)


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
      :data:`~geli_lib.corpus.schema.EMOTIONS`; "" without face frames.
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
    - ``nod_no_any``: as ``nod_yes_any`` for head shakes (``nod_no``).
    - ``f0_slope``: least-squares slope of ``f0_mean`` over the window (Hz/s;
      NaN with fewer than two pitch values): "pitch rising/falling".
    - ``top_emotion_2s`` / ``va_label_2s``: the same label read from face
      probabilities smoothed over 2-second sliding windows (GELI §5.2), with
      the same forced zeros.
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

    a, b = _window_bounds(
        f_code,
        frames["t"].to_numpy(dtype=float),
        t_code,
        turns["start"].to_numpy(dtype=float),
        turns["stop"].to_numpy(dtype=float),
    )
    n_frames = b - a

    face = frames[list(FACE_COLUMNS)].to_numpy(dtype=float)
    has_face = ~np.isnan(face).any(axis=1)
    top_emotion, n_face = _mode_emotion(face, has_face, a, b)

    face_masked = np.where(has_face[:, None], face, np.nan)
    extra = [c for c in ("smile", "gaze_on", "is_speaking", *PROSODY) if c in frames]
    values = np.hstack([face_masked, frames[extra].to_numpy(dtype=float)])
    sums, counts = _range_sums(values, a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    nod_any = {col: _indicator_any(frames, col, a, b) for col in ("nod_yes", "nod_no")}
    f0_slope = _window_slopes(frames, "f0_mean", a, b)
    top_2s = _top_emotion_2s(face, has_face, f_code, frames["t"].to_numpy(dtype=float), a, b)

    n_words = turns["n_words"].to_numpy(dtype=np.int64)
    reason = np.where(
        n_words <= min_words, "short", np.where(n_frames == 0, "no_frames", np.where(n_face == 0, "no_face", ""))
    )
    va = ((reason == "") & (top_emotion == "happiness")).astype(np.int64)
    va_2s = ((reason == "") & (top_2s == "happiness")).astype(np.int64)

    out = pd.DataFrame(
        {
            "convo_id": turns["convo_id"].to_numpy(),
            "turn_idx": turns["turn_idx"].to_numpy(),
            "start": turns["start"].to_numpy(),
            "stop": turns["stop"].to_numpy(),
            "n_words": n_words,
            "n_frames": n_frames,
            "n_face_frames": n_face,
        }
    )
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
    out["nod_yes_any"] = nod_any["nod_yes"]
    out["va_label"] = va
    out["va_reason"] = reason.astype(object)
    out["nod_no_any"] = nod_any["nod_no"]
    out["f0_slope"] = f0_slope
    out["top_emotion_2s"] = top_2s.astype(object)
    out["va_label_2s"] = va_2s
    first = list(SUMMARY_COLUMNS)
    return out[first + [c for c in out.columns if c not in first]]


# --------------------------------------------------------------------------- language descriptors

#: Adjectives for the descriptor text, one per AffectNet emotion.
EMOTION_ADJECTIVES: dict[str, str] = {
    "anger": "angry",
    "contempt": "contemptuous",
    "disgust": "disgusted",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprised",
}
#: smile_mean (share of seconds smiling) at or above which the listener "smiled".
SMILED = 0.5
#: smile_mean at or above which (and below SMILED) the listener "smiled briefly".
SMILED_BRIEFLY = 0.15
#: Share of seconds looking away below which the descriptor says "kept looking at the screen".
LOOKED_AWAY_MIN = 0.05
#: Relative pitch change over the window (f0_slope × duration / mean f0) that counts as
#: "pitch rising" (or, negated, "pitch falling").
PITCH_TREND = 0.05
NO_VIDEO = "no listener video in this window"
NO_FACE = "listener's face not visible in this window"


def _describe_row(r: dict) -> str:
    """One descriptor string from one row of :func:`turn_listener_summary` (as a dict)."""
    parts: list[str] = []
    if not r.get("n_frames", 0):
        return NO_VIDEO
    smile = r.get("smile_mean", np.nan)
    if pd.notna(smile):
        parts.append(
            "listener smiled"
            if smile >= SMILED
            else "listener smiled briefly"
            if smile >= SMILED_BRIEFLY
            else "listener did not smile"
        )
    if r.get("n_face_frames", 0) and r.get("top_emotion"):
        emo = r["top_emotion"]
        parts.append(f"mostly {EMOTION_ADJECTIVES[emo]} ({r[f'prob_face_{emo}']:.2f})")
    elif not r.get("n_face_frames", 0):
        parts.append("face not visible")
    yes, no = r.get("nod_yes_any", pd.NA), r.get("nod_no_any", pd.NA)
    nods = [word for word, v in (("nodded", yes), ("shook head", no)) if pd.notna(v) and bool(v)]
    if nods:
        parts += nods
    elif pd.notna(yes) or pd.notna(no):
        parts.append("no head nods")
    gaze = r.get("gaze_mean", np.nan)
    if pd.notna(gaze):
        away = 1.0 - gaze
        parts.append(f"looked away {away:.0%} of the time" if away >= LOOKED_AWAY_MIN else "kept looking at the screen")
    slope, f0 = r.get("f0_slope", np.nan), r.get("f0_mean_mean", np.nan)
    duration = r.get("stop", np.nan) - r.get("start", np.nan)
    if pd.notna(slope) and pd.notna(f0) and f0 > 0 and pd.notna(duration):
        change = slope * max(duration, 1.0) / f0
        parts.append(
            "pitch rising" if change >= PITCH_TREND else "pitch falling" if change <= -PITCH_TREND else "pitch steady"
        )
    if not parts:
        return NO_FACE
    if parts[0] == "face not visible":
        parts[0] = NO_FACE
    elif not parts[0].startswith("listener"):
        parts[0] = "listener " + parts[0]
    return ", ".join(parts)


def describe_listener(summary: pd.DataFrame) -> pd.Series:
    """LLM-GELI's natural-language descriptor of the listener's reaction, one per summary row.

    ``summary`` is the output of :func:`turn_listener_summary` (the index is
    kept). LLM-GELI §5.1 "Language Descriptors": the per-second features are
    averaged over the utterance and turned into words that are appended to the
    utterance in the decomposition prompt, e.g. ``"listener smiled, mostly
    happy (0.62), nodded, looked away 40% of the time, pitch rising"``. Parts:

    - smile: ``smile_mean`` ≥ :data:`SMILED` "smiled", ≥ :data:`SMILED_BRIEFLY`
      "smiled briefly", else "did not smile";
    - facial emotion: "mostly <adjective> (<mean probability>)" of ``top_emotion``;
    - nods: "nodded" / "shook head" / "no head nods" from ``nod_yes_any`` and
      ``nod_no_any`` (left out when both are NA);
    - gaze: "looked away X% of the time" (1 − ``gaze_mean``), or "kept looking
      at the screen" below :data:`LOOKED_AWAY_MIN`;
    - pitch: "rising" / "falling" / "steady" from ``f0_slope`` × duration
      relative to ``f0_mean_mean`` (threshold :data:`PITCH_TREND`).

    Missing signals are left out, never guessed. A window without frames reads
    :data:`NO_VIDEO`; one with frames but no face and no other signal reads
    :data:`NO_FACE`.
    """
    return pd.Series(
        [_describe_row(r) for r in summary.to_dict("records")], index=summary.index, name="descriptor", dtype=object
    )


# --------------------------------------------------------------------------- recordings -> per-second rows

#: Bump when extraction changes what it writes: it is part of each output's resume key.
FEATURES_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".aiff", ".aif")
#: Video and audio lengths may differ by this much (s) before the report warns (containers pad a little).
LENGTH_TOLERANCE_S = 0.5
#: Columns of one listener's output CSV, in order: CANDOR's ``audio_video_features.csv`` schema.
OUTPUT_COLUMNS = (
    "user_id",
    "timedelta",
    "is_speaking",
    "gaze_on",
    "smile",
    "nod_yes",
    "nod_no",
    *FACE_COLUMNS,
    *PROSODY,
)


def _seconds_to_timedelta(n: int) -> list[str]:
    """CANDOR's ``timedelta`` strings ("0 days 00:00:07") for seconds 0..n-1."""
    return [str(pd.Timedelta(seconds=int(s))) for s in range(n)]


def extract_listener_features(
    video: str | Path, audio: str | Path | None = None, user_id: str = "listener", params: FeatureParams | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One listener's recording -> per-second rows (:data:`OUTPUT_COLUMNS`) and a report.

    ``audio``: a wav/flac/mp3 file; ``None`` reads the video's own audio track
    (via PyAV). Rows cover ``max(video, audio)`` whole seconds; a second
    without a face frame has NaN visual columns, a second without audio NaN
    prosody (and NaN ``is_speaking``, which is the share of voiced pitch
    frames). Nothing is guessed, everything missing is counted in the
    report: ``seconds``, ``video_seconds``, ``audio_seconds``,
    ``seconds_without_face``, ``seconds_without_audio``, ``frames_read`` /
    ``frames_expected`` / ``truncated``, ``face_samples``, ``audio_source``,
    ``contempt`` (absent from FER2013) and ``warnings`` (no face at all,
    truncated video, missing audio, lengths differing by more than
    :data:`LENGTH_TOLERANCE_S`).

    Raises :class:`geli_lib.listener.face.VideoError` for a missing, unreadable or
    frameless video and :class:`geli_lib.listener.prosody.AudioError` for an
    unreadable audio *file* (a video without an audio track is a warning).
    """
    params = params or FeatureParams()
    t0 = time.perf_counter()
    samples, info = analyse_video(video, params.sample_fps, params.detect_width)
    warnings: list[str] = []
    sound, audio_source = None, "file" if audio is not None else "video track"
    if audio is not None:
        sound = read_sound(audio)
    else:
        try:
            sound = read_sound(video)
        except AudioError as e:
            audio_source = f"missing: {e}"
            warnings.append(f"no audio: {e}")
    video_s = info["duration"]
    audio_s = float(sound.get_total_duration()) if sound is not None else 0.0
    n = int(np.ceil(max(video_s, audio_s) - 1e-9))
    visual = visual_per_second(samples, n, params.nod_window)
    prosody = (
        prosody_per_second(sound, n)
        if sound is not None
        else pd.DataFrame(np.nan, index=range(n), columns=[*PROSODY, "voiced"])
    )
    out = pd.DataFrame(
        {"user_id": str(user_id), "timedelta": _seconds_to_timedelta(n), "is_speaking": prosody["voiced"].to_numpy()}
    )
    out = pd.concat([out, visual.reset_index(drop=True), prosody[list(PROSODY)].reset_index(drop=True)], axis=1)
    no_face = int(out["prob_face_happiness"].isna().sum())
    no_audio = int(out["log_energy"].isna().sum())
    if info["face_samples"] == 0:
        warnings.append(f"no face found in any of {info['samples']} sampled frames")
    if info["truncated"]:
        warnings.append(f"truncated video: {info['frames_read']} of {info['frames_expected']} frames decoded")
    if sound is not None and abs(video_s - audio_s) > LENGTH_TOLERANCE_S:
        warnings.append(
            f"video ({video_s:.1f} s) and audio ({audio_s:.1f} s) differ in length; "
            "the shorter one's missing seconds are NaN"
        )
    report = {
        "video": str(video),
        "audio": str(audio) if audio is not None else None,
        "audio_source": audio_source,
        "user_id": str(user_id),
        "seconds": n,
        "video_seconds": round(video_s, 3),
        "audio_seconds": round(audio_s, 3),
        "seconds_without_face": no_face,
        "seconds_without_audio": no_audio,
        **{k: info[k] for k in ("fps", "frames_expected", "frames_read", "truncated", "samples", "face_samples")},
        "sample_fps": params.sample_fps,
        "contempt": CONTEMPT_NOTE,
        "warnings": warnings,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    return out[list(OUTPUT_COLUMNS)], report


def find_recordings(root: str | Path) -> list[tuple[Path, Path | None]]:
    """(video, audio or None) pairs under ``root``: every video file, with a same-stem audio file if any."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: recordings folder not found")
    pairs = []
    for v in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
        audio = next((v.with_suffix(s) for s in AUDIO_SUFFIXES if v.with_suffix(s).is_file()), None)
        pairs.append((v, audio))
    return pairs


def recording_key(video: Path, audio: Path | None, params: FeatureParams) -> str:
    """Resume key of one output: the input bytes, the extraction parameters and FEATURES_VERSION."""
    settings = {k: v for k, v in to_dict(params).items() if k != "workers"}  # workers do not change output
    return content_key(FEATURES_VERSION, file_key([video]), file_key([audio]) if audio else None, settings)


def extract_recording(
    video: str, audio: str | None, params: FeatureParams, done_key: str | None
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """One recording's rows and report, computed where the task runs (this process or a Dask worker).

    Nothing is written here: the caller writes, so a worker that dies mid-task
    leaves no file behind, and workers need to read the recordings only. The
    resume key is computed here, beside the inputs (it reads their bytes, which
    parallelises with the work); when it equals ``done_key``, the key of the
    finished outputs, the status is ``skipped`` and no rows come back. Any
    exception comes back as a ``failed`` report: one bad file never stops the run.
    """
    torch.set_num_threads(1)  # one core per task: the tasks are the parallelism
    cv2.setNumThreads(1)
    try:
        v, a = Path(video), Path(audio) if audio else None
        key = recording_key(v, a, params)
        if key == done_key:
            return None, {"video": video, "key": key, "status": "skipped"}
        rows, report = extract_listener_features(v, a, user_id=v.stem, params=params)
        return rows, {**report, "key": key, "status": "done"}
    except Exception as e:  # noqa: BLE001 - reported per file; the other files go on
        return None, {"video": video, "status": "failed", "error": f"{type(e).__name__}: {e}"}


def finished_report(out_csv: Path) -> dict[str, Any]:
    """The JSON report of a finished output (CSV and report both present), or {} when there is none to trust."""
    report_path = out_csv.with_suffix(".json")
    if not (out_csv.is_file() and report_path.is_file()):
        return {}
    try:
        return json.loads(report_path.read_text())
    except (OSError, ValueError):
        return {}


def write_recording(
    out_csv: Path, rows: pd.DataFrame | None, report: dict[str, Any], old: dict[str, Any]
) -> dict[str, Any]:
    """Write one task's result from the client; returns the report for the run summary.

    ``done``: the CSV, then the ``.json`` report (written last: its key marks the
    CSV as finished), both atomically, so an interrupted run never leaves a half
    file that a rerun would trust. ``skipped``: the finished report ``old``.
    ``failed``: nothing is written.
    """
    if report["status"] == "skipped":
        return {**old, "status": "skipped"}
    if report["status"] == "done":
        write_csv(out_csv, rows, float_format="%.6g")
        write_json(out_csv.with_suffix(".json"), {k: v for k, v in report.items() if k != "status"})
    return report


#: One recording to extract: (video, audio or None, output CSV), paths as strings (they travel to workers).
Task = tuple[str, str | None, str]


def shared_outputs(tasks: list[Task]) -> dict[str, list[str]]:
    """Output CSVs that more than one (video, audio, output) task would write -> those videos.

    ``p1.mp4`` and ``p1.mkv`` in one folder are both participant ``p1``: which one is
    meant cannot be guessed, and extracting both would count two files done for one CSV.
    """
    by_output: dict[str, list[str]] = {}
    for video, _, out_csv in tasks:
        by_output.setdefault(out_csv, []).append(video)
    return {out: videos for out, videos in by_output.items() if len(videos) > 1}


def assemble_conversation(folder: Path) -> Path | None:
    """Concatenate the per-listener CSVs of one conversation folder into ``audio_video_features.csv``.

    CANDOR keeps every participant of a conversation in one file (rows keyed
    by ``user_id``); the loader then keeps the listener's rows.
    """
    parts = sorted(
        p for p in folder.glob("*.csv") if p.name != "audio_video_features.csv" and p.with_suffix(".json").is_file()
    )
    if not parts:
        return None
    out = folder / "audio_video_features.csv"
    write_csv(out, pd.concat([pd.read_csv(p) for p in parts], ignore_index=True))
    return out


def _run_serially(
    tasks: list[Task], params: FeatureParams, old: dict[str, dict[str, Any]], progress: bool
) -> list[dict[str, Any]]:
    """Every task in this process, one after another: the reference path (``--workers 1``)."""
    results = []
    with progress_bar(len(tasks), "listener features", progress, unit="video") as bar:
        for video, audio, out_csv in tasks:
            rows, report = extract_recording(video, audio, params, old[out_csv].get("key"))
            results.append(write_recording(Path(out_csv), rows, report, old[out_csv]))
            bar.update(1)
    return results


def _run_on_dask(
    tasks: list[Task], params: FeatureParams, old: dict[str, dict[str, Any]], progress: bool, scheduler: str | None
) -> list[dict[str, Any]]:
    """Every task as a Dask task, on ``scheduler`` or a local cluster of ``params.workers`` processes.

    Results are written by this process as they arrive, so a run stopped
    half-way keeps every recording that finished. A recording whose worker
    died is run again by Dask on another worker; one that killed
    ``distributed.scheduler.allowed-failures`` workers is reported as failed.
    """
    results = []
    watched = progress_enabled(progress)
    with dask_client(scheduler, params.workers, option="--scheduler", dashboard=watched) as client:
        futures = {
            client.submit(extract_recording, video, audio, params, old[out_csv].get("key")): (video, out_csv)
            for video, audio, out_csv in tasks
        }
        bar = None
        if watched:
            link = dashboard_link(client)
            if link:
                print(f"Dask dashboard: {link}", flush=True)
            bar = start_progress_bar(client, list(futures))
        for fut in as_completed(list(futures)):
            video, out_csv = futures[fut]
            try:
                rows, report = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker: report it, keep the rest
                rows, report = None, {"video": video, "status": "failed", "error": f"{type(e).__name__}: {e}"}
            results.append(write_recording(Path(out_csv), rows, report, old[out_csv]))
            fut.release()  # the rows are on disk now: let the cluster forget them
        if bar is not None:
            bar.join(timeout=10)  # let it draw 100%; it ends by itself once the futures are done
    return results


def extract_folder(
    recordings: str | Path,
    out_dir: str | Path,
    params: FeatureParams | None = None,
    progress: bool = True,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Extract every recording under ``recordings`` into ``out_dir`` (same relative layout).

    ``<rel>/<name>.<video>`` (+ optional ``<name>.wav``) -> ``<rel>/<name>.csv``
    and ``<name>.json``; ``user_id`` is the file stem. Recordings grouped in
    sub-folders (one per conversation, one video per participant) also get a
    combined ``audio_video_features.csv`` there, so the output folder plus
    each conversation's ``transcription/`` and ``survey.csv`` is a corpus
    :func:`geli_lib.corpus.data.load_candor` reads.

    Where it runs: with ``scheduler`` (``tcp://HOST:8786``) on that Dask
    cluster, whose workers must see the recordings at the same paths; else
    on a local Dask cluster of ``params.workers`` processes, or in this
    process when ``params.workers`` is 1 or there is only one recording (a
    cluster would only add its start-up). Every output is written by this
    process, atomically; finished outputs whose key matches are skipped;
    failed files are reported, the others kept. An unreachable scheduler is
    an error before anything is written. Returns the run report (also
    written to ``out_dir/features_report.json``).
    """
    params = params or FeatureParams()
    recordings, out_dir = Path(recordings), Path(out_dir)
    pairs = find_recordings(recordings)
    tasks: list[Task] = [
        (str(v), str(a) if a else None, str(out_dir / v.relative_to(recordings).with_suffix(".csv"))) for v, a in pairs
    ]
    clashes = shared_outputs(tasks)
    results: list[dict[str, Any]] = [
        {
            "video": t[0],
            "status": "failed",
            "error": f"{len(clashes[t[2]])} videos of one participant {Path(t[0]).stem!r} in {Path(t[0]).parent} "
            f"({', '.join(Path(v).name for v in clashes[t[2]])}) would write one {Path(t[2]).name}: "
            "keep one of them",
        }
        for t in tasks
        if t[2] in clashes
    ]
    tasks = [t for t in tasks if t[2] not in clashes]
    old = {t[2]: finished_report(Path(t[2])) for t in tasks}
    if scheduler is None and (params.workers == 1 or len(tasks) <= 1):
        results += _run_serially(tasks, params, old, progress)
    else:
        results += _run_on_dask(tasks, params, old, progress, scheduler)
    results.sort(key=lambda r: r["video"])
    convos = sorted({Path(t[2]).parent for t in tasks if Path(t[2]).parent != out_dir})
    assembled = [str(p) for p in (assemble_conversation(c) for c in convos) if p is not None]
    report = {
        "recordings": str(recordings),
        "out_dir": str(out_dir),
        "counts": {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")},
        "failed": {r["video"]: r["error"] for r in results if r["status"] == "failed"},
        "warnings": {r["video"]: r["warnings"] for r in results if r.get("warnings")},
        "assembled": assembled,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "features_report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m geli_lib.listener.features RECORDINGS_DIR OUT_DIR [--fps F] [--workers N | --scheduler ADDR] ...``.

    Exit 1 if any file failed, 2 on bad arguments or an unreachable scheduler (nothing written then).
    """
    defaults = FeatureParams()
    ap = argparse.ArgumentParser(
        prog="python -m geli_lib.listener.features",
        description="Listener features (CANDOR audio_video_features.csv) from recordings.",
    )
    ap.add_argument("recordings", help="folder of listener videos (+ optional same-name .wav), any depth")
    ap.add_argument("out_dir", help="output folder (same relative layout; reruns skip finished files)")
    ap.add_argument("--fps", type=float, default=defaults.sample_fps, help="video frames analysed per second")
    ap.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="processes of the local Dask cluster (1: no cluster, this process only)",
    )
    ap.add_argument(
        "--scheduler",
        metavar="tcp://HOST:8786",
        default=None,
        help="an existing Dask scheduler to run on instead of a local cluster (its workers must "
        "see RECORDINGS_DIR at the same path); --workers is then ignored",
    )
    ap.add_argument(
        "--detect-width", type=int, default=defaults.detect_width, help="frame width (px) for face detection"
    )
    ap.add_argument("--nod-window", type=float, default=defaults.nod_window, help="seconds per nod decision")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    params = FeatureParams(
        sample_fps=args.fps, workers=args.workers, detect_width=args.detect_width, nod_window=args.nod_window
    )
    try:
        params.validate()
        report = extract_folder(
            args.recordings, args.out_dir, params, progress=not args.no_progress, scheduler=args.scheduler
        )
    except Exception as e:  # noqa: BLE001 - a clear one-line message for the command line
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = report["counts"]
    print(
        f"listener features: {c['done']} done, {c['skipped']} skipped (already done), {c['failed']} failed "
        f"-> {args.out_dir}"
    )
    for video, err in report["failed"].items():
        print(f"FAILED {video}: {err}", file=sys.stderr)
    for video, warns in report["warnings"].items():
        for w in warns:
            print(f"warning {video}: {w}", file=sys.stderr)
    return 1 if c["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
