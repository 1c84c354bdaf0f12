"""turn_listener_summary: the listener's frames aggregated per AI turn (GELI eq. 7)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fixtures import write_candor, write_esconv
from geli_lib.data import load_candor, load_esconv
from geli_lib.features import SUMMARY_COLUMNS, turn_listener_summary
from geli_lib.params import DataParams
from geli_lib.schema import EMOTIONS, FACE_COLUMNS, Corpus


@pytest.fixture(scope="module")
def candor_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("candor")
    specs = write_candor(root, 3)
    return load_candor(root, DataParams(), progress=False), specs


def _naive(corpus: Corpus, min_words: int = 5) -> pd.DataFrame:
    """A slow, obvious reference: one boolean mask per turn."""
    rows = []
    for t in corpus.turns[corpus.turns["is_ai"]].itertuples():
        f = corpus.frames[(corpus.frames["convo_id"] == t.convo_id)
                          & (corpus.frames["t"] >= t.start) & (corpus.frames["t"] <= t.stop)]
        face = f[list(FACE_COLUMNS)].dropna()
        votes = pd.Series(np.asarray(EMOTIONS)[face.to_numpy().argmax(1)]).value_counts()
        top = votes.index[0] if len(votes) else ""
        if len(votes) and (votes == votes.iloc[0]).sum() > 1:  # tie: first in EMOTIONS order
            top = next(e for e in EMOTIONS if votes.get(e, 0) == votes.iloc[0])
        rows.append({"convo_id": t.convo_id, "turn_idx": t.turn_idx, "n_frames": len(f),
                     "n_face_frames": len(face), "top_emotion": top,
                     "happiness_mean": face["prob_face_happiness"].mean(),
                     "smile_mean": f["smile"].mean(), "gaze_mean": f["gaze_on"].mean(),
                     "va_label": int(top == "happiness" and t.n_words > min_words and len(face) > 0)})
    return pd.DataFrame(rows)


def test_summary_matches_naive_reference(candor_corpus):
    corpus, _ = candor_corpus
    s = turn_listener_summary(corpus)
    assert list(s.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    ref = _naive(corpus)
    assert len(s) == len(ref) == int(corpus.turns["is_ai"].sum())
    for col in ("convo_id", "turn_idx", "n_frames", "n_face_frames", "top_emotion", "va_label"):
        assert list(s[col]) == list(ref[col]), col
    for col in ("happiness_mean", "smile_mean", "gaze_mean"):
        np.testing.assert_allclose(s[col], ref[col], rtol=1e-9, err_msg=col)
    assert {"f0_mean_mean", "jitter_mean"} <= set(s.columns)


def test_va_label_follows_the_planted_happiness(candor_corpus):
    corpus, specs = candor_corpus
    s = turn_listener_summary(corpus)
    for cid, spec in specs.items():
        got = s[s["convo_id"] == cid].set_index("turn_idx")
        base = spec["turns"]
        for i in got.index:
            if base.loc[i, "n_words"] <= 5:
                assert got.loc[i, "va_label"] == 0 and got.loc[i, "va_reason"] == "short"
            else:
                assert got.loc[i, "va_reason"] == ""
                assert got.loc[i, "va_label"] == int(spec["happy"][i]), (cid, i)
    assert (s["va_reason"] == "short").any()


def _tiny_corpus(frames: pd.DataFrame, turns: list[tuple[float, float, int]]) -> Corpus:
    """One conversation: listener "L", AI "A"; AI turns at the given (start, stop, n_words)."""
    rows = []
    for i, (a, b, w) in enumerate(turns):
        rows.append({"turn_idx": 2 * i, "speaker_id": "L", "role": "User", "is_ai": False,
                     "start": a - 1, "stop": a - 0.5, "n_words": 3})
        rows.append({"turn_idx": 2 * i + 1, "speaker_id": "A", "role": "AI", "is_ai": True,
                     "start": a, "stop": b, "n_words": w})
    t = pd.DataFrame(rows)
    t["convo_id"], t["turn_id"] = "c0", t["turn_idx"].astype(str)
    t["utterance"] = [" ".join(["w"] * n) for n in t["n_words"]]
    t["act"], t["true_reward"], t["local_feedback"] = "", np.nan, np.nan
    conv = pd.DataFrame([{"convo_id": "c0", "corpus": "x", "listener_id": "L", "ai_id": "A",
                          "score": 50.0, "score_raw": 5.0, "n_turns": len(t),
                          "n_ai_turns": len(turns), "duration": 20.0, "has_truth": False}])
    frames = frames.assign(convo_id="c0")
    for col in ("is_speaking", "gaze_on", "smile", "nod_yes", "nod_no", *FACE_COLUMNS):
        if col not in frames:
            frames[col] = np.nan
    return Corpus("x", conv, t, frames)


def _faces(emotions: list[str | None]) -> np.ndarray:
    out = np.full((len(emotions), len(EMOTIONS)), 0.05)
    for i, e in enumerate(emotions):
        if e is None:
            out[i] = np.nan
        else:
            out[i, EMOTIONS.index(e)] = 0.65
    return out


def test_forced_zeros_ties_and_missing_signals():
    emos = ["neutral", "happiness", "happiness", "neutral",   # t 0-3: a 2-2 tie
            None, None,                                       # t 4-5: no face
            "happiness", "happiness", "anger"]                # t 6-8
    frames = pd.DataFrame(_faces(emos), columns=list(FACE_COLUMNS))
    frames["t"] = np.arange(len(emos), dtype=float)
    frames["user_id"] = "L"
    frames["nod_yes"] = [0, 1, 0, 0, np.nan, np.nan, np.nan, np.nan, np.nan]
    # the AI's own frames must be ignored
    other = frames.assign(user_id="A", prob_face_happiness=0.0)
    corpus = _tiny_corpus(pd.concat([frames, other]), [
        (0.0, 3.0, 10),    # tie happiness/neutral -> happiness (first in EMOTIONS)
        (4.0, 5.0, 10),    # frames, no face
        (6.0, 8.0, 3),     # happy, but short
        (6.0, 8.0, 6),     # happy, 6 words
        (12.0, 14.0, 10),  # no frames at all
    ])
    s = turn_listener_summary(corpus).set_index("turn_idx")
    assert list(s["n_frames"]) == [4, 2, 3, 3, 0]
    assert list(s["n_face_frames"]) == [4, 0, 3, 3, 0]
    assert list(s["top_emotion"]) == ["happiness", "", "happiness", "happiness", ""]
    assert list(s["va_label"]) == [1, 0, 0, 1, 0]
    assert list(s["va_reason"]) == ["", "no_face", "short", "", "no_frames"]
    assert s.loc[1, "happiness_mean"] == pytest.approx(0.35)
    assert np.isnan(s.loc[3, "happiness_mean"]) and np.isnan(s.loc[9, "smile_mean"])
    # nod_yes: any nod in the window; NA (not False) when the window has no nod data
    assert s.loc[1, "nod_yes_any"] is np.True_ or s.loc[1, "nod_yes_any"] == True  # noqa: E712
    assert pd.isna(s.loc[3, "nod_yes_any"]) and pd.isna(s.loc[9, "nod_yes_any"])
    assert turn_listener_summary(corpus, min_words=2).loc[2, "va_label"] == 1


def test_corpus_without_timing_gives_empty_summary(tmp_path):
    corpus = load_esconv(write_esconv(tmp_path / "e.json"), DataParams())
    s = turn_listener_summary(corpus)
    assert s.empty and list(s.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)


def test_summary_speed():
    """CANDOR scale: ~1.6M listener frames and ~130k AI turns in a few seconds."""
    rng = np.random.default_rng(0)
    n_conv, n_sec, n_ai = 800, 2000, 80
    cids = np.array([f"c{k:04d}" for k in range(n_conv)], dtype=object)
    frames = pd.DataFrame(rng.random((n_conv * n_sec, len(FACE_COLUMNS))), columns=list(FACE_COLUMNS))
    frames.insert(0, "t", np.tile(np.arange(n_sec, dtype=float), n_conv))
    frames.insert(0, "user_id", "L")
    frames.insert(0, "convo_id", np.repeat(cids, n_sec))
    for col in ("is_speaking", "gaze_on", "smile", "nod_yes", "nod_no"):
        frames[col] = rng.random(len(frames))
    starts = np.tile(np.arange(n_ai) * 24.0, n_conv)
    turns = pd.DataFrame({"convo_id": np.repeat(cids, n_ai), "turn_idx": np.tile(np.arange(n_ai), n_conv),
                          "turn_id": "0", "speaker_id": "A", "role": "AI", "is_ai": True,
                          "start": starts, "stop": starts + 10.0, "utterance": "w w w w w w",
                          "n_words": 6, "act": "", "true_reward": np.nan, "local_feedback": np.nan})
    conv = pd.DataFrame({"convo_id": cids, "corpus": "x", "listener_id": "L", "ai_id": "A",
                         "score": 50.0, "score_raw": 5.0, "n_turns": n_ai, "n_ai_turns": n_ai,
                         "duration": float(n_sec), "has_truth": False})
    corpus = Corpus("x", conv, turns, frames)
    t0 = time.perf_counter()
    s = turn_listener_summary(corpus)
    elapsed = time.perf_counter() - t0
    assert len(s) == n_conv * n_ai and (s["n_frames"] == 11).all()
    assert elapsed < 10, elapsed
