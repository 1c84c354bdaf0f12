"""The ESConv loader (one JSON file of sessions, the survey's ratings as score)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geli_lib.core.params import DataParams
from geli_lib.corpus.data.candor import _empty_texts
from geli_lib.corpus.data.common import (
    DataError,
    _bad,
    _BadConversation,
    _conversation_row,
    _count_words,
    _number_turns,
    _report_anomalies,
    _report_skips,
    merge_consecutive,
)
from geli_lib.corpus.schema import Corpus

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
