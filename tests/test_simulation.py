"""The simulated corpus: CANDOR layout, determinism, the planted truth and its noisy proxies.

Real runs at tiny sizes (each test simulates a handful of short conversations).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geli_lib.core.params import ParamError, SimulationParams, load_params
from geli_lib.corpus.schema import FACE_COLUMNS, PROSODY
from geli_lib.corpus.simulation import (
    ACTS,
    MARKER,
    TOPICS,
    context_fit,
    is_complete,
    simulate_conversation,
    simulate_corpus,
)

TRANSCRIPT_COLUMNS = [
    "turn_id",
    "speaker",
    "start",
    "stop",
    "utterance",
    "interval",
    "delta",
    "questions",
    "end_question",
    "overlap",
    "n_words",
]
BACKCHANNEL_COLUMNS = [
    "backchannel",
    "backchannel_count",
    "backchannel_speaker",
    "backchannel_start",
    "backchannel_stop",
]
FRAME_COLUMNS = [
    "timedelta",
    "user_id",
    "is_speaking",
    "gaze_on",
    "smile",
    "nod_yes",
    "nod_no",
    *FACE_COLUMNS,
    *PROSODY,
]
TRUTH_COLUMNS = ["turn_id", "speaker", "role", "start", "stop", "act", "topic", "true_reward", "fit"]
SURVEY_ITEMS = ["overall_affect", "end_affect", "how_enjoyable", "i_like_you", "conversationalist"]
TINY = dict(n_conversations=4, mean_turns=16, min_turns=10)


def tiny(**kw) -> SimulationParams:
    return SimulationParams(**{**TINY, **kw})


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def conversations(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def read(folder: Path) -> dict[str, pd.DataFrame]:
    out = {
        name: pd.read_csv(folder / "transcription" / f"transcript_{name}.csv")
        for name in ("cliffhanger", "audiophile", "backbiter")
    }
    for name in ("survey", "audio_video_features", "simulation_truth"):
        out[name] = pd.read_csv(folder / f"{name}.csv")
    out["frames"] = out["audio_video_features"].assign(
        t=pd.to_timedelta(out["audio_video_features"]["timedelta"]).dt.total_seconds()
    )
    return out


def listener_turn_happiness(folder: Path) -> pd.DataFrame:
    """Per AI turn: true reward and the listener's mean happiness inside the turn (lag-shifted)."""
    meta = json.loads((folder / "metadata.json").read_text())
    lag = 1.0
    t = read(folder)
    truth, frames = t["simulation_truth"], t["frames"]
    user = frames[frames.user_id == meta["participants"][0]]
    ts, hap = user["t"].to_numpy(), user["prob_face_happiness"].to_numpy()
    rows = []
    for r in truth[truth.role == "AI"].itertuples():
        m = (ts >= r.start + lag) & (ts <= r.stop + lag) & ~np.isnan(hap)
        rows.append((r.true_reward, hap[m].mean() if m.any() else np.nan))
    return pd.DataFrame(rows, columns=["true_reward", "happiness"]).dropna()


def within_corr(root: Path) -> float:
    return float(np.nanmean([listener_turn_happiness(c).corr().iloc[0, 1] for c in conversations(root)]))


# --------------------------------------------------------------------------- #


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = simulate_corpus(tiny(), tmp_path / "a", workers=1, progress=False)
    b = simulate_corpus(tiny(), tmp_path / "b", workers=2, progress=False)
    c = simulate_corpus(tiny(seed=1), tmp_path / "c", workers=2, progress=False)
    files_a, files_b, files_c = all_bytes(a), all_bytes(b), all_bytes(c)
    assert len(files_a) == 4 * 7 + 1
    assert files_a == files_b
    ids = lambda files: {k.split("/")[0] for k in files} - {MARKER}  # noqa: E731
    assert ids(files_a).isdisjoint(ids(files_c)), "a different seed gives different conversations"


def test_signal_knobs_leave_dialogue_and_truth_unchanged():
    _, base = simulate_conversation(tiny(), 0)
    _, noisy = simulate_conversation(tiny(face_noise=3.0), 0)
    for name in ("transcription/transcript_cliffhanger.csv", "simulation_truth.csv", "survey.csv"):
        assert base[name] == noisy[name]
    assert base["audio_video_features.csv"] != noisy["audio_video_features.csv"]
    # sentiment_coupling changes only the tone of the wording, not the acts or the truth
    _, coupled = simulate_conversation(tiny(sentiment_coupling=1.0), 0)
    read_truth = lambda files: pd.read_csv(io.BytesIO(files["simulation_truth.csv"]))  # noqa: E731
    cols = ["act", "true_reward", "fit"]
    pd.testing.assert_frame_equal(read_truth(base)[cols], read_truth(coupled)[cols])


def test_every_file_and_column(tmp_path):
    root = simulate_corpus(tiny(n_conversations=2), tmp_path, workers=1, progress=False)
    for folder in conversations(root):
        t = read(folder)
        assert list(t["cliffhanger"].columns) == TRANSCRIPT_COLUMNS
        assert list(t["audiophile"].columns) == TRANSCRIPT_COLUMNS
        assert list(t["backbiter"].columns) == TRANSCRIPT_COLUMNS + BACKCHANNEL_COLUMNS
        assert list(t["audio_video_features"].columns) == FRAME_COLUMNS
        assert list(t["simulation_truth"].columns)[: len(TRUTH_COLUMNS)] == TRUTH_COLUMNS
        assert {"user_id", "convo_id", *SURVEY_ITEMS, "age", "sex"} <= set(t["survey"].columns)
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["convo_id"] == folder.name and meta["simulated"] is True
        assert {"participants", "duration", "topics", "seed", "index"} <= set(meta)
        assert set(t["survey"]["convo_id"]) == {folder.name}
        assert set(t["survey"]["user_id"]) == set(meta["participants"])
        for item in SURVEY_ITEMS:
            assert t["survey"][item].between(1, 10).all()


def test_transcripts_are_consistent(tmp_path):
    root = simulate_corpus(tiny(n_conversations=3), tmp_path, workers=1, progress=False)
    for folder in conversations(root):
        t = read(folder)
        cl, au, bb = t["cliffhanger"], t["audiophile"], t["backbiter"]
        assert (cl["turn_id"] == np.arange(len(cl))).all() and len(cl) >= 10
        assert (cl["speaker"].to_numpy()[1:] != cl["speaker"].to_numpy()[:-1]).all(), "turns alternate"
        assert (cl["stop"] > cl["start"]).all()
        assert (cl["start"].to_numpy()[1:] >= cl["stop"].to_numpy()[:-1]).all(), "no overlaps"
        assert np.allclose(cl["delta"], cl["stop"] - cl["start"], atol=2e-3)
        assert np.isnan(cl["interval"].iloc[0]) and (cl["interval"].iloc[1:] >= 0).all()
        assert (cl["n_words"] == cl["utterance"].str.split().str.len()).all()
        assert (cl["questions"] == cl["utterance"].str.count(r"\?")).all()
        assert not cl["overlap"].any()
        # audiophile: the same words, one row per sentence, renumbered
        assert (au["turn_id"] == np.arange(len(au))).all() and len(au) >= len(cl)
        assert " ".join(au["utterance"]) == " ".join(cl["utterance"])
        assert au["n_words"].sum() == cl["n_words"].sum()
        assert (au["start"].to_numpy()[1:] >= au["stop"].to_numpy()[:-1]).all()
        # backbiter: the cliffhanger turns plus backchannels inside long turns by the other speaker
        pd.testing.assert_frame_equal(bb[TRANSCRIPT_COLUMNS], cl)
        has = bb["backchannel_count"] > 0
        assert (bb.loc[~has, "backchannel_start"].isna()).all()
        assert (bb.loc[has, "backchannel_speaker"] != bb.loc[has, "speaker"]).all()
        assert (
            (bb.loc[has, "backchannel_start"] >= bb.loc[has, "start"])
            & (bb.loc[has, "backchannel_start"] <= bb.loc[has, "stop"])
        ).all()


def test_frames_cover_both_participants_every_second(tmp_path):
    root = simulate_corpus(tiny(n_conversations=2, frame_dropout=0.2), tmp_path, workers=1, progress=False)
    for folder in conversations(root):
        t = read(folder)
        frames, cl = t["frames"], t["cliffhanger"]
        n_sec = int(np.floor(cl["stop"].iloc[-1])) + 1
        assert frames["user_id"].is_monotonic_increasing
        for _, g in frames.groupby("user_id"):
            assert (g["t"].to_numpy() == np.arange(n_sec)).all()
        face = frames[list(FACE_COLUMNS)]
        missing = face.isna()
        assert (missing.any(axis=1) == missing.all(axis=1)).all(), "a dropped frame loses the whole face"
        assert 0.1 < missing.all(axis=1).mean() < 0.3
        assert np.allclose(face.dropna().sum(axis=1), 1.0, atol=2e-3)
        for col in ("is_speaking", "gaze_on", "smile", "nod_yes", "nod_no"):
            assert set(frames[col].unique()) <= {0, 1}
        assert frames["f0_mean"].between(60, 320).all()
        # is_speaking follows the transcript
        for who, g in frames.groupby("user_id"):
            turns = cl[cl["speaker"] == who]
            inside = np.zeros(len(g), bool)
            for r in turns.itertuples():
                inside |= (g["t"].to_numpy() >= r.start) & (g["t"].to_numpy() < r.stop)
            assert (g["is_speaking"].to_numpy() == inside).all()


def test_first_speaker_is_the_scored_user(tmp_path):
    root = simulate_corpus(tiny(), tmp_path, workers=1, progress=False)
    for folder in conversations(root):
        t = read(folder)
        meta = json.loads((folder / "metadata.json").read_text())
        user = t["cliffhanger"]["speaker"].iloc[0]
        assert meta["participants"][0] == user
        truth = t["simulation_truth"]
        assert list(truth["role"][:4]) == ["User", "AI", "User", "AI"]
        assert (truth["speaker"] == t["cliffhanger"]["speaker"]).all()
        ai = truth[truth["role"] == "AI"]
        assert ai["true_reward"].notna().all() and truth.loc[truth.role == "User", "true_reward"].isna().all()
        assert set(ai["act"]) <= set(ACTS)
        score = t["survey"].set_index("user_id").loc[user, "overall_affect"]
        assert score == meta["truth"]["overall_affect"]
        assert ai["true_reward"].mean() == pytest.approx(meta["truth"]["mean_true_reward"], abs=1e-3)
        assert ai["true_reward"].between(0, 100).all()


def test_true_rewards_explain_the_score(tmp_path):
    root = simulate_corpus(SimulationParams(n_conversations=40), tmp_path, workers=2, progress=False)
    rows = []
    for folder in conversations(root):
        t = read(folder)
        user = t["cliffhanger"]["speaker"].iloc[0]
        ai = t["simulation_truth"]["role"] == "AI"
        rows.append(
            (
                t["simulation_truth"]["true_reward"].mean(),
                10 * t["survey"].set_index("user_id").loc[user, "overall_affect"],
                t["simulation_truth"].loc[ai, "true_reward"].median(),
                ai.sum(),
            )
        )
    mean, score, median, n_ai = np.array(rows).T
    assert np.corrcoef(mean, score)[0, 1] > 0.8  # the score is the mean of the turn rewards + noise
    assert 55 < score.mean() < 90 and score.std() > 8
    # length-free: a turn's reward does not shrink in longer conversations (version 1's 100 p / T did)
    assert n_ai.std() > 3 and abs(np.corrcoef(median, n_ai)[0, 1]) < 0.4


def test_face_happiness_tracks_true_reward_and_face_noise_weakens_it(tmp_path):
    kw = dict(n_conversations=6, mean_turns=60, min_turns=40)
    clean = within_corr(simulate_corpus(SimulationParams(**kw), tmp_path / "a", workers=1, progress=False))
    noisy = within_corr(
        simulate_corpus(SimulationParams(**kw, face_noise=4.0), tmp_path / "b", workers=1, progress=False)
    )
    assert clean > 0.2
    assert noisy < clean - 0.1


def test_placebo_face_is_unrelated_to_the_truth(tmp_path):
    """face_coupling 0: the same conversations, a face that ignores the truth (the placebo of 06)."""
    kw = dict(n_conversations=6, mean_turns=60, min_turns=40)
    root = simulate_corpus(SimulationParams(**kw, face_coupling=0.0), tmp_path, workers=1, progress=False)
    assert abs(within_corr(root)) < 0.1


def test_language_sentiment_is_weak_unless_coupled(tmp_path):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()

    def corr(coupling: float) -> float:
        root = simulate_corpus(
            tiny(n_conversations=6, mean_turns=60, min_turns=40, sentiment_coupling=coupling),
            tmp_path / str(coupling),
            workers=1,
            progress=False,
        )
        rs = []
        for folder in conversations(root):
            t = read(folder)
            ai = t["simulation_truth"]["role"] == "AI"
            text = t["cliffhanger"].loc[ai, "utterance"]
            ls = [vader.polarity_scores(u)["compound"] for u in text]
            rs.append(np.corrcoef(ls, t["simulation_truth"].loc[ai, "true_reward"])[0, 1])
        return float(np.mean(rs))

    weak, strong = corr(0.0), corr(1.0)
    assert abs(weak) < 0.25
    assert strong > weak + 0.15


def test_the_corpus_is_varied():
    assert len(TOPICS) >= 20 and len(ACTS) >= 9
    _, files = simulate_conversation(SimulationParams(mean_turns=160, min_turns=40), 0)
    truth = pd.read_csv(io.BytesIO(files["simulation_truth.csv"]))
    cl = pd.read_csv(io.BytesIO(files["transcription/transcript_cliffhanger.csv"]))
    ai = cl["utterance"][truth["role"] == "AI"]
    assert ai.nunique() / len(ai) > 0.85
    assert truth["topic"].nunique() >= 3
    assert 3.5 < cl["stop"].iloc[-1] / len(cl) < 9, "≈2.5 words/s and short gaps"


def test_context_fit_encodes_the_social_rules():
    after = lambda act, kind, val, long=False: context_fit(act, kind, val, long, ())  # noqa: E731
    assert after("empathy", "story", -1) > after("empathy", "story", 1)
    assert after("humour", "story", 1) > after("humour", "story", -1)
    assert after("backchannel", "story", 0, True) > after("backchannel", "statement", 0, False)
    assert after("self_disclosure", "question", 0) > after("generic_question", "question", 0)


def test_skip_marker_and_resimulation(tmp_path):
    params = tiny()
    simulate_corpus(params, tmp_path, workers=1, progress=False)
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker["params"]["n_conversations"] == 4 and len(marker["convo_ids"]) == 4
    assert is_complete(tmp_path, params)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.csv")}
    t0 = time.perf_counter()
    simulate_corpus(params, tmp_path, workers=1, progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.csv")} == before

    # a changed knob re-simulates; fewer conversations leave no stale folders behind
    changed = tiny(n_conversations=2, face_noise=2.0)
    assert not is_complete(tmp_path, changed)
    simulate_corpus(changed, tmp_path, workers=1, progress=False)
    assert is_complete(tmp_path, changed) and not is_complete(tmp_path, params)
    assert len(conversations(tmp_path)) == 2

    # an interrupted run (no marker) is not trusted; foreign folders are left alone
    (tmp_path / "notes").mkdir()
    (tmp_path / MARKER).unlink()
    assert not is_complete(tmp_path, changed)
    simulate_corpus(changed, tmp_path, workers=1, progress=False)
    assert (tmp_path / "notes").is_dir() and is_complete(tmp_path, changed)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_conversations": 0},
        {"min_turns": 2},
        {"mean_turns": 5, "min_turns": 10},
        {"face_noise": -1.0},
        {"frame_dropout": 1.5},
        {"sentiment_coupling": -0.1},
        {"listener_mood_mean": 9.0},
        {"unknown_knob": 1},
    ],
)
def test_invalid_params_raise(bad):
    with pytest.raises(ParamError, match="simulation"):
        load_params("smoke", simulation=bad)


def test_simulate_corpus_validates_params(tmp_path):
    with pytest.raises(ParamError, match="score_noise"):
        simulate_corpus(SimulationParams(score_noise=-1.0), tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
