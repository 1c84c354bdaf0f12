"""One conversation end to end, in CANDOR's files."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from geli_lib.core.params import SimulationParams
from geli_lib.corpus.simulation.common import EXPRESSIVENESS_SD, _hex_id, _sigmoid, _smooth_noise
from geli_lib.corpus.simulation.dialogue import (
    Listener,
    draw_listener,
    draw_persona,
    n_turns_for,
    simulate_dialogue,
    turn_times,
)
from geli_lib.corpus.simulation.render import (
    _survey_items,
    _timedelta_strings,
    _transcript_columns,
    audiophile_rows,
    backchannel_columns,
    csv_bytes,
)
from geli_lib.corpus.simulation.signals import participant_signals, reaction_levels, speaking_mask

#: Bump when the generative model changes, so an old simulation is not trusted.
SIMULATOR_VERSION = 2


# --------------------------------------------------------------------------- #
# One conversation end to end                                                  #
# --------------------------------------------------------------------------- #


def _streams(params: SimulationParams, index: int) -> dict[str, np.random.Generator]:
    """Independent generators per stage, keyed by (seed, index, stage)."""
    names = ("ids", "people", "dialogue", "reward", "timing", "signals", "survey")
    return {n: np.random.default_rng([params.seed, index, k]) for k, n in enumerate(names)}


def simulate_conversation(params: SimulationParams, index: int) -> tuple[str, dict[str, Any]]:
    """Simulate conversation ``index``: returns its id and its files (relative path -> bytes or dict).

    Pure: no file is written. ``metadata.json`` is returned as a dict.
    """
    rng = _streams(params, index)
    convo_id = str(
        uuid.UUID(int=int(rng["ids"].integers(0, 2**63)) << 64 | int(rng["ids"].integers(0, 2**63)), version=4)
    )
    user_id, ai_id = _hex_id(rng["ids"], 24), _hex_id(rng["ids"], 24)

    listener, persona = draw_listener(params, rng["people"]), draw_persona(rng["people"])
    n_turns = n_turns_for(params, rng["people"])
    d = simulate_dialogue(params, n_turns, listener, persona, rng["dialogue"])

    # The planted truth: pleasantness, each AI turn's reward on the score scale, the score their mean.
    is_ai = np.array([r == "AI" for r in d.roles])
    quality = np.array(d.quality)
    p = np.where(is_ai, _sigmoid(listener.mood + np.nan_to_num(quality)), np.nan)
    true_reward = np.where(is_ai, 100.0 * p, np.nan)
    total = float(np.nanmean(true_reward))
    score = int(np.clip(round((total + rng["reward"].normal(0, params.score_noise)) / 10), 1, 10))

    texts = d.texts
    n_words = np.array([len(t.split()) for t in texts], dtype=float)
    start, stop = turn_times(n_words, is_ai, rng["timing"])
    speakers = [ai_id if a else user_id for a in is_ai]

    files: dict[str, Any] = {}
    cliff = _transcript_columns(speakers, start, stop, texts)
    files["transcription/transcript_cliffhanger.csv"] = csv_bytes(cliff)
    files["transcription/transcript_audiophile.csv"] = csv_bytes(audiophile_rows(speakers, start, stop, texts))
    files["transcription/transcript_backbiter.csv"] = csv_bytes(
        {**cliff, **backchannel_columns((user_id, ai_id), is_ai, start, stop, p, rng["timing"])}
    )

    files["audio_video_features.csv"] = _frames_csv(
        params, listener, start, stop, is_ai, p, np.array(d.valence), user_id, ai_id, rng["signals"]
    )

    srv = rng["survey"]
    ai_score = int(np.clip(round(srv.normal(7.4, 1.8)), 1, 10))
    rows = [
        {"user_id": user_id, "convo_id": convo_id, **_survey_items(score, srv)},
        {"user_id": ai_id, "convo_id": convo_id, **_survey_items(ai_score, srv)},
    ]
    if srv.random() < 0.5:  # real survey rows come in no particular order
        rows.reverse()
    files["survey.csv"] = csv_bytes({k: [r[k] for r in rows] for k in rows[0]})

    files["simulation_truth.csv"] = csv_bytes(
        {
            "turn_id": np.arange(n_turns, dtype=np.int64),
            "speaker": speakers,
            "role": d.roles,
            "start": start,
            "stop": stop,
            "act": d.acts,
            "topic": d.topics,
            "true_reward": np.round(true_reward, 6),
            "fit": np.round(np.array(d.fit), 4),
            "pleasantness": np.round(p, 6),
            "valence": np.array(d.valence),
            "tone": np.array(d.tone),
        }
    )
    files["metadata.json"] = {
        "convo_id": convo_id,
        "participants": [user_id, ai_id],
        "duration": float(stop[-1]),
        "topics": list(dict.fromkeys(d.topics)),
        "simulated": True,
        "seed": params.seed,
        "index": index,
        "simulator_version": SIMULATOR_VERSION,
        "truth": {
            "listener_mood": round(listener.mood, 6),
            "ai_skill": round(persona.skill, 6),
            "ai_habits": {a: round(v, 6) for a, v in persona.habits.items()},
            "listener_taste": {a: round(v, 6) for a, v in listener.taste.items()},
            "mean_true_reward": round(total, 6),
            "overall_affect": score,
        },
    }
    return convo_id, files


def _frames_csv(
    params: SimulationParams,
    listener: Listener,
    start: np.ndarray,
    stop: np.ndarray,
    is_ai: np.ndarray,
    p: np.ndarray,
    valence: np.ndarray,
    user_id: str,
    ai_id: str,
    rng: np.random.Generator,
) -> bytes:
    """audio_video_features.csv: one row per second per participant, sorted by user_id then time."""
    n_sec = int(math.floor(stop[-1])) + 1
    t = np.arange(n_sec, dtype=float)
    # The listener reacts to AI turns through their pleasantness, and shows the
    # valence of their own news while telling it.
    own = 2 * _sigmoid(listener.mood + 0.9 * np.nan_to_num(valence)) - 1
    level = np.where(is_ai, 2 * np.nan_to_num(p) - 1, own)
    s_user = reaction_levels(t, start, level, params.reaction_lag, 2 * _sigmoid(listener.mood) - 1)
    # The AI participant: its own slowly drifting mood, unrelated to the truth.
    ai_mood = rng.normal(0.8, 0.6)
    s_ai = 2 * _sigmoid(ai_mood + _smooth_noise(rng, n_sec, 1, 0.8)[:, 0]) - 1
    f0 = rng.uniform(110, 220, size=2)
    blocks = {
        user_id: participant_signals(
            s_user,
            speaking_mask(t, start, stop, ~is_ai),
            listener.expressiveness,
            f0[0],
            params,
            rng,
            params.face_coupling,
        ),
        ai_id: participant_signals(
            s_ai, speaking_mask(t, start, stop, is_ai), rng.normal(0, EXPRESSIVENESS_SD), f0[1], params, rng, 2.0
        ),
    }
    order = sorted(blocks)
    td = _timedelta_strings(n_sec)
    cols: dict[str, Any] = {
        "timedelta": pa.concat_arrays([td, td]),
        "user_id": pa.array([order[0]] * n_sec + [order[1]] * n_sec),
    }
    for c in blocks[user_id]:
        cols[c] = np.concatenate([blocks[order[0]][c], blocks[order[1]][c]])
    return csv_bytes(cols, quote_strings=False)
