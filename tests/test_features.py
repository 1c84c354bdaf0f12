"""turn_listener_summary: the listener's frames aggregated per AI turn (GELI eq. 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures import write_candor, write_esconv

from geli_lib.core.compute import free_port, loopback_cluster
from geli_lib.core.params import DataParams
from geli_lib.corpus.data import load_candor, load_esconv
from geli_lib.corpus.schema import EMOTIONS, FACE_COLUMNS, Corpus
from geli_lib.listener.features import SUMMARY_COLUMNS, turn_listener_summary


@pytest.fixture(scope="module")
def candor_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("candor")
    specs = write_candor(root, 3)
    return load_candor(root, DataParams(), progress=False), specs


def _naive(corpus: Corpus, min_words: int = 5) -> pd.DataFrame:
    """A slow, obvious reference: one boolean mask per turn."""
    rows = []
    for t in corpus.turns[corpus.turns["is_ai"]].itertuples():
        f = corpus.frames[
            (corpus.frames["convo_id"] == t.convo_id) & (corpus.frames["t"] >= t.start) & (corpus.frames["t"] <= t.stop)
        ]
        face = f[list(FACE_COLUMNS)].dropna()
        votes = pd.Series(np.asarray(EMOTIONS)[face.to_numpy().argmax(1)]).value_counts()
        top = votes.index[0] if len(votes) else ""
        if len(votes) and (votes == votes.iloc[0]).sum() > 1:  # tie: first in EMOTIONS order
            top = next(e for e in EMOTIONS if votes.get(e, 0) == votes.iloc[0])
        rows.append(
            {
                "convo_id": t.convo_id,
                "turn_idx": t.turn_idx,
                "n_frames": len(f),
                "n_face_frames": len(face),
                "top_emotion": top,
                "happiness_mean": face["prob_face_happiness"].mean(),
                "smile_mean": f["smile"].mean(),
                "gaze_mean": f["gaze_on"].mean(),
                "va_label": int(top == "happiness" and t.n_words > min_words and len(face) > 0),
            }
        )
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
        rows.append(
            {
                "turn_idx": 2 * i,
                "speaker_id": "L",
                "role": "User",
                "is_ai": False,
                "start": a - 1,
                "stop": a - 0.5,
                "n_words": 3,
            }
        )
        rows.append(
            {"turn_idx": 2 * i + 1, "speaker_id": "A", "role": "AI", "is_ai": True, "start": a, "stop": b, "n_words": w}
        )
    t = pd.DataFrame(rows)
    t["convo_id"], t["turn_id"] = "c0", t["turn_idx"].astype(str)
    t["utterance"] = [" ".join(["w"] * n) for n in t["n_words"]]
    t["act"], t["true_reward"], t["local_feedback"] = "", np.nan, np.nan
    conv = pd.DataFrame(
        [
            {
                "convo_id": "c0",
                "corpus": "x",
                "listener_id": "L",
                "ai_id": "A",
                "score": 50.0,
                "score_raw": 5.0,
                "n_turns": len(t),
                "n_ai_turns": len(turns),
                "duration": 20.0,
                "has_truth": False,
            }
        ]
    )
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
    emos = [
        "neutral",
        "happiness",
        "happiness",
        "neutral",  # t 0-3: a 2-2 tie
        None,
        None,  # t 4-5: no face
        "happiness",
        "happiness",
        "anger",
    ]  # t 6-8
    frames = pd.DataFrame(_faces(emos), columns=list(FACE_COLUMNS))
    frames["t"] = np.arange(len(emos), dtype=float)
    frames["user_id"] = "L"
    frames["nod_yes"] = [0, 1, 0, 0, np.nan, np.nan, np.nan, np.nan, np.nan]
    # the AI's own frames must be ignored
    other = frames.assign(user_id="A", prob_face_happiness=0.0)
    corpus = _tiny_corpus(
        pd.concat([frames, other]),
        [
            (0.0, 3.0, 10),  # tie happiness/neutral -> happiness (first in EMOTIONS)
            (4.0, 5.0, 10),  # frames, no face
            (6.0, 8.0, 3),  # happy, but short
            (6.0, 8.0, 6),  # happy, 6 words
            (12.0, 14.0, 10),  # no frames at all
        ],
    )
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


def test_summary_at_candor_scale():
    """CANDOR scale: ~1.6M listener frames and ~130k AI turns, each turn summarised over its frames. Its time is
    benchmarks/bench_data.py's (target < 10 s)."""
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
    turns = pd.DataFrame(
        {
            "convo_id": np.repeat(cids, n_ai),
            "turn_idx": np.tile(np.arange(n_ai), n_conv),
            "turn_id": "0",
            "speaker_id": "A",
            "role": "AI",
            "is_ai": True,
            "start": starts,
            "stop": starts + 10.0,
            "utterance": "w w w w w w",
            "n_words": 6,
            "act": "",
            "true_reward": np.nan,
            "local_feedback": np.nan,
        }
    )
    conv = pd.DataFrame(
        {
            "convo_id": cids,
            "corpus": "x",
            "listener_id": "L",
            "ai_id": "A",
            "score": 50.0,
            "score_raw": 5.0,
            "n_turns": n_ai,
            "n_ai_turns": n_ai,
            "duration": float(n_sec),
            "has_truth": False,
        }
    )
    s = turn_listener_summary(Corpus("x", conv, turns, frames))
    assert len(s) == n_conv * n_ai and (s["n_frames"] == 11).all()


def test_new_columns_nod_no_pitch_slope_and_2s_label():
    # t 0-5: happy face, except a single neutral-spike second at t=3 that the 2-s smoothing removes
    emos = ["neutral", "neutral", "happiness", "neutral", "happiness", "happiness"]
    face = _faces(emos)
    face[3] = face[2] * 0.0 + 0.05
    face[3, EMOTIONS.index("neutral")] = 0.4  # weakly neutral: the 2-s mean with t=2 stays happy
    face[3, EMOTIONS.index("happiness")] = 0.3
    frames = pd.DataFrame(face, columns=list(FACE_COLUMNS))
    frames["t"] = np.arange(6, dtype=float)
    frames["user_id"] = "L"
    frames["nod_no"] = [0, 0, 0, 1, 0, 0]
    frames["f0_mean"] = 100.0 + 10.0 * frames["t"]  # rising 10 Hz/s
    corpus = _tiny_corpus(frames, [(0.0, 1.0, 10), (2.0, 5.0, 10)])
    s = turn_listener_summary(corpus).set_index("turn_idx")
    assert list(s["nod_no_any"]) == [False, True]
    np.testing.assert_allclose(s["f0_slope"], [10.0, 10.0])
    # frame-wise votes for the second turn: happy, neutral, happy, happy -> happy either way;
    # first turn: neutral, neutral -> neutral; smoothing cannot invent happiness there
    assert list(s["top_emotion_2s"]) == ["neutral", "happiness"]
    assert list(s["va_label_2s"]) == [0, 1]


def test_2s_smoothing_changes_a_flickering_window():
    # alternating strong neutral / weak happy seconds: frame-wise mode is a tie -> happiness (first
    # in EMOTIONS), but the 2-s means are dominated by the strong neutral seconds
    emos = ["neutral", "happiness"] * 3
    face = _faces(emos)
    face[0::2, EMOTIONS.index("neutral")] = 0.9
    face[1::2, EMOTIONS.index("happiness")] = 0.3
    frames = pd.DataFrame(face, columns=list(FACE_COLUMNS))
    frames["t"] = np.arange(6, dtype=float)
    frames["user_id"] = "L"
    s = turn_listener_summary(_tiny_corpus(frames, [(0.0, 5.0, 10)])).iloc[0]
    assert s["top_emotion"] == "happiness" and s["va_label"] == 1
    assert s["top_emotion_2s"] == "neutral" and s["va_label_2s"] == 0


def test_describe_listener_words_follow_the_columns():
    from geli_lib.listener.features import NO_FACE, NO_VIDEO, describe_listener

    base = {
        "start": 0.0,
        "stop": 10.0,
        "n_frames": 10,
        "n_face_frames": 10,
        "top_emotion": "happiness",
        **{c: 0.05 for c in FACE_COLUMNS},
        "prob_face_happiness": 0.62,
        "smile_mean": 0.7,
        "gaze_mean": 0.6,
        "nod_yes_any": True,
        "nod_no_any": False,
        "f0_mean_mean": 150.0,
        "f0_slope": 1.5,
    }
    rows = pd.DataFrame(
        [
            base,
            {
                **base,
                "smile_mean": 0.2,
                "top_emotion": "neutral",
                "prob_face_neutral": 0.8,
                "nod_yes_any": False,
                "gaze_mean": 1.0,
                "f0_slope": -1.5,
            },
            {**base, "smile_mean": 0.0, "nod_yes_any": pd.NA, "nod_no_any": pd.NA, "f0_slope": 0.1},
            {**base, "n_frames": 0, "n_face_frames": 0, "top_emotion": ""},
            {
                **base,
                "n_face_frames": 0,
                "top_emotion": "",
                "smile_mean": np.nan,
                "gaze_mean": np.nan,
                "nod_yes_any": pd.NA,
                "nod_no_any": pd.NA,
                "f0_slope": np.nan,
            },
        ],
        index=[7, 8, 9, 10, 11],
    )
    d = describe_listener(rows)
    assert list(d.index) == [7, 8, 9, 10, 11]
    assert d[7] == "listener smiled, mostly happy (0.62), nodded, looked away 40% of the time, pitch rising"
    assert d[8] == (
        "listener smiled briefly, mostly neutral (0.80), no head nods, kept looking at the screen, pitch falling"
    )
    assert d[9] == ("listener did not smile, mostly happy (0.62), looked away 40% of the time, pitch steady")
    assert d[10] == NO_VIDEO and d[11] == NO_FACE


def test_describe_listener_on_a_loaded_corpus(candor_corpus):
    from geli_lib.listener.features import describe_listener

    corpus, _ = candor_corpus
    s = turn_listener_summary(corpus)
    d = describe_listener(s)
    assert d.index.equals(s.index) and d.str.len().min() > 10
    happy = s["top_emotion"] == "happiness"
    assert d[happy].str.contains("mostly happy").all() and not d[~happy].str.contains("mostly happy").any()


# --------------------------------------------------------------------------- recordings -> features -> corpus

from geli_lib.core.params import FeatureParams  # noqa: E402
from geli_lib.listener import features as FT  # noqa: E402
from geli_lib.listener.face import sample_faces, write_face_clip  # noqa: E402
from geli_lib.listener.prosody import write_tone  # noqa: E402

LISTENER_MOTIONS = ["still", "still", "nod", "nod", "still", "still"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """c1/L: the smiling astronaut nodding, with a 5-s 200 Hz voice (1 s shorter than the video);
    c1/A: Grace Hopper, not smiling, no audio at all; c1/broken.mp4: not a video."""
    root = tmp_path_factory.mktemp("recordings")
    faces = sample_faces()
    write_face_clip(faces["astronaut"], root / "c1" / "L.avi", LISTENER_MOTIONS)
    write_tone(root / "c1" / "L.wav", 200.0, 5.0, harmonics=6)
    write_face_clip(faces["grace_hopper"], root / "c1" / "A.avi", ["still"] * 4)
    (root / "c1" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    out = tmp_path_factory.mktemp("features")
    rc = FT.main([str(root), str(out), "--workers", "2", "--no-progress"])
    return root, out, rc


def test_cli_keeps_good_files_and_reports_the_bad_one(recordings):
    root, out, rc = recordings
    assert rc == 1  # one file failed
    rep = json.loads((out / "features_report.json").read_text())
    assert rep["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    ((bad, err),) = rep["failed"].items()
    assert bad.endswith("broken.mp4") and "VideoError" in err and "broken.mp4" in err
    assert (out / "c1" / "L.csv").is_file() and (out / "c1" / "A.csv").is_file()
    assert not (out / "c1" / "broken.csv").exists()
    warns = rep["warnings"]
    assert any("no audio" in w for w in warns[str(root / "c1" / "A.avi")])
    assert any("differ in length" in w for w in warns[str(root / "c1" / "L.avi")])


def test_listener_rows_follow_the_recording(recordings):
    _, out, _ = recordings
    df = pd.read_csv(out / "c1" / "L.csv")
    assert list(df.columns) == list(FT.OUTPUT_COLUMNS)
    assert len(df) == len(LISTENER_MOTIONS) and (df["user_id"] == "L").all()
    assert list(pd.to_timedelta(df["timedelta"]).dt.total_seconds()) == [0, 1, 2, 3, 4, 5]
    top = df[list(FACE_COLUMNS)].to_numpy().argmax(axis=1)
    assert (np.asarray(EMOTIONS)[top] == "happiness").all()
    assert (df["smile"] >= 0.6).all() and (df["prob_face_contempt"] == 0).all()
    assert list(df["nod_yes"]) == [float(m == "nod") for m in LISTENER_MOTIONS]
    f0 = df["f0_mean"].to_numpy()
    assert np.all(np.abs(f0[:5] / 200.0 - 1) < 0.02) and np.isnan(f0[5])  # audio ends at 5 s
    assert (df["is_speaking"][:5] > 0.9).all()
    report = json.loads((out / "c1" / "L.json").read_text())
    assert report["seconds_without_audio"] == 1 and report["seconds_without_face"] == 0
    assert "contempt" in report and "absent" in report["contempt"]
    hopper = pd.read_csv(out / "c1" / "A.csv")
    top = hopper[list(FACE_COLUMNS)].to_numpy().argmax(axis=1)
    assert not (np.asarray(EMOTIONS)[top] == "happiness").any()
    assert (hopper["smile"] < 0.5).all() and hopper["f0_mean"].isna().all()


def test_folder_becomes_a_candor_corpus_the_real_loader_reads(recordings, tmp_path):
    import shutil

    _, out, _ = recordings
    corpus_root = tmp_path / "corpus"
    convo = corpus_root / "c1"
    convo.mkdir(parents=True)
    shutil.copy(out / "c1" / "audio_video_features.csv", convo / "audio_video_features.csv")
    (convo / "transcription").mkdir()
    pd.DataFrame(
        {
            "turn_id": ["t0", "t1", "t2", "t3"],
            "speaker": ["L", "A", "L", "A"],
            "start": [0.0, 0.5, 1.9, 2.0],
            "stop": [0.4, 1.8, 1.95, 4.0],
            "utterance": [
                "hi",
                "so tell me about your trip to the moon",
                "yes",
                "what was the best part of floating up there",
            ],
        }
    ).to_csv(convo / "transcription" / "transcript_cliffhanger.csv", index=False)
    pd.DataFrame({"user_id": ["L", "A"], "overall_affect": [8, 6]}).to_csv(convo / "survey.csv", index=False)
    corpus = load_candor(corpus_root, DataParams(), progress=False)
    assert len(corpus.frames) == len(LISTENER_MOTIONS) and (corpus.frames["user_id"] == "L").all()
    s = turn_listener_summary(corpus)
    assert list(s["top_emotion"]) == ["happiness", "happiness"] and list(s["va_label"]) == [1, 1]
    d = FT.describe_listener(s)
    assert d.iloc[0].startswith("listener smiled, mostly happy (0.9")
    assert "nodded" in d.iloc[1] and "pitch steady" in d.iloc[1]


def test_rerun_skips_finished_files_and_redoes_changed_ones(recordings, tmp_path):
    root, _, _ = recordings
    one = tmp_path / "one"
    one.mkdir()
    (one / "A.avi").write_bytes((root / "c1" / "A.avi").read_bytes())
    out = tmp_path / "out"
    params = FeatureParams(workers=1)
    assert FT.extract_folder(one, out, params, progress=False)["counts"]["done"] == 1
    first = (out / "A.csv").read_bytes()
    assert FT.extract_folder(one, out, params, progress=False)["counts"] == {"done": 0, "skipped": 1, "failed": 0}
    assert (out / "A.csv").read_bytes() == first
    changed = FeatureParams(workers=1, sample_fps=4.0)
    assert FT.extract_folder(one, out, changed, progress=False)["counts"]["done"] == 1


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert FT.main([str(tmp_path / "nowhere"), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "recordings folder not found" in capsys.readouterr().err
    assert FT.main([str(tmp_path), str(tmp_path / "out"), "--fps", "0", "--no-progress"]) == 2
    assert "sample_fps" in capsys.readouterr().err


def test_recording_without_any_face_gives_nan_rows_and_a_warning(tmp_path):
    from skimage import data

    video = write_face_clip(data.coffee(), tmp_path / "cup.avi", ["still"] * 3)
    audio = write_tone(tmp_path / "cup.wav", 150.0, 3.0)
    rows, report = FT.extract_listener_features(video, audio, user_id="u", params=FeatureParams())
    assert len(rows) == 3 and rows[["gaze_on", "smile", *FACE_COLUMNS]].isna().all().all()
    assert report["seconds_without_face"] == 3 and report["face_samples"] == 0
    assert any("no face found" in w for w in report["warnings"])
    assert rows["f0_mean"].notna().all()  # the voice is still measured
    s = turn_listener_summary(_tiny_corpus(rows.assign(t=[0.0, 1.0, 2.0], user_id="L"), [(0.0, 2.0, 10)]))
    assert s["va_reason"].iloc[0] == "no_face"
    assert FT.describe_listener(s).iloc[0] == "listener's face not visible in this window, pitch steady"


def test_two_videos_of_one_participant_fail_both_on_every_run(tmp_path, capsys):
    """`p1.mp4` and `p1.mkv` in one folder: which is p1 cannot be guessed, so neither is counted done."""
    for name in ("p1.mp4", "p1.mkv"):
        (tmp_path / "rec" / "c1").mkdir(parents=True, exist_ok=True)
        (tmp_path / "rec" / "c1" / name).write_bytes(b"\x00\x00\x00\x18ftypmp42 never opened")
    for _ in range(2):  # a rerun says the same, never "done"
        assert FT.main([str(tmp_path / "rec"), str(tmp_path / "out"), "--workers", "1", "--no-progress"]) == 1
        err = capsys.readouterr()
        assert "0 done, 0 skipped (already done), 2 failed" in err.out
        assert "2 videos of one participant 'p1'" in err.err and "(p1.mkv, p1.mp4) would write one p1.csv" in err.err
        rep = json.loads((tmp_path / "out" / "features_report.json").read_text())
        assert rep["counts"] == {"done": 0, "skipped": 0, "failed": 2}
        assert not (tmp_path / "out" / "c1" / "p1.csv").exists()


# --------------------------------------------------------------------------- a real Dask cluster on loopback

#: Seconds a start-up, a run or a shutdown of the loopback cluster may take: generous, because the
#: full suite runs beside other CPU-heavy work on 2 cores and each worker imports torch for its first task.
CLUSTER_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def several_recordings(tmp_path_factory):
    """Six distinct small recordings in three conversation folders (two faces, two sequences of nods
    and shakes, voices of three pitches and one video without audio), and their serial extraction."""
    root = tmp_path_factory.mktemp("several")
    faces = sample_faces()
    motions = (
        ["still", "nod", "still", "still", "shake", "still", "still", "nod"],
        ["nod", "still", "still", "shake", "still", "still", "nod", "still"],
    )
    for k in range(6):
        folder = root / f"c{k // 2}"
        write_face_clip(faces[("astronaut", "grace_hopper")[k % 2]], folder / f"p{k}.avi", motions[k % 2])
        if k != 5:
            write_tone(folder / f"p{k}.wav", 120.0 + 20.0 * (k % 3), 8.0, harmonics=6)
    serial = tmp_path_factory.mktemp("serial")
    report = FT.extract_folder(root, serial, FeatureParams(workers=1), progress=False)
    assert report["counts"] == {"done": 6, "skipped": 0, "failed": 0}, report["failed"]
    return root, serial


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` by relative path (the run report aside): CSV bytes, and reports without wall time."""
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "features_report.json":
            rel = str(p.relative_to(out))
            if p.suffix == ".json":  # the report of one recording: all but its wall time must agree
                rep = json.loads(p.read_text())
                rep.pop("elapsed_s")
                files[rel] = json.dumps(rep, sort_keys=True).encode()
            else:
                files[rel] = p.read_bytes()
    return files


@pytest.mark.slow
def test_loopback_cluster_matches_serial_bytes_and_survives_a_killed_worker(several_recordings, tmp_path):
    """A real scheduler + 2 workers: one worker is killed mid-run; its recording is run again on the other,
    every recording is written once, and the outputs are byte for byte the serial ones."""
    from distributed import Client

    root, serial = several_recordings
    out = tmp_path / "out"
    with (
        loopback_cluster(tmp_path / "logs", timeout=CLUSTER_TIMEOUT_S) as (address, dashboard, workers),
        Client(address, timeout=CLUSTER_TIMEOUT_S) as watcher,
    ):
        names = {addr: w["name"] for addr, w in watcher.scheduler_info()["workers"].items()}
        run = subprocess.Popen(
            [sys.executable, "-m", "geli_lib.listener.features", str(root), str(out), "--scheduler", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "GELI_PROGRESS": "1"},
        )
        try:
            deadline = time.monotonic() + CLUSTER_TIMEOUT_S
            busy: list[str] = []
            while not busy and time.monotonic() < deadline and run.poll() is None:
                busy = [k for addr, keys in watcher.processing().items() if names.get(addr) == "w1" for k in keys]
                time.sleep(0.05)
            assert busy, "worker w1 never got a recording"
            workers["w1"].kill()  # mid-task: its first recording also loads torch and the face models
            stdout, stderr = run.communicate(timeout=CLUSTER_TIMEOUT_S)
            # the scheduler's own record: the killed worker's recordings went back to processing, then finished
            states = watcher.run_on_scheduler(
                lambda keys, dask_scheduler: {k: [t.finish for t in dask_scheduler.story(k)] for k in keys}, busy
            )
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    stdout, stderr = stdout.decode(), stderr.decode()
    assert run.returncode == 0, stderr
    for key, finishes in states.items():
        assert finishes.count("processing") >= 2 and "memory" in finishes, (key, finishes)
    assert "6 done, 0 skipped (already done), 0 failed" in stdout
    assert f"Dask dashboard: {dashboard}" in stdout and "100% Completed" in stdout  # Dask's own progress bar
    report = json.loads((out / "features_report.json").read_text())
    assert report["counts"] == {"done": 6, "skipped": 0, "failed": 0}
    got, want = _outputs(out), _outputs(serial)
    assert sorted(got) == sorted(want)  # every recording written once, no temporary file left behind
    for rel in want:
        assert got[rel] == want[rel], rel


def test_unreachable_scheduler_is_named_and_nothing_is_written(several_recordings, tmp_path, capsys):
    import dask  # distributed is imported (geli_lib.core.compute): leaving config.set() keeps its defaults

    root, _ = several_recordings
    out = tmp_path / "out"
    closed = f"tcp://127.0.0.1:{free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):  # refused until then
        assert FT.main([str(root), str(out), "--scheduler", closed, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--scheduler {closed}: no Dask scheduler answered within 2s" in err
    assert "distributed.comm.timeouts.connect" in err
    assert FT.main([str(root), str(out), "--scheduler", "localhost:port", "--no-progress"]) == 2
    assert (
        "--scheduler localhost:port: not a Dask scheduler address, expected tcp://HOST:PORT" in capsys.readouterr().err
    )
    assert not out.exists()


@pytest.mark.slow
def test_local_cluster_matches_serial_bytes_and_resumes(several_recordings, tmp_path):
    """The default path (a local Dask cluster of --workers processes) writes the serial bytes and resumes by key."""
    root, serial = several_recordings
    out = tmp_path / "out"
    params = FeatureParams(workers=2)
    assert FT.extract_folder(root, out, params, progress=False)["counts"] == {"done": 6, "skipped": 0, "failed": 0}
    got, want = _outputs(out), _outputs(serial)
    assert sorted(got) == sorted(want) and all(got[rel] == want[rel] for rel in want)
    (out / "c1" / "p2.json").unlink()  # an unfinished recording: only it is done again
    assert FT.extract_folder(root, out, params, progress=False)["counts"] == {"done": 1, "skipped": 5, "failed": 0}


def test_a_dask_worker_imports_the_features_without_the_notebook_server():
    """A worker unpickling ``extract_recording`` imports this module and, through it, ``geli_lib.core``.

    ``core.runs`` once imported jupyter-server-mathjax at the top, which pulled
    jupyter_server and jsonschema (3.4 s of the 3.6 s import): every worker paid
    it on its first recording, and the Dask path ran 20-25% slower than the old
    process pool on 4 one-minute recordings (8% once removed).
    """
    code = "import sys, geli_lib.listener.features; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("jupyter_server", "jsonschema", "jupyter_server_mathjax", "transformers", "trl"):
        assert f"'{heavy}'" not in loaded, f"importing the features module imports {heavy}"
