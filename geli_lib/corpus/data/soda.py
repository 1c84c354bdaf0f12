"""The SODA loader (JSON lines of dialogues)."""

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
    merge_consecutive,
)
from geli_lib.corpus.data.esconv import _finish, _read_json, _read_utf8
from geli_lib.corpus.schema import Corpus

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
