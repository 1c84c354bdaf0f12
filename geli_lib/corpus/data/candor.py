"""The CANDOR loader (its folder layout; the simulated corpus is written in it too)."""

from __future__ import annotations

import math
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from geli_lib.core.io import progress_bar
from geli_lib.core.params import DataParams
from geli_lib.corpus.data.common import (
    Columns,
    DataError,
    _bad,
    _BadConversation,
    _concat,
    _conversation_row,
    _count_words,
    _frame,
    _header,
    _merge_columns,
    _numeric,
    _parse_seconds,
    _read_csv,
    _report_anomalies,
    _report_skips,
    _text,
    _where,
    logger,
)
from geli_lib.corpus.schema import FACE_COLUMNS, PROSODY, Corpus

#: Below this many conversations a process pool costs more to start than it saves.
_POOL_MIN_CONVERSATIONS = 32


TRANSCRIPT_REQUIRED = ("turn_id", "speaker", "start", "stop", "utterance")


SURVEY_REQUIRED = ("user_id",)  # plus DataParams.score_item


FEATURES_REQUIRED = ("user_id", "timedelta", "is_speaking", "gaze_on", *FACE_COLUMNS)


FEATURES_OPTIONAL = ("smile", "nod_yes", "nod_no", *PROSODY)


TRUTH_REQUIRED = ("turn_id", "speaker", "start", "stop", "act", "true_reward")


#: Frame columns that are probabilities or indicators and must lie in [0, 1].
UNIT_INTERVAL_COLUMNS = ("is_speaking", "gaze_on", "smile", "nod_yes", "nod_no", *FACE_COLUMNS)


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
      absent; prosodic columns named in :data:`~geli_lib.corpus.schema.PROSODY` are
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
