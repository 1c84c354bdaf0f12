"""What every loader shares: its errors, reading CSV fast, turn merging, the skip and anomaly reports."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from geli_lib.core.params import DataParams

logger = logging.getLogger(__name__)


#: Per-conversation counts of kept but suspicious input (see the module docstring): column ->
#: what the warning says of a count.
ANOMALY_COLUMNS: dict[str, str] = {
    "n_empty_utterances": "turn(s) with an empty or whitespace-only utterance (kept, with no words)",
    "no_face_in_any_frame": "conversation(s) without a face in any listener frame (no visual affect at all)",
    "f0_missing_codes": "f0_mean value(s) below 0 Hz, missing-value codes such as -999999 (read as missing)",
}


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
    :func:`~geli_lib.corpus.schema.conform` fixes the final dtypes once, on the whole corpus.
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
