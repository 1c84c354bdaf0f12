"""CSV rendering (pyarrow: ~10x faster than DataFrame.to_csv, byte-stable)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from geli_lib.corpus.simulation.common import split_sentences
from geli_lib.corpus.simulation.words import BACKCHANNEL_WORDS

# --------------------------------------------------------------------------- #
# CSV rendering (pyarrow: ~10x faster than DataFrame.to_csv, byte-stable)      #
# --------------------------------------------------------------------------- #

_TIMEDELTA_CACHE: list[pa.Array] = []


def _timedelta_strings(n: int) -> pa.Array:
    """``"0 days HH:MM:SS"`` for seconds 0..n-1 (pandas' str(Timedelta) form), cached."""
    if not _TIMEDELTA_CACHE or len(_TIMEDELTA_CACHE[0]) < n:
        m = max(n, 4 * 3600)
        _TIMEDELTA_CACHE[:] = [
            pa.array([f"{k // 86400} days {k % 86400 // 3600:02d}:{k % 3600 // 60:02d}:{k % 60:02d}" for k in range(m)])
        ]
    return _TIMEDELTA_CACHE[0].slice(0, n)


def _arrow(v: Any) -> pa.Array:
    if isinstance(v, pa.Array):
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
        return pa.array(v, from_pandas=True)  # NaN -> null -> empty field
    return pa.array(v)


def csv_bytes(columns: dict[str, Any], quote_strings: bool = True) -> bytes:
    """Render columns as CSV bytes that ``pandas.read_csv`` reads back.

    Floats must be rounded by the caller (they print in shortest round-trip
    form); NaN prints as an empty field, booleans as true/false. Strings are
    quoted unless ``quote_strings`` is False (only for strings without commas).
    """
    table = pa.table({k: _arrow(v) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    pacsv.write_csv(
        table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed" if quote_strings else "none")
    )
    return (",".join(columns) + "\n").encode() + sink.getvalue().to_pybytes()


def _transcript_columns(
    speaker: Sequence[str], start: np.ndarray, stop: np.ndarray, texts: Sequence[str]
) -> dict[str, Any]:
    """The cliffhanger-style columns shared by the three segmentations."""
    interval = np.round(start - np.append(np.nan, stop[:-1]), 3)
    return {
        "turn_id": np.arange(len(texts), dtype=np.int64),
        "speaker": list(speaker),
        "start": start,
        "stop": stop,
        "utterance": list(texts),
        "interval": interval,
        "delta": np.round(stop - start, 3),
        "questions": np.array([u.count("?") for u in texts], dtype=np.int64),
        "end_question": np.array([u.endswith("?") for u in texts]),
        "overlap": np.zeros(len(texts), dtype=bool),
        "n_words": np.array([len(u.split()) for u in texts], dtype=np.int64),
    }


def audiophile_rows(
    speaker: Sequence[str], start: np.ndarray, stop: np.ndarray, texts: Sequence[str]
) -> dict[str, Any]:
    """Split each turn into one row per sentence, times proportional to word counts."""
    spk, st, sp, tx = [], [], [], []
    for who, a, b, text in zip(speaker, start.tolist(), stop.tolist(), texts):
        sentences = split_sentences(text) or [text]
        words = [len(s.split()) for s in sentences]
        bounds = [a + (b - a) * c / sum(words) for c in accumulate(words, initial=0)]
        for k, s in enumerate(sentences):
            spk.append(who)
            tx.append(s)
            st.append(bounds[k])
            sp.append(bounds[k + 1])
    st_a, sp_a = np.round(np.array(st), 3), np.round(np.array(sp), 3)
    sp_a = np.minimum(sp_a, np.append(st_a[1:], np.inf))
    return _transcript_columns(spk, st_a, sp_a, tx)


def backchannel_columns(
    speaker_ids: tuple[str, str],
    roles_ai: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    pleasantness: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Short listener backchannels during long turns (extra to the cliffhanger turns).

    The User says "mhm" more often during pleasant AI turns (a mild, honest cue).
    """
    n = len(start)
    dur = stop - start
    p = np.where(roles_ai, 0.25 + 0.4 * np.nan_to_num(pleasantness), 0.45)
    has = (dur > 6.0) & (rng.random(n) < p)
    two = has & (dur > 12.0) & (rng.random(n) < 0.5)
    u = rng.random((n, 4))
    words = np.array(BACKCHANNEL_WORDS)
    w1, w2 = words[(u[:, 0] * len(words)).astype(int)], words[(u[:, 1] * len(words)).astype(int)]
    first = start + dur * np.where(two, 0.25 + 0.15 * u[:, 2], 0.3 + 0.4 * u[:, 2])
    last = np.where(two, start + dur * (0.6 + 0.25 * u[:, 3]), first)
    text = [(f"{a}, {b}" if t else a) if h else "" for a, b, h, t in zip(w1, w2, has, two)]
    listener = [speaker_ids[0] if ai else speaker_ids[1] for ai in roles_ai]
    return {
        "backchannel": text,
        "backchannel_count": np.where(has, 1 + two, 0).astype(np.int64),
        "backchannel_speaker": [who if h else "" for who, h in zip(listener, has)],
        "backchannel_start": np.where(has, np.round(first, 3), np.nan),
        "backchannel_stop": np.where(has, np.round(last + 0.4, 3), np.nan),
    }


def _survey_items(score: int, rng: np.random.Generator) -> dict[str, Any]:
    """Survey items correlated with overall_affect, plus demographics."""
    noisy = lambda sd: int(np.clip(round(score + rng.normal(0, sd)), 1, 10))  # noqa: E731
    return {
        "overall_affect": score,
        "end_affect": noisy(1.2),
        "how_enjoyable": noisy(1.0),
        "i_like_you": noisy(1.4),
        "conversationalist": noisy(1.6),
        "age": int(rng.integers(18, 71)),
        "sex": "female" if rng.random() < 0.55 else "male",
    }
