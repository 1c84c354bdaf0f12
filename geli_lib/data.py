"""Loaders into the canonical :class:`~geli_lib.schema.Corpus`, splits and reward-model pairs.

One function per source format (README, "Real data"):

- :func:`load_candor`  CANDOR's folder-per-conversation layout (also what the
  simulator writes, plus its ``simulation_truth.csv``);
- :func:`load_esconv`  the ESConv JSON list of sessions;
- :func:`load_soda`    SODA records (JSON list or JSONL);
- :func:`load_corpus`  what the notebooks call: picks the loader from
  :class:`~geli_lib.params.StudyParams`, simulates when asked, and caches the
  canonical corpus as parquet;
- :func:`split_conversations`  reproducible conversation-level splits;
- :func:`build_pairs`  one (history, response) pair per AI turn, in the
  authors' context format.

Bad input is handled strictly, because a loader that guesses produces wrong
numbers nobody sees. Two kinds of problem are distinguished:

*Errors* (always a :class:`DataError` whose message names the file, the row
and the column): a missing file or column, a value that is not a number, a
survey value outside ``DataParams.score_range`` (or ESConv's 1-5), turn
timestamps with ``stop < start`` or starts that run backwards in file order,
duplicate turn ids, a features file without any row of the listener, listener
frames whose time does not strictly increase, probabilities outside [0, 1], a
truth file that does not match the transcript, an unknown ESConv role name.
These mean the data or the reader is wrong, so skipping them would hide it.

A CANDOR transcript value that spans lines and holds a whole row of the file
(a stray ``"`` opened a quoted field that swallowed rows) is an error too, as
are text files that are not UTF-8, JSON ``true``/``false`` given as a rating,
and SODA speakers that are missing or empty.

*Bad conversations* (``DataParams.bad_conversations``): an empty conversation
(no turns, or no words in any turn), one with a single speaker or with more
than two, and one without a session score (no survey row for the listener, or a missing / NaN value). With
``"skip"`` the conversation is left out, counted in ``Corpus.skipped``
(reason -> ``["path: detail"]``) and a summary is logged; with ``"error"`` it is
a :class:`DataError`. Conversations whose score is missing by design (SODA) are
never skipped for it.

*Counted and reported* (kept, one warning per kind with the total, and a column
of ``conversations`` per kind, :data:`ANOMALY_COLUMNS`): turns whose utterance is
empty or only whitespace, conversations without a face in any listener frame,
and ``f0_mean`` values below 0 (missing-value codes such as -999999, read as
missing).

Speed: CANDOR at full scale (1,656 conversations, ~265k turns, ~3.3M feature
rows) is read with a pool of worker processes over chunks of conversations,
reading only the needed columns with pyarrow's CSV reader (no per-file pandas
frames) and parsing ``timedelta`` strings with a vectorised regular expression
(``pd.to_timedelta`` alone would take ~8 s on 3.3M strings). Measured on 2
cores with 2 workers: the gpu-profile simulated corpus (1,656 conversations,
265,939 turns, 3.1M feature rows, 567 MB) loads in ~8.5 s; a cached re-run of
:func:`load_corpus` reads the parquet in ~1.4 s.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from geli_lib.io import cache_dir, content_key, file_key, progress_bar
from geli_lib.params import DataParams, SplitParams, StudyParams, to_dict
from geli_lib.schema import FACE_COLUMNS, PROSODY, Corpus

logger = logging.getLogger(__name__)

#: Bump when the loaders change what they produce: it is part of the cache key.
LOADER_VERSION = 3
SPLITS: tuple[str, ...] = ("reward_train", "reward_test", "rl")
#: Below this many conversations a process pool costs more to start than it saves.
_POOL_MIN_CONVERSATIONS = 32

TRANSCRIPT_REQUIRED = ("turn_id", "speaker", "start", "stop", "utterance")
SURVEY_REQUIRED = ("user_id",)  # plus DataParams.score_item
FEATURES_REQUIRED = ("user_id", "timedelta", "is_speaking", "gaze_on", *FACE_COLUMNS)
FEATURES_OPTIONAL = ("smile", "nod_yes", "nod_no", *PROSODY)
TRUTH_REQUIRED = ("turn_id", "speaker", "start", "stop", "act", "true_reward")
#: Per-conversation counts of kept but suspicious input (see the module docstring): column ->
#: what the warning says of a count.
ANOMALY_COLUMNS: dict[str, str] = {
    "n_empty_utterances": "turn(s) with an empty or whitespace-only utterance (kept, with no words)",
    "no_face_in_any_frame": "conversation(s) without a face in any listener frame (no visual affect at all)",
    "f0_missing_codes": "f0_mean value(s) below 0 Hz, missing-value codes such as -999999 (read as missing)",
}
#: Frame columns that are probabilities or indicators and must lie in [0, 1].
UNIT_INTERVAL_COLUMNS = ("is_speaking", "gaze_on", "smile", "nod_yes", "nod_no", *FACE_COLUMNS)


class DataError(ValueError):
    """Input data are invalid; the message names the file, the row and the column."""


class _BadConversation(Exception):
    """A per-conversation problem that ``bad_conversations="skip"`` may skip."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{detail} ({reason})")
        self.reason, self.detail = reason, detail


# --------------------------------------------------------------------------- helpers


def _where(path: Path | str, i: int, col: str | None = None) -> str:
    """``path: row i+1 (line i+2)[, column 'col']`` for data row ``i`` (0-based) of a CSV file."""
    out = f"{path}: row {i + 1} (line {i + 2})"
    return out + (f", column {col!r}" if col else "")


def _header(path: Path) -> list[str]:
    """The column names of a CSV file (first line), or an error when there is none."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            row = next(csv.reader(f), None)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: {e}") from None
    if not row:
        raise DataError(f"{path}: empty file (no header row)")
    return row


def _read_csv(
    path: Path, required: Iterable[str], optional: Iterable[str] = (), strings: Iterable[str] = ()
) -> pa.Table:
    """Read only the ``required`` and present ``optional`` columns of a CSV file (pyarrow).

    ``strings`` columns are read as text whatever they look like (ids such as
    ``turn_id`` must not become numbers; empty text stays ``""``). A missing
    required column is a :class:`DataError` naming the file and the column.
    The result stays a pyarrow table: going through pandas per small file
    costs more than reading it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    cols = _header(path)
    required = list(required)
    missing = [c for c in required if c not in cols]
    if missing:
        shown = cols if len(cols) <= 30 else cols[:30] + ["..."]
        raise DataError(f"{path}: missing column(s) {missing}; the file has {shown}")
    use = required + [c for c in optional if c in cols and c not in required]
    types = {c: pa.string() for c in strings if c in use}
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=use, column_types=types),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"{path}: cannot parse as CSV: {e}") from None


def _text(table: pa.Table, col: str) -> np.ndarray:
    """A text column as an object array of ``str`` (nulls become ``""``)."""
    return pc.fill_null(table.column(col), "").to_numpy(zero_copy_only=False).astype(object)


def _numeric(
    table: pa.Table, col: str, path: Path, allow_nan: bool = False, rows: np.ndarray | None = None
) -> np.ndarray:
    """Column ``col`` as float64; a non-number (or, unless allowed, a missing value) is an error.

    ``rows`` maps the rows of ``table`` back to the file's data rows (for
    messages) when ``table`` is a subset.
    """
    a = table.column(col)
    row = (lambda i: int(rows[i])) if rows is not None else (lambda i: i)
    t = a.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        v = pc.fill_null(a.cast(pa.float64()), np.nan).to_numpy()
    else:  # pyarrow read it as text: something in it is not a number
        s = pd.Series(a.to_numpy(zero_copy_only=False), dtype=object)
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        text = s.fillna("").astype(str).str.strip()
        bad = np.isnan(v) & (text != "").to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{_where(path, row(i), col)}: not a number: {s.iloc[i]!r}")
    if not allow_nan and np.isnan(v).any():
        i = int(np.argmax(np.isnan(v)))
        raise DataError(f"{_where(path, row(i), col)}: missing value")
    return v


#: One conversation's (or a chunk's) table as named, equal-length numpy arrays. Per
#: conversation this is much cheaper than a small DataFrame; one DataFrame is built per chunk.
Columns = dict[str, np.ndarray]


def _frame(columns: Columns) -> pd.DataFrame:
    """A DataFrame that keeps text as plain ``object`` columns.

    pandas 3 would convert each text column to its arrow-backed ``str`` dtype;
    :func:`~geli_lib.schema.conform` fixes the final dtypes once, on the whole corpus.
    """
    return pd.DataFrame({k: pd.Series(v, dtype=object) if v.dtype == object else v for k, v in columns.items()})


def _concat(parts: list[Columns]) -> Columns:
    """Concatenate column dicts; a column absent from a part is NaN there."""
    cols = list(dict.fromkeys(c for p in parts for c in p))
    lengths = [len(next(iter(p.values()))) for p in parts]
    return {c: np.concatenate([p[c] if c in p else np.full(n, np.nan) for p, n in zip(parts, lengths)]) for c in cols}


def _count_words(texts: Iterable[str]) -> np.ndarray:
    return np.fromiter((len(t.split()) for t in texts), dtype=np.int64)


def _parse_seconds(values: pa.ChunkedArray, path: Path, rows: np.ndarray) -> np.ndarray:
    """Seconds from CANDOR ``timedelta`` strings (``"0 days 00:01:02.5"``) or plain numbers.

    The common pandas format is parsed with one vectorised regular expression
    (``pd.to_timedelta`` would take ~8 s on CANDOR's 3.3M rows); anything else
    goes through :func:`pandas.to_timedelta`. An unparseable value is an error
    naming its row (``rows`` maps back to the file's data rows).
    """
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy()
    st = pc.extract_regex(values, r"^\s*(?P<d>\d+) days? (?P<h>\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d*)?)\s*$")
    parts = [pc.fill_null(pc.struct_field(st, k).cast(pa.float64()), np.nan).to_numpy() for k in "dhms"]
    out = parts[0] * 86400.0 + parts[1] * 3600.0 + parts[2] * 60.0 + parts[3]
    todo = np.flatnonzero(np.isnan(out))
    if len(todo):
        raw = values.to_numpy(zero_copy_only=False)
    for j in todo:  # rare formats ("00:01:02", "62s", "-1 days +23:59:59"): let pandas decide
        try:
            out[j] = pd.to_timedelta(raw[j]).total_seconds()
        except (ValueError, TypeError):
            out[j] = np.nan
        if np.isnan(out[j]):
            raise DataError(f"{_where(path, int(rows[j]), 'timedelta')}: not a time span: {raw[j]!r}")
    return out


def _merge_columns(cols: Columns, text_columns: tuple[str, ...], tag_columns: tuple[str, ...]) -> Columns:
    """:func:`merge_consecutive` on a column dict."""
    spk, conv = cols["speaker_id"], cols["convo_id"]
    n = len(spk)
    if n < 2:
        return cols
    new = np.r_[True, (spk[1:] != spk[:-1]) | (conv[1:] != conv[:-1])]
    if new.all():
        return cols
    idx = np.flatnonzero(new)
    out = {c: v[idx] for c, v in cols.items()}
    if "stop" in cols:
        out["stop"] = np.fmax.reduceat(cols["stop"].astype(float), idx)
    if "n_words" in cols:
        out["n_words"] = np.add.reduceat(cols["n_words"].astype(np.int64), idx)
    for col in ("true_reward", "local_feedback"):  # per-turn qualities: the mean of the parts that have one
        if col in cols:
            v = cols[col].astype(float)
            ok = ~np.isnan(v)
            cnt = np.add.reduceat(ok.astype(np.int64), idx)
            tot = np.add.reduceat(np.where(ok, v, 0.0), idx)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[col] = np.where(cnt > 0, tot / cnt, np.nan)
    lengths = np.diff(np.r_[idx, n])
    runs = np.flatnonzero(lengths > 1)  # only the runs that need joining
    for col in [c for c in text_columns + tag_columns if c in cols]:
        src, vals = cols[col], out[col].astype(object)
        for k in runs:
            parts = [str(p) for p in src[idx[k] : idx[k] + lengths[k]]]
            vals[k] = " ".join(parts) if col in text_columns else "+".join(p for p in parts if p)
        out[col] = vals
    return out


def merge_consecutive(
    turns: pd.DataFrame, text_columns: tuple[str, ...] = ("utterance",), tag_columns: tuple[str, ...] = ("act",)
) -> pd.DataFrame:
    """Merge consecutive rows of the same speaker (within a conversation) into one turn.

    The merged turn keeps the first row's ``turn_id`` and ``start``, takes the
    largest ``stop``, joins ``text_columns`` with a space and ``tag_columns``
    (acts, strategies) with ``"+"``, sums ``n_words`` and averages ``true_reward``
    (a turn's reward on the score scale, length-free) and ``local_feedback`` (the
    parts of one supporter run share one seeker rating) over the parts that
    have one (NaN only when every part is NaN). Rows must be in conversation
    order; ``convo_id`` and ``speaker_id`` columns are required.
    """
    cols = {c: turns[c].to_numpy() for c in turns.columns}
    merged = _merge_columns(cols, text_columns, tag_columns)
    return turns.reset_index(drop=True) if merged is cols else _frame(merged)


def _number_turns(turns: pd.DataFrame) -> pd.DataFrame:
    """Set ``turn_idx`` = 0-based position within each conversation (rows in order)."""
    conv = turns["convo_id"].to_numpy()
    n = len(conv)
    first = np.r_[True, conv[1:] != conv[:-1]] if n else np.zeros(0, bool)
    start_of = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, int)
    turns["turn_idx"] = np.arange(n) - start_of
    return turns


def _report_skips(name: str, skipped: dict[str, list[str]]) -> None:
    """Log one line saying how many conversations were skipped, and why (never silent)."""
    if skipped:
        parts = ", ".join(f"{reason}: {len(v)}" for reason, v in sorted(skipped.items()))
        total = sum(len(v) for v in skipped.values())
        logger.warning("%s: skipped %d conversation(s) (%s); details in Corpus.skipped", name, total, parts)


def _report_anomalies(name: str, conversations: pd.DataFrame) -> None:
    """Log one warning per kind of kept but suspicious input (:data:`ANOMALY_COLUMNS`) that occurred."""
    for col, what in ANOMALY_COLUMNS.items():
        counts = conversations[col] if col in conversations else pd.Series(dtype=int)
        if counts.sum():
            ids = conversations.loc[counts > 0, "convo_id"].tolist()
            logger.warning("%s: %d %s (see conversations.%s): %s", name, int(counts.sum()), what, col, ids[:5])


def _bad(params: DataParams, skipped: dict[str, list[str]], err: _BadConversation) -> None:
    """Skip-and-count or raise, per ``params.bad_conversations``."""
    if params.bad_conversations == "error":
        raise DataError(
            f"{err.detail} ({err.reason}; set data.bad_conversations: skip to leave such conversations out)"
        ) from None
    skipped.setdefault(err.reason, []).append(err.detail)


def _conversation_row(
    convo_id: str,
    corpus: str,
    listener: str,
    ai: str,
    score: float,
    score_raw: float,
    turns: pd.DataFrame | Columns,
    has_truth: bool,
) -> dict[str, Any]:
    """The ``conversations`` row; ``duration`` = last stop - first start (NaN without timing)."""
    start = np.asarray(turns["start"], dtype=float)
    stop = np.asarray(turns["stop"], dtype=float)
    duration = float(np.nanmax(stop) - np.nanmin(start)) if np.isfinite(start).any() else np.nan
    return {
        "convo_id": convo_id,
        "corpus": corpus,
        "listener_id": listener,
        "ai_id": ai,
        "score": score,
        "score_raw": score_raw,
        "n_turns": len(start),
        "n_ai_turns": int(np.sum(turns["is_ai"])),
        "duration": duration,
        "has_truth": has_truth,
    }


# --------------------------------------------------------------------------- CANDOR


def _read_transcript(path: Path) -> Columns:
    """One transcript CSV, validated: ids present and unique, times numeric and ordered."""
    tab = _read_csv(path, TRANSCRIPT_REQUIRED, ("n_words",), strings=("turn_id", "speaker", "utterance"))
    _check_swallowed_rows(path, tab, len(_header(path)))
    start = _numeric(tab, "start", path)
    stop = _numeric(tab, "stop", path)
    turn_id, speaker = _text(tab, "turn_id"), _text(tab, "speaker")
    for col, v in (("turn_id", turn_id), ("speaker", speaker)):
        empty = np.char.str_len(v.astype(str)) == 0 if len(v) else np.zeros(0, bool)
        if empty.any():
            raise DataError(f"{_where(path, int(np.argmax(empty)), col)}: empty {col}")
    back = stop < start
    if back.any():
        i = int(np.argmax(back))
        raise DataError(f"{_where(path, i, 'stop')}: stop {stop[i]} is before start {start[i]}")
    backwards = np.diff(start) < 0
    if backwards.any():
        i = int(np.argmax(backwards)) + 1
        raise DataError(
            f"{_where(path, i, 'start')}: start {start[i]} is before the previous "
            f"row's start {start[i - 1]} (turn starts must not run backwards)"
        )
    if len(set(turn_id)) < len(turn_id):
        i = int(np.argmax(pd.Index(turn_id).duplicated()))  # rare: only on the error path
        raise DataError(f"{_where(path, i, 'turn_id')}: duplicate turn_id {turn_id[i]!r}")
    utt = _text(tab, "utterance")
    words = _count_words(utt)
    if "n_words" in tab.column_names:  # the source's own count where given (the ≤5-word rule reads it)
        given = _numeric(tab, "n_words", path, allow_nan=True)
        words = np.where(np.isnan(given), words, given).astype(np.int64)
    return {"turn_id": turn_id, "speaker_id": speaker, "start": start, "stop": stop, "utterance": utt, "n_words": words}


def _check_swallowed_rows(path: Path, tab: pa.Table, n_columns: int) -> None:
    """Refuse a text value that spans lines and holds a whole row's worth of separators.

    Utterances may span lines (quoted), but a value across a line break with as
    many commas as a row has means a stray ``"`` opened a quoted field that
    swallowed the end of one row and the start of the next: the rows after it
    shift, and with them the speakers. Ids and speakers never span lines.
    """
    for col in ("turn_id", "speaker", "utterance"):
        values = _text(tab, col)
        multi = np.flatnonzero(np.char.find(values.astype(str), "\n") >= 0) if len(values) else []
        for i in multi:
            lines = values[i].split("\n")
            if col != "utterance" or values[i].count(",") >= n_columns - 1:
                raise DataError(
                    f"{_where(path, int(i), col)}: the value spans {len(lines)} lines and "
                    f"swallows what look like rows of the file (a stray '\"' opened a "
                    f"quoted field): {values[i][:120]!r}"
                )


def _empty_texts(texts: np.ndarray) -> np.ndarray:
    """Which utterances hold no words (empty or only whitespace)."""
    return np.fromiter((not str(t).strip() for t in texts), dtype=bool, count=len(texts))


def _speaker_order(*transcripts: Columns) -> list[str]:
    """Speakers in order of first appearance, the first transcript deciding the order."""
    seen: dict[str, None] = {}
    for t in transcripts:
        for sp in t["speaker_id"]:
            seen.setdefault(sp, None)
    return list(seen)


def _read_score(path: Path, listener: str, params: DataParams) -> float:
    """The listener's raw survey value (``params.score_item``), validated against ``score_range``."""
    tab = _read_csv(path, (*SURVEY_REQUIRED, params.score_item), strings=("user_id",))
    rows = np.flatnonzero(_text(tab, "user_id") == listener)
    if len(rows) == 0:
        raise _BadConversation("unscored", f"{path}: no row for the listener user_id {listener!r}")
    if len(rows) > 1:
        raise DataError(f"{_where(path, int(rows[1]), 'user_id')}: listener {listener!r} has {len(rows)} survey rows")
    i = int(rows[0])
    value = _numeric(tab.take([i]), params.score_item, path, allow_nan=True, rows=rows[:1])[0]
    if np.isnan(value):
        raise _BadConversation("unscored", f"{_where(path, i, params.score_item)}: missing value")
    lo, hi = params.score_range
    if not lo <= value <= hi:
        raise DataError(f"{_where(path, i, params.score_item)}: value {value} outside score_range [{lo}, {hi}]")
    return float(value)


def _read_frames(path: Path, listener: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The listener's per-second rows of ``audio_video_features.csv`` as arrays (``t`` in seconds),
    and the counts of :data:`ANOMALY_COLUMNS` they hold (no face in any frame, f0 codes)."""
    tab = _read_csv(path, FEATURES_REQUIRED, FEATURES_OPTIONAL, strings=("user_id", "timedelta"))
    mask = pc.fill_null(pc.equal(tab.column("user_id"), listener), False)
    rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    if len(rows) == 0:
        ids = sorted(set(_text(tab, "user_id")))[:5]
        raise DataError(f"{path}: no rows for the listener user_id {listener!r} (user_ids present: {ids})")
    sub = tab.filter(mask)
    t = _parse_seconds(sub.column("timedelta"), path, rows)
    step = np.diff(t) <= 0
    if step.any():
        j = int(np.argmax(step)) + 1
        raise DataError(
            f"{_where(path, int(rows[j]), 'timedelta')}: the listener's time {t[j]} s "
            f"does not follow {t[j - 1]} s (frames must strictly increase in time)"
        )
    out = {"t": t}
    for col in ("is_speaking", "gaze_on", "smile", "nod_yes", "nod_no", *FACE_COLUMNS, *PROSODY):
        if col not in sub.column_names:
            if col in ("smile", "nod_yes", "nod_no"):
                out[col] = np.full(len(t), np.nan)
            continue
        v = _numeric(sub, col, path, allow_nan=True, rows=rows)
        if col in UNIT_INTERVAL_COLUMNS:
            bad = (v < 0) | (v > 1)
            if bad.any():
                j = int(np.argmax(bad))
                raise DataError(f"{_where(path, int(rows[j]), col)}: value {v[j]} outside [0, 1]")
        out[col] = v
    codes = out["f0_mean"] < 0 if "f0_mean" in out else np.zeros(len(t), bool)
    if codes.any():  # no pitch is below 0 Hz: a missing-value code
        out["f0_mean"] = np.where(codes, np.nan, out["f0_mean"])
    no_face = np.isnan(np.column_stack([out[c] for c in FACE_COLUMNS])).all(axis=1)
    return out, {"no_face_in_any_frame": int(no_face.all()), "f0_missing_codes": int(codes.sum())}


def _read_truth(path: Path) -> Columns:
    """``simulation_truth.csv``: the planted reward and act per cliffhanger turn."""
    tab = _read_csv(path, TRUTH_REQUIRED, strings=("turn_id", "speaker", "act"))
    return {
        "turn_id": _text(tab, "turn_id"),
        "speaker_id": _text(tab, "speaker"),
        "start": _numeric(tab, "start", path),
        "stop": _numeric(tab, "stop", path),
        "act": _text(tab, "act"),
        "true_reward": _numeric(tab, "true_reward", path, allow_nan=True),
    }


def _join_truth_by_id(raw: Columns, truth: Columns, ai: str, path: Path, tpath: Path) -> None:
    """Cliffhanger: ``true_reward`` and ``act`` of each AI row from the truth row with its turn_id."""
    pos = pd.Index(raw["turn_id"]).get_indexer(truth["turn_id"])
    if (pos < 0).any():
        i = int(np.argmax(pos < 0))
        raise DataError(f"{_where(tpath, i, 'turn_id')}: turn_id {truth['turn_id'][i]!r} is not in {path}")
    wrong = raw["speaker_id"][pos] != truth["speaker_id"]
    if wrong.any():
        i = int(np.argmax(wrong))
        raise DataError(
            f"{_where(tpath, i, 'speaker')}: speaker {truth['speaker_id'][i]!r} "
            f"differs from the transcript's {raw['speaker_id'][pos[i]]!r}"
        )
    n = len(raw["turn_id"])
    tr = np.full(n, np.nan)
    act = np.full(n, "", dtype=object)
    tr[pos], act[pos] = truth["true_reward"], truth["act"]
    is_ai = raw["speaker_id"] == ai
    lacking = is_ai & np.isnan(tr)
    if lacking.any():
        i = int(np.argmax(lacking))
        raise DataError(f"{tpath}: no true_reward for AI turn_id {raw['turn_id'][i]!r} of {path}")
    raw["true_reward"] = np.where(is_ai, tr, np.nan)
    raw["act"] = np.where(is_ai, act, "").astype(object)


def _assign_truth_by_midpoint(turns: Columns, truth: Columns, ai: str) -> int:
    """Other segmentations: each loaded AI turn gets the mean ``true_reward`` (and the acts,
    joined by "+") of the truth AI turns whose midpoint lies in its [start, stop]; NaN when none does.

    A midpoint is given to the last AI turn starting at or before it, if it has
    not stopped yet, so no truth is counted twice. Returns the number of truth AI
    turns that fell in no loaded AI turn (kept as ``truth_unassigned``).
    """
    keep = (truth["speaker_id"] == ai) & ~np.isnan(truth["true_reward"])
    mid = (truth["start"][keep] + truth["stop"][keep]) / 2
    reward_in, act_in = truth["true_reward"][keep], truth["act"][keep]
    ai_rows = np.flatnonzero(turns["is_ai"])
    starts, stops = turns["start"][ai_rows], turns["stop"][ai_rows]
    k = np.searchsorted(starts, mid, side="right") - 1
    ok = (k >= 0) & (mid <= stops[np.clip(k, 0, None)]) if len(starts) else np.zeros(len(mid), bool)
    n = len(turns["is_ai"])
    tr = np.full(n, np.nan)
    tot = np.bincount(k[ok], weights=reward_in[ok], minlength=len(ai_rows))
    cnt = np.bincount(k[ok], minlength=len(ai_rows))
    with np.errstate(invalid="ignore", divide="ignore"):
        tr[ai_rows] = np.where(cnt > 0, tot / cnt, np.nan)
    act = np.full(n, "", dtype=object)
    for kk, a in zip(k[ok], act_in[ok]):  # acts are short strings; one pass
        if a:
            r = ai_rows[kk]
            act[r] = f"{act[r]}+{a}" if act[r] else a
    turns["true_reward"], turns["act"] = tr, act
    return int((~ok).sum())


def _load_candor_conversation(folder: Path, params: DataParams, name: str) -> tuple[dict[str, Any], Columns, Columns]:
    """Read one conversation folder into (conversation row, turns, listener frames)."""
    tdir = folder / "transcription"
    path = tdir / f"transcript_{params.segmentation}.csv"
    raw = _read_transcript(path)
    n = len(raw["turn_id"])
    if n == 0:
        raise _BadConversation("empty", f"{path}: no turns")
    empty = _empty_texts(raw["utterance"])
    if empty.all():
        raise _BadConversation("empty", f"{path}: no words in any of its {n} turns")
    # The User is the first speaker of the authors' segmentation (cliffhanger) when it is
    # there, so the same person is the User under every segmentation.
    cliff = tdir / "transcript_cliffhanger.csv"
    order = [raw] if params.segmentation == "cliffhanger" or not cliff.is_file() else [_read_transcript(cliff), raw]
    speakers = _speaker_order(*order)
    if len(speakers) == 1:
        raise _BadConversation("one speaker", f"{path}: only speaker {speakers[0]!r}")
    if len(speakers) > 2:
        raise _BadConversation("more than two speakers", f"{path}: speakers {speakers}")
    listener, ai = speakers if params.listener == "first_speaker" else speakers[::-1]
    score_raw = _read_score(folder / "survey.csv", listener, params)

    truth_path = folder / "simulation_truth.csv"
    truth = _read_truth(truth_path) if truth_path.is_file() else None
    if truth is not None and not ((truth["speaker_id"] == ai) & ~np.isnan(truth["true_reward"])).any():
        truth = None  # the truth rates the simulated AI; with the roles swapped it rates nobody here
    raw["convo_id"] = np.full(n, folder.name, dtype=object)
    raw["act"] = np.full(n, "", dtype=object)
    raw["true_reward"] = np.full(n, np.nan)
    if truth is not None and params.segmentation == "cliffhanger":
        _join_truth_by_id(raw, truth, ai, path, truth_path)
    turns = _merge_columns(raw, ("utterance",), ("act",)) if params.merge_consecutive else raw
    m = len(turns["turn_id"])
    turns["is_ai"] = turns["speaker_id"] == ai
    turns["role"] = np.where(turns["is_ai"], "AI", "User").astype(object)
    turns["local_feedback"] = np.full(m, np.nan)
    turns["turn_idx"] = np.arange(m)
    unassigned = 0
    if truth is not None and params.segmentation != "cliffhanger":
        unassigned = _assign_truth_by_midpoint(turns, truth, ai)

    frames, counts = _read_frames(folder / "audio_video_features.csv", listener)
    row = _conversation_row(
        folder.name, name, listener, ai, score_raw * params.score_scale, score_raw, turns, truth is not None
    )
    row.update(truth_unassigned=unassigned, n_empty_utterances=int(empty.sum()), **counts)
    return row, turns, frames


def _load_candor_chunk(folders: list[str], params: DataParams, name: str) -> dict[str, Any]:
    """Worker: load some conversation folders; returns their tables concatenated, and skips."""
    rows, turns, frames, n_frames = [], [], [], []
    skips: dict[str, list[str]] = {}
    for f in folders:
        try:
            row, t, fr = _load_candor_conversation(Path(f), params, name)
        except _BadConversation as e:
            _bad(params, skips, e)
            continue
        rows.append(row)
        turns.append(t)
        frames.append(fr)
        n_frames.append(len(fr["t"]))
    return {
        "rows": rows,
        "skips": skips,
        "turns": _frame(_concat(turns)) if turns else None,
        "frames": _frame(_concat(frames)) if frames else None,
        "n_frames": n_frames,
    }


def candor_folders(root: str | Path) -> list[Path]:
    """The conversation folders of a CANDOR-layout root, sorted by name (hidden ones ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: CANDOR root folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no conversation folders (expected <root>/<uuid>/transcription/...)")
    return folders


def load_candor(
    root: str | Path, params: DataParams, progress: bool = True, *, workers: int = 2, name: str = "candor"
) -> Corpus:
    """Load a CANDOR-layout corpus into canonical form.

    Per conversation folder ``<root>/<uuid>/`` (sorted; the folder name is the
    ``convo_id``):

    - ``transcription/transcript_<params.segmentation>.csv``: the turns. The
      User (listener, whose survey is R_GE) is the first speaker of the
      cliffhanger transcript (authors' convention; the cliffhanger file decides
      for every segmentation so the User does not change with it), or the
      second with ``params.listener == "second_speaker"``; AI turns are the
      other speaker's. Consecutive rows of one speaker are merged when
      ``params.merge_consecutive`` (see :func:`merge_consecutive`).
      ``n_words`` is the file's where given, else counted by whitespace.
    - ``survey.csv``: the listener's ``params.score_item``; ``score_raw`` is it,
      ``score`` is it × ``params.score_scale`` (authors: overall_affect × 10).
    - ``audio_video_features.csv``: the listener's rows only become ``frames``
      (``t`` = ``timedelta`` in seconds); ``smile/nod_yes/nod_no`` are NaN when
      absent; prosodic columns named in :data:`~geli_lib.schema.PROSODY` are
      passed through when present.
    - ``simulation_truth.csv`` (simulated corpora only): for the cliffhanger
      segmentation ``true_reward`` and ``act`` are joined to the AI turns by
      ``turn_id``; for the others each loaded AI turn gets the sum over the
      truth AI turns whose midpoint lies in its [start, stop] (see
      ``_assign_truth_by_midpoint``), and ``conversations.truth_unassigned``
      counts the truth turns that fell in none (and a warning is logged). User
      turns have NaN truth. The truth rates the simulated AI's turns: when the
      loaded AI speaker has no truth rewards (``listener="second_speaker"``),
      ``true_reward`` is NaN and ``has_truth`` false.
    - ``metadata.json`` is not read: nothing in the canonical form comes from it.

    Conversations (and their frames) come out sorted by ``convo_id``. With
    ``workers > 1`` and at least ``_POOL_MIN_CONVERSATIONS`` conversations the
    folders are read by a process pool (``spawn``, so it is safe in notebooks).
    Bad input: see the module docstring.
    """
    params.validate()
    folders = candor_folders(root)
    n = len(folders)
    if n < _POOL_MIN_CONVERSATIONS or not _can_spawn():
        workers = 1
    # small chunks: an even load over the workers and a live progress bar
    size = max(1, min(64, math.ceil(n / (max(workers, 1) * 8))))
    chunks = [[str(f) for f in folders[i : i + size]] for i in range(0, n, size)]
    bar = progress_bar(n, f"load {name}", progress)
    results: list[dict[str, Any]] = []
    if workers > 1:
        try:
            results = _load_chunks_in_pool(chunks, params, name, workers, bar)
        except BrokenProcessPool as e:
            # e.g. a script without an `if __name__ == "__main__":` guard: slower, but correct
            logger.warning("%s: worker processes failed to start (%s); loading in this process", name, e)
            results = []
    if not results:
        bar.close()
        bar = progress_bar(n, f"load {name}", progress)
        for c in chunks:
            results.append(_load_candor_chunk(c, params, name))
            bar.update(len(c))
    bar.close()

    skipped: dict[str, list[str]] = {}
    for r in results:  # chunk order = folder order, so the report lists them sorted
        for reason, details in r["skips"].items():
            skipped.setdefault(reason, []).extend(details)
    rows = [row for r in results for row in r["rows"]]
    if not rows:
        raise DataError(f"{root}: every conversation was skipped: { {k: len(v) for k, v in skipped.items()} }")
    conversations = pd.DataFrame(rows)
    turns = pd.concat([r["turns"] for r in results if r["turns"] is not None], ignore_index=True)
    frames = pd.concat([r["frames"] for r in results if r["frames"] is not None], ignore_index=True)
    n_frames = np.concatenate([np.asarray(r["n_frames"], dtype=np.int64) for r in results])
    frames.insert(0, "user_id", np.repeat(conversations["listener_id"].to_numpy(), n_frames))
    frames.insert(0, "convo_id", np.repeat(conversations["convo_id"].to_numpy(), n_frames))
    unassigned = int(conversations["truth_unassigned"].sum())
    if unassigned:
        logger.warning(
            "%s: %d truth AI turn(s) fell in no loaded AI turn of the %s segmentation "
            "(see conversations.truth_unassigned)",
            name,
            unassigned,
            params.segmentation,
        )
    _report_skips(name, skipped)
    _report_anomalies(name, conversations)
    return Corpus(name=name, conversations=conversations, turns=turns, frames=frames, skipped=skipped)


def _can_spawn() -> bool:
    """Whether ``spawn`` workers can re-import ``__main__`` (not when it is read from stdin)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def _load_chunks_in_pool(
    chunks: list[list[str]], params: DataParams, name: str, workers: int, bar: Any
) -> list[dict[str, Any]]:
    """Load chunks in ``spawn`` worker processes, in order (so the output stays sorted).

    ``spawn`` rather than ``fork``: forking a process that already runs pyarrow's
    or a notebook's threads can deadlock.
    """
    results = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(_load_candor_chunk, c, params, name) for c in chunks]
        for c, fut in zip(chunks, futures):
            results.append(fut.result())
            bar.update(len(c))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


# --------------------------------------------------------------------------- ESConv

#: ESConv role names across releases -> canonical role. The seeker is GELI's "User"
#: (the one whose session score is R_GE). In the speaker/listener variant (the
#: EmpatheticDialogues naming) the *speaker* is the seeker and the *listener* the
#: supporter, the opposite of GELI's own use of the word "listener".
ESCONV_ROLES: dict[str, str] = {
    "seeker": "User",
    "usr": "User",
    "speaker": "User",
    "supporter": "AI",
    "sys": "AI",
    "listener": "AI",
}


def _read_utf8(path: Path) -> str:
    """The text of a UTF-8 file (a BOM is dropped); otherwise an error naming the line and byte."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}, byte {e.start}: not UTF-8 text "
            f"({raw[e.start : e.start + 1]!r}); convert the file to UTF-8"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_utf8(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None


def _rating(value: Any, where: str, lo: float = 1, hi: float = 5) -> float:
    """A 1-5 rating given as a string or number; anything else is a :class:`DataError`."""
    if isinstance(value, bool):  # JSON true/false: float() would read 1/0
        raise DataError(f"{where}: expected a rating {lo:g}-{hi:g}, got {json.dumps(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: not a number: {value!r}") from None
    if not lo <= v <= hi:
        raise DataError(f"{where}: value {v:g} outside [{lo:g}, {hi:g}]")
    return v


def esconv_score(survey: dict[str, Any], item: str, where: str) -> tuple[float, float]:
    """(score on 0-100, raw value) of one ESConv session per ``DataParams.esconv_score``.

    ``empathy`` / ``relevance``: raw 1-5, score = raw × 20 (20-100).
    ``intensity_drop``: raw = initial - final emotion intensity (-4..4), score maps
    [-4, 4] linearly onto [0, 100] (no change = 50). A missing or empty value is an
    unscored session (skippable); a present value outside 1-5 is an error.
    """
    keys = ("initial_emotion_intensity", "final_emotion_intensity") if item == "intensity_drop" else (item,)
    vals = []
    for k in keys:
        v = survey.get(k) if isinstance(survey, dict) else None
        if v is None or (isinstance(v, str) and not v.strip()):
            raise _BadConversation("unscored", f"{where}: no survey_score.seeker.{k}")
        vals.append(_rating(v, f"{where}, field 'survey_score.seeker.{k}'"))
    if item == "intensity_drop":
        raw = vals[0] - vals[1]
        return (raw + 4.0) / 8.0 * 100.0, raw
    return vals[0] * 20.0, vals[0]


def _esconv_session(i: int, s: Any, path: Path, params: DataParams) -> tuple[dict[str, Any], pd.DataFrame]:
    convo_id = f"esconv-{i:05d}"
    where = f"{path}: session {i} ({convo_id})"
    if not isinstance(s, dict) or "dialog" not in s:
        raise DataError(f"{where}: expected an object with a 'dialog' list")
    dialog = s["dialog"]
    if not isinstance(dialog, list):
        raise DataError(f"{where}, field 'dialog': expected a list, got {type(dialog).__name__}")
    if not dialog:
        raise _BadConversation("empty", f"{where}: empty dialog")
    names, roles, texts, strategies, feedback = [], [], [], [], []
    pending: list[int] = []  # supporter turns since the previous seeker feedback
    for j, turn in enumerate(dialog):
        tw = f"{where}, dialog[{j}]"
        if not isinstance(turn, dict) or "speaker" not in turn or "content" not in turn:
            raise DataError(f"{tw}: expected an object with 'speaker' and 'content'")
        name = str(turn["speaker"]).strip()
        role = ESCONV_ROLES.get(name.lower())
        if role is None:
            raise DataError(
                f"{tw}, field 'speaker': unknown role name {turn['speaker']!r} (known: {sorted(ESCONV_ROLES)})"
            )
        if not isinstance(turn["content"], str):
            raise DataError(f"{tw}, field 'content': expected text, got {turn['content']!r}")
        ann = turn.get("annotation") or {}
        if not isinstance(ann, dict):
            raise DataError(f"{tw}, field 'annotation': expected an object, got {ann!r}")
        names.append(name)
        roles.append(role)
        texts.append(turn["content"].strip())
        strategies.append(str(ann.get("strategy") or "") if role == "AI" else "")
        feedback.append(np.nan)
        if role == "AI":
            pending.append(j)
        elif ann.get("feedback") not in (None, ""):
            # A seeker's feedback rates the supporter turns since the previous rating.
            fb = _rating(ann["feedback"], f"{tw}, field 'annotation.feedback'")
            for k in pending:
                feedback[k] = fb
            pending = []
    user_names = sorted({n for n, r in zip(names, roles) if r == "User"})
    ai_names = sorted({n for n, r in zip(names, roles) if r == "AI"})
    if not user_names or not ai_names:
        only = "seeker" if user_names else "supporter"
        raise _BadConversation("one speaker", f"{where}: only {only} turns")
    empty = _empty_texts(np.asarray(texts, dtype=object))
    if empty.all():
        raise _BadConversation("empty", f"{where}: no words in any of its {len(texts)} turns")
    survey = (s.get("survey_score") or {}).get("seeker") if isinstance(s.get("survey_score"), dict) else None
    score, raw = esconv_score(survey or {}, params.esconv_score, where)
    speaker_id = np.where(np.asarray(roles) == "AI", ai_names[0], user_names[0])
    turns = pd.DataFrame(
        {
            "convo_id": convo_id,
            "turn_id": [str(j) for j in range(len(dialog))],
            "speaker_id": speaker_id,
            "role": roles,
            "is_ai": np.asarray(roles) == "AI",
            "start": np.nan,
            "stop": np.nan,
            "utterance": texts,
            "n_words": _count_words(texts),
            "act": "",
            "true_reward": np.nan,
            "local_feedback": feedback,
            "strategy": strategies,
        }
    )
    if params.merge_consecutive:
        turns = merge_consecutive(turns, tag_columns=("act", "strategy"))
    row = _conversation_row(
        convo_id, "esconv", user_names[0], ai_names[0], score, raw, turns, bool(turns["local_feedback"].notna().any())
    )
    row.update({k: str(s.get(k) or "") for k in ("emotion_type", "problem_type", "experience_type")})
    row.update(context=str(s.get("situation") or ""), n_empty_utterances=int(empty.sum()))
    return row, turns


def load_esconv(path: str | Path, params: DataParams) -> Corpus:
    """Load ESConv (a JSON list of sessions) into canonical form.

    - Roles: seeker / usr / speaker are the User (whose survey is R_GE);
      supporter / sys / listener are the AI (see :data:`ESCONV_ROLES`). Any
      other name is a :class:`DataError` naming the session and turn.
    - Session score per ``params.esconv_score`` (see :func:`esconv_score`);
      ``score_raw`` is the raw value. ESConv's own 1-5 scale is checked, not
      ``params.score_range`` (which is CANDOR's).
    - ``local_feedback``: a seeker turn's ``annotation.feedback`` (1-5) is
      attached to every supporter turn since the previous seeker feedback (or
      the start); supporter turns after the last feedback keep NaN.
      ``has_truth`` is true when a session has any such feedback.
    - ``annotation.strategy`` becomes the extra turn column ``strategy``;
      ``situation`` becomes the conversation column ``context`` (plus
      ``emotion_type``, ``problem_type``, ``experience_type``).
    - No timing (``start``/``stop`` NaN) and no frames. ``convo_id`` is
      ``esconv-%05d`` by position in the file (skipped sessions leave gaps, so
      ids do not move when a bad session is skipped).
    """
    params.validate()
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of sessions, got {type(data).__name__}")
    rows, turns, skipped = [], [], {}
    for i, s in enumerate(data):
        try:
            row, t = _esconv_session(i, s, path, params)
        except _BadConversation as e:
            _bad(params, skipped, e)
            continue
        rows.append(row)
        turns.append(t)
    return _finish("esconv", path, rows, turns, skipped)


def _finish(
    name: str, path: Path, rows: list[dict[str, Any]], turns: list[pd.DataFrame], skipped: dict[str, list[str]]
) -> Corpus:
    if not rows:
        raise DataError(f"{path}: no usable conversation (skipped: { {k: len(v) for k, v in skipped.items()} })")
    t = _number_turns(pd.concat(turns, ignore_index=True))
    conversations = pd.DataFrame(rows)
    _report_skips(name, skipped)
    _report_anomalies(name, conversations)
    return Corpus(name=name, conversations=conversations, turns=t, skipped=skipped)


# --------------------------------------------------------------------------- SODA


def _read_records(path: Path) -> list[Any]:
    """A JSON list, or JSON Lines (one object per line; blank lines ignored)."""
    text = _read_utf8(path)
    if text.lstrip().startswith("["):
        return _read_json(path)
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: not valid JSON: {e}") from None
    return records


def load_soda(path: str | Path, params: DataParams) -> Corpus:
    """Load SODA records (JSON list or JSONL) into canonical form.

    Each record's ``dialogue`` (utterances) and ``speakers`` (names, same
    length) become turns; the first speaker is the User, the other the AI; a
    record with one speaker or more than two is a bad conversation. SODA has
    no session score: ``score`` and ``score_raw`` are NaN (never a reason to
    skip). ``narrative`` becomes the conversation column ``context`` (the scene
    an RL prompt can open with), with ``head``, ``relation``, ``tail`` and
    ``split``. No timing, no frames. ``convo_id`` is ``soda-%06d`` by position.
    """
    params.validate()
    path = Path(path)
    records = _read_records(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records")
    rows, turns, skipped = [], [], {}
    for i, r in enumerate(records):
        convo_id = f"soda-{i:06d}"
        where = f"{path}: record {i} ({convo_id})"
        try:
            if not isinstance(r, dict):
                raise DataError(f"{where}: expected an object")
            for k in ("dialogue", "speakers"):
                if not isinstance(r.get(k), list):
                    raise DataError(f"{where}, field {k!r}: missing or not a list")
            nameless = [j for j, x in enumerate(r["speakers"]) if not isinstance(x, str) or not x.strip()]
            if nameless:
                j = nameless[0]
                raise DataError(
                    f"{where}, field 'speakers[{j}]': expected a speaker's name, got "
                    f"{json.dumps(r['speakers'][j])} ({len(nameless)} such in the record)"
                )
            utts, spks = r["dialogue"], [x.strip() for x in r["speakers"]]
            if len(utts) != len(spks):
                raise DataError(f"{where}: 'dialogue' has {len(utts)} utterances but 'speakers' has {len(spks)} names")
            bad = [j for j, u in enumerate(utts) if not isinstance(u, str)]
            if bad:
                raise DataError(f"{where}, field 'dialogue[{bad[0]}]': expected text, got {utts[bad[0]]!r}")
            if not utts:
                raise _BadConversation("empty", f"{where}: empty dialogue")
            empty = _empty_texts(np.asarray(utts, dtype=object))
            if empty.all():
                raise _BadConversation("empty", f"{where}: no words in any of its {len(utts)} utterances")
            names = list(dict.fromkeys(spks))
            if len(names) == 1:
                raise _BadConversation("one speaker", f"{where}: only speaker {names[0]!r}")
            if len(names) > 2:
                raise _BadConversation("more than two speakers", f"{where}: speakers {names}")
        except _BadConversation as e:
            _bad(params, skipped, e)
            continue
        is_ai = np.asarray(spks) == names[1]
        texts = [u.strip() for u in utts]
        t = pd.DataFrame(
            {
                "convo_id": convo_id,
                "turn_id": [str(j) for j in range(len(texts))],
                "speaker_id": spks,
                "role": np.where(is_ai, "AI", "User"),
                "is_ai": is_ai,
                "start": np.nan,
                "stop": np.nan,
                "utterance": texts,
                "n_words": _count_words(texts),
                "act": "",
                "true_reward": np.nan,
                "local_feedback": np.nan,
            }
        )
        if params.merge_consecutive:
            t = merge_consecutive(t)
        row = _conversation_row(convo_id, "soda", names[0], names[1], np.nan, np.nan, t, False)
        row.update(context=str(r.get("narrative") or ""), n_empty_utterances=int(empty.sum()))
        row.update({k: str(r.get(k) or "") for k in ("head", "relation", "tail", "split")})
        rows.append(row)
        turns.append(t)
    return _finish("soda", path, rows, turns, skipped)


# --------------------------------------------------------------------------- entry point


def _candor_input_files(root: Path, params: DataParams) -> list[Path]:
    """The files :func:`load_candor` reads (so the cache key ignores e.g. videos beside them)."""
    files = []
    for f in candor_folders(root):
        tdir = f / "transcription"
        names = {f"transcript_{params.segmentation}.csv", "transcript_cliffhanger.csv"}
        files += [tdir / n for n in sorted(names)]
        files += [f / "survey.csv", f / "audio_video_features.csv", f / "simulation_truth.csv"]
    return files


def corpus_cache_folder(params: StudyParams) -> Path:
    """Where :func:`load_corpus` keeps the canonical parquet corpus for ``params``.

    The key covers the loader version, the corpus name, the data parameters and
    the input: the simulation parameters and simulator version for ``simulated``, otherwise the names
    and bytes of the input files (:func:`geli_lib.io.file_key`).
    """
    name = params.corpus
    if name == "simulated":
        from geli_lib.simulation import SIMULATOR_VERSION

        source: Any = {"simulation": to_dict(params.simulation), "simulator_version": SIMULATOR_VERSION}
    else:
        path = Path(params.data_path).expanduser()
        if not path.exists():
            raise DataError(f"{path}: data_path not found (corpus {name!r})")
        if name == "candor":
            files = _candor_input_files(path, params.data)
            rel = [str(p.relative_to(path)) for p in files]
            source = {"files": rel, "bytes": file_key(files)}
        else:
            source = {"files": [path.name], "bytes": file_key([path])}
    key = content_key(LOADER_VERSION, name, to_dict(params.data), source)
    return cache_dir(f"corpora/{name}-{key}")


def load_corpus(params: StudyParams, progress: bool = True, workers: int = 2) -> Corpus:
    """The corpus a study run uses, in canonical form, cached as parquet.

    ``simulated``: the simulator writes the CANDOR layout (plus truth) under
    ``cache_dir('corpora/simulated-<content_key(simulation params)>/raw')`` and
    :func:`load_candor` reads it. ``candor`` / ``esconv`` / ``soda``: the
    matching loader reads ``params.data_path``.

    The result is saved with :meth:`Corpus.save` under
    :func:`corpus_cache_folder`; a later call with the same key loads the
    parquet. ``corpus.json`` is the completeness marker: ``Corpus.save`` writes
    it last (atomically), it is deleted before a rebuild, and only a folder
    that has it is trusted — so an interrupted run leaves nothing a re-run
    would believe.
    """
    folder = corpus_cache_folder(params)
    marker = folder / "corpus.json"
    if marker.is_file():
        corpus = Corpus.load(folder)
        _report_skips(corpus.name, corpus.skipped)
        return corpus
    marker.unlink(missing_ok=True)
    name, data = params.corpus, params.data
    if name == "simulated":
        from geli_lib.simulation import simulate_corpus

        raw = cache_dir(f"corpora/simulated-{content_key(to_dict(params.simulation))}/raw")
        made = simulate_corpus(params.simulation, raw, workers=workers, progress=progress)
        root = Path(made) if isinstance(made, (str, Path)) else raw
        corpus = load_candor(root, data, progress=progress, workers=workers, name="simulated")
    elif name == "candor":
        corpus = load_candor(params.data_path, data, progress=progress, workers=workers)
    elif name == "esconv":
        corpus = load_esconv(params.data_path, data)
    elif name == "soda":
        corpus = load_soda(params.data_path, data)
    else:  # StudyParams.validate already refuses this
        raise DataError(f"unknown corpus {name!r}")
    corpus.save(folder)
    return corpus


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
