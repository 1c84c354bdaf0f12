"""Loaders, canonical cache, splits and pairs, on small real-format files (tests/fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures import (
    ESCONV_EXPECTED,
    ESCONV_SESSIONS,
    SODA_RECORDS,
    backbiter_rows,
    convo_uuid,
    write_candor,
    write_esconv,
    write_soda,
)

import geli_lib.corpus.data as data
import geli_lib.corpus.data.candor as data_candor
import geli_lib.corpus.data.load as data_load
from geli_lib.core.io import content_key
from geli_lib.core.params import DataParams, SimulationParams, SplitParams, StudyParams, to_dict
from geli_lib.corpus.data import (
    DataError,
    build_pairs,
    load_candor,
    load_corpus,
    load_esconv,
    load_soda,
    split_conversations,
    split_sizes,
)
from geli_lib.corpus.schema import CONVERSATION_COLUMNS, FRAME_COLUMNS, TURN_COLUMNS, Corpus


@pytest.fixture
def candor(tmp_path):
    """(root, specs) of a 3-conversation CANDOR-layout corpus with truth."""
    root = tmp_path / "candor"
    return root, write_candor(root, 3)


def first_id(specs):
    return next(iter(specs))


def _rewrite(path: Path, edit) -> None:
    """Read a CSV as text columns, apply ``edit(df)`` (in place, or returning a new frame), write it back."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    out = edit(df)
    (df if out is None else out).to_csv(path, index=False)


# --------------------------------------------------------------------------- CANDOR


def test_candor_cliffhanger_canonical(candor):
    root, specs = candor
    c = load_candor(root, DataParams(), progress=False)
    assert list(c.conversations.columns[: len(CONVERSATION_COLUMNS)]) == list(CONVERSATION_COLUMNS)
    assert list(c.turns.columns[: len(TURN_COLUMNS)]) == list(TURN_COLUMNS)
    assert list(c.frames.columns[: len(FRAME_COLUMNS)]) == list(FRAME_COLUMNS)
    assert list(c.conversations["convo_id"]) == sorted(specs)
    assert c.skipped == {}
    for cid, spec in specs.items():
        conv = c.conversations.set_index("convo_id").loc[cid]
        assert conv["listener_id"] == spec["listener"] and conv["ai_id"] == spec["ai"]
        assert conv["score_raw"] == spec["score_raw"] and conv["score"] == 10 * spec["score_raw"]
        assert conv["has_truth"] and conv["truth_unassigned"] == 0
        t = c.turns[c.turns["convo_id"] == cid]
        base = spec["turns"]
        assert len(t) == len(base) == conv["n_turns"]
        assert list(t["turn_idx"]) == list(range(len(base)))
        assert list(t["role"]) == list(base["role"])
        assert list(t["is_ai"]) == list(base["role"] == "AI")
        assert list(t["utterance"]) == list(base["utterance"])
        np.testing.assert_allclose(t["start"], base["start"])
        ai = t["is_ai"].to_numpy()
        np.testing.assert_allclose(t["true_reward"].to_numpy()[ai], base["true_reward"].to_numpy()[ai])
        assert t["true_reward"][~ai].isna().all()
        assert list(t["act"][ai]) == list(base["act"][ai])
        f = c.frames[c.frames["convo_id"] == cid]
        assert set(f["user_id"]) == {spec["listener"]}  # the listener's rows only
        np.testing.assert_allclose(f["t"], np.arange(len(f)))
        assert f["prob_face_happiness"].isna().sum() == 1  # the planted no-face second
    assert {"f0_mean", "intensity_mean", "jitter", "log_energy"} <= set(c.frames.columns)
    assert c.turns["local_feedback"].isna().all()


def test_candor_audiophile_merges_back_to_cliffhanger(candor, caplog):
    root, specs = candor
    cliff = load_candor(root, DataParams(), progress=False)
    audio = load_candor(root, DataParams(segmentation="audiophile"), progress=False)
    for col in ("convo_id", "turn_idx", "speaker_id", "role", "utterance", "n_words", "act"):
        assert list(audio.turns[col]) == list(cliff.turns[col]), col
    for col in ("start", "stop", "true_reward"):
        np.testing.assert_allclose(audio.turns[col], cliff.turns[col])
    raw = load_candor(root, DataParams(segmentation="audiophile", merge_consecutive=False), progress=False)
    assert len(raw.turns) > len(cliff.turns)
    # unmerged rows of one truth turn: the row holding its midpoint takes its reward (the other
    # none: NaN, so merging back by the mean restores it); a midpoint in the pause between the
    # two rows is counted and logged, never dropped silently
    sums = raw.turns.groupby("convo_id")["true_reward"].sum()
    expected = cliff.turns.groupby("convo_id")["true_reward"].sum()
    lost = raw.conversations.set_index("convo_id")["truth_unassigned"]
    assert lost.sum() >= 1 and "fell in no loaded AI turn" in caplog.text
    np.testing.assert_allclose(sums[lost == 0], expected[lost == 0])


def test_candor_backbiter_truth_by_midpoint(candor):
    root, specs = candor
    bb = load_candor(root, DataParams(segmentation="backbiter"), progress=False)
    assert (bb.conversations["truth_unassigned"] == 0).all()
    for cid, spec in specs.items():
        base = spec["turns"]
        _, split_at = backbiter_rows(base)
        t = bb.turns[bb.turns["convo_id"] == cid].reset_index(drop=True)
        assert len(t) == len(base) + 2  # AI part 1, User "mhm", AI part 2
        assert t.loc[split_at + 1, "utterance"] == "mhm" and t.loc[split_at + 1, "role"] == "User"
        assert t.loc[split_at, "true_reward"] == pytest.approx(base.loc[split_at, "true_reward"])
        assert np.isnan(t.loc[split_at + 2, "true_reward"])  # no truth midpoint in part 2
        assert t.loc[split_at + 2, "act"] == ""
        assert t["true_reward"].sum() == pytest.approx(base["true_reward"].sum())


def test_candor_second_speaker_is_listener(candor):
    root, specs = candor
    c = load_candor(root, DataParams(listener="second_speaker"), progress=False)
    cid = first_id(specs)
    conv = c.conversations.set_index("convo_id").loc[cid]
    assert conv["listener_id"] == specs[cid]["ai"] and conv["score"] == 50.0
    t = c.turns[c.turns["convo_id"] == cid]
    assert list(t["role"][:2]) == ["AI", "User"]
    assert set(c.frames[c.frames["convo_id"] == cid]["user_id"]) == {specs[cid]["ai"]}
    # the planted truth rates the simulated AI, who is the User here
    assert not c.conversations["has_truth"].any() and c.turns["true_reward"].isna().all()


def test_candor_without_truth(tmp_path):
    root = tmp_path / "c"
    write_candor(root, 2, truth=False)
    c = load_candor(root, DataParams(), progress=False)
    assert not c.conversations["has_truth"].any()
    assert c.turns["true_reward"].isna().all() and (c.turns["act"] == "").all()


def test_candor_process_pool_matches_in_process(candor, monkeypatch):
    root, _ = candor
    serial = load_candor(root, DataParams(), progress=False, workers=1)
    monkeypatch.setattr(data_candor, "_POOL_MIN_CONVERSATIONS", 0)
    used = []
    real = data_candor._load_chunks_in_pool
    monkeypatch.setattr(data_candor, "_load_chunks_in_pool", lambda *a: used.append(a[3]) or real(*a))
    pooled = load_candor(root, DataParams(), progress=False, workers=2)
    assert used == [2]
    pd.testing.assert_frame_equal(serial.turns, pooled.turns)
    pd.testing.assert_frame_equal(serial.frames, pooled.frames)
    pd.testing.assert_frame_equal(serial.conversations, pooled.conversations)


# --------------------------------------------------------------------------- CANDOR bad input


def _folder(root, specs, k=0):
    return Path(root) / list(specs)[k]


def _raises(root, match, **kw):
    with pytest.raises(DataError, match=match) as e:
        load_candor(root, DataParams(**kw), progress=False)
    return str(e.value)


def test_bad_missing_files_and_columns(candor):
    root, specs = candor
    f = _folder(root, specs)
    (f / "audio_video_features.csv").rename(f / "features.bak")
    _raises(root, r"audio_video_features\.csv: file not found")
    (f / "features.bak").rename(f / "audio_video_features.csv")

    cliff = f / "transcription" / "transcript_cliffhanger.csv"
    original = cliff.read_text()
    _rewrite(cliff, lambda d: d.drop(columns="stop"))
    msg = _raises(root, r"transcript_cliffhanger\.csv: missing column\(s\) \['stop'\]")
    assert str(f) in msg
    cliff.write_text(original)

    (f / "transcription" / "transcript_backbiter.csv").unlink()
    _raises(root, r"transcript_backbiter\.csv: file not found", segmentation="backbiter")

    _rewrite(f / "audio_video_features.csv", lambda d: d.drop(columns="prob_face_fear"))
    _raises(root, r"audio_video_features\.csv: missing column\(s\) \['prob_face_fear'\]", segmentation="audiophile")
    with pytest.raises(DataError, match="root folder not found"):
        load_candor(Path(root) / "nope", DataParams(), progress=False)


def test_bad_survey_values(candor):
    root, specs = candor
    f = _folder(root, specs)
    survey = f / "survey.csv"
    original = survey.read_text()

    def set_affect(v):
        survey.write_text(original)
        _rewrite(survey, lambda d: d.__setitem__("overall_affect", [v, "5"]))

    set_affect("11")
    _raises(
        root,
        r"survey\.csv: row 1 \(line 2\), column 'overall_affect': value 11\.0 outside "
        r"score_range \[1\.0, 10\.0\]",
    )
    set_affect("high")
    _raises(root, r"survey\.csv: row 1 \(line 2\), column 'overall_affect': not a number: 'high'")
    set_affect("")  # NaN: an unscored conversation, skipped and counted
    c = load_candor(root, DataParams(), progress=False)
    assert len(c.conversations) == 2 and list(c.skipped) == ["unscored"]
    assert "survey.csv: row 1 (line 2), column 'overall_affect': missing value" in c.skipped["unscored"][0]
    assert c.summary()["skipped"] == 1
    _raises(root, r"missing value \(unscored; set data\.bad_conversations: skip", bad_conversations="error")
    survey.write_text(original)
    _rewrite(survey, lambda d: d.__setitem__("user_id", ["someone-else", d["user_id"][1]]))
    c = load_candor(root, DataParams(), progress=False)
    assert "no row for the listener" in c.skipped["unscored"][0]


def test_bad_transcript_times(candor):
    root, specs = candor
    path = _folder(root, specs) / "transcription" / "transcript_cliffhanger.csv"
    original = path.read_text()

    def edit(row, col, value):
        path.write_text(original)
        _rewrite(path, lambda d: d.loc.__setitem__((row, col), value))

    edit(3, "stop", "0.5")
    _raises(root, r"transcript_cliffhanger\.csv: row 4 \(line 5\), column 'stop': stop 0\.5 is before start")
    edit(3, "start", "0.0")  # runs backwards from row 3's start (and stop >= start still holds)
    _raises(root, r"row 4 \(line 5\), column 'start': start 0\.0 is before the previous row's start")
    edit(2, "start", "soon")
    _raises(root, r"row 3 \(line 4\), column 'start': not a number: 'soon'")
    edit(2, "turn_id", "1")
    _raises(root, r"row 3 \(line 4\), column 'turn_id': duplicate turn_id '1'")
    edit(1, "speaker", "")
    _raises(root, r"row 2 \(line 3\), column 'speaker': empty speaker")


def test_overlapping_speakers_are_fine(tmp_path):
    """CANDOR has small overlaps between speakers: a start before the previous stop is not bad."""
    root = tmp_path / "c"
    specs = write_candor(root, 3)
    overlaps = [(s["turns"]["start"].to_numpy()[1:] < s["turns"]["stop"].to_numpy()[:-1]).any() for s in specs.values()]
    assert any(overlaps)
    load_candor(root, DataParams(), progress=False)


def test_bad_conversations_skipped_and_counted(candor):
    root, specs = candor
    f0, f1 = _folder(root, specs, 0), _folder(root, specs, 1)
    # one speaker: every row by the listener
    for seg in ("cliffhanger", "audiophile", "backbiter"):
        _rewrite(
            f0 / "transcription" / f"transcript_{seg}.csv",
            lambda d: d.__setitem__("speaker", specs[f0.name]["listener"]),
        )
    # empty: header only
    path = f1 / "transcription" / "transcript_cliffhanger.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    c = load_candor(root, DataParams(), progress=False)
    assert list(c.conversations["convo_id"]) == [list(specs)[2]]
    assert sorted(c.skipped) == ["empty", "one speaker"]
    assert str(f1) in c.skipped["empty"][0] and str(f0) in c.skipped["one speaker"][0]
    _raises(root, r"only speaker .*one speaker; set data\.bad_conversations", bad_conversations="error")
    # a third speaker
    w = write_candor(root, 3)  # restore, then add a third speaker to conversation 2
    f2 = _folder(root, w, 2)
    _rewrite(
        f2 / "transcription" / "transcript_cliffhanger.csv", lambda d: d.loc.__setitem__((2, "speaker"), "intruder")
    )
    c = load_candor(root, DataParams(), progress=False)
    assert list(c.skipped) == ["more than two speakers"] and len(c.conversations) == 2


def test_all_skipped_is_an_error(tmp_path):
    root = tmp_path / "c"
    specs = write_candor(root, 1)
    f = _folder(root, specs)
    _rewrite(f / "survey.csv", lambda d: d.__setitem__("overall_affect", ["", ""]))
    with pytest.raises(DataError, match="every conversation was skipped"):
        load_candor(root, DataParams(), progress=False)


def test_bad_features(candor):
    root, specs = candor
    f = _folder(root, specs)
    path = f / "audio_video_features.csv"
    original = path.read_text()
    listener = specs[f.name]["listener"]

    def edit(fn):
        path.write_text(original)
        _rewrite(path, fn)

    edit(lambda d: d.__setitem__("user_id", np.where(d["user_id"] == listener, "x", d["user_id"])))
    _raises(root, rf"audio_video_features\.csv: no rows for the listener user_id '{listener}'")
    # the listener's rows are 0, 2, 4, ... (interleaved by second); row 4 repeats second 1
    edit(lambda d: d.loc.__setitem__((4, "timedelta"), "0 days 00:00:01"))
    _raises(root, r"row 5 \(line 6\), column 'timedelta': the listener's time 1\.0 s does not follow 1\.0 s")
    edit(lambda d: d.loc.__setitem__((4, "timedelta"), "yesterday"))
    _raises(root, r"row 5 \(line 6\), column 'timedelta': not a time span: 'yesterday'")
    edit(lambda d: d.loc.__setitem__((6, "prob_face_anger"), "1.5"))
    _raises(root, r"row 7 \(line 8\), column 'prob_face_anger': value 1\.5 outside \[0, 1\]")
    edit(lambda d: d.loc.__setitem__((6, "gaze_on"), "maybe"))
    _raises(root, r"row 7 \(line 8\), column 'gaze_on': not a number: 'maybe'")
    # another format pandas understands is accepted
    edit(lambda d: d.loc.__setitem__((4, "timedelta"), "00:00:02"))
    c = load_candor(root, DataParams(), progress=False)
    assert c.frames["t"].iloc[2] == 2.0
    # the other speaker's rows are never checked for the listener's rules
    edit(lambda d: d.loc.__setitem__((5, "timedelta"), "0 days 00:00:00"))
    load_candor(root, DataParams(), progress=False)


def test_stray_quotes_that_swallow_rows_are_an_error(candor):
    """Two stray `"` (before the first turn_id, after the second) made one row of two: the first
    speaker became the AI's, so the listener, the score and the turn count changed silently."""
    root, specs = candor
    path = _folder(root, specs) / "transcription" / "transcript_cliffhanger.csv"
    original = path.read_text()
    lines = original.split("\n")
    lines[1] = '"' + lines[1]
    lines[2] = lines[2].replace(",", '",', 1)
    path.write_text("\n".join(lines))
    _raises(
        root,
        r"transcript_cliffhanger\.csv: row 1 \(line 2\), column 'turn_id': the value spans 2 "
        r"lines and swallows what look like rows of the file \(a stray '\"' opened a quoted field\)",
    )
    # the same with the quotes inside two utterances: the end of one row and the start of the next swallowed
    lines = original.split("\n")
    lines[1] = lines[1].replace(",with ", ',"with ', 1)
    lines[2] = lines[2].replace(",nice ", ',nice" ', 1)
    path.write_text("\n".join(lines))
    _raises(root, r"row 1 \(line 2\), column 'utterance': the value spans 2 lines and swallows")
    # an utterance that spans lines but holds no row is fine
    write_candor(root, 3)
    _rewrite(path, lambda d: d.loc.__setitem__((2, "utterance"), "so I said,\nwell, fine"))
    c = load_candor(root, DataParams(), progress=False)
    assert "so I said,\nwell, fine" in set(c.turns["utterance"])


def test_kept_but_suspicious_input_is_counted_and_reported(candor, caplog):
    """Empty utterances, f0 missing-value codes and a listener never seen: kept, counted, warned."""
    root, specs = candor
    f0, f1, f2 = (_folder(root, specs, k) for k in range(3))
    _rewrite(
        f0 / "transcription" / "transcript_cliffhanger.csv",
        lambda d: d.loc.__setitem__(([2, 3], "utterance"), ["   ", ""]),
    )
    listener = specs[f1.name]["listener"]
    _rewrite(
        f1 / "audio_video_features.csv",
        lambda d: d.loc.__setitem__((d.index[d["user_id"] == listener][:3], "f0_mean"), "-999999"),
    )
    faces = [c for c in pd.read_csv(f2 / "audio_video_features.csv", nrows=0).columns if c.startswith("prob_face_")]
    _rewrite(f2 / "audio_video_features.csv", lambda d: d.loc.__setitem__((slice(None), faces), ""))
    with caplog.at_level("WARNING"):
        c = load_candor(root, DataParams(), progress=False)
    conv = c.conversations.set_index("convo_id")
    assert conv["n_empty_utterances"].to_dict() == {f0.name: 2, f1.name: 0, f2.name: 0}
    assert conv["f0_missing_codes"].to_dict() == {f0.name: 0, f1.name: 3, f2.name: 0}
    assert conv["no_face_in_any_frame"].to_dict() == {f0.name: 0, f1.name: 0, f2.name: 1}
    f0_values = c.frames.loc[c.frames["convo_id"] == f1.name, "f0_mean"]
    assert f0_values.isna().sum() == 3 and (f0_values.dropna() > 0).all()
    text = caplog.text
    assert "2 turn(s) with an empty or whitespace-only utterance" in text and f0.name in text
    assert "3 f0_mean value(s) below 0 Hz" in text and "1 conversation(s) without a face in any" in text


def test_a_conversation_without_words_is_an_empty_one(candor):
    root, specs = candor
    f = _folder(root, specs)
    _rewrite(f / "transcription" / "transcript_cliffhanger.csv", lambda d: d.__setitem__("utterance", " "))
    c = load_candor(root, DataParams(), progress=False)
    assert f.name not in set(c.conversations["convo_id"])
    assert "no words in any of its" in c.skipped["empty"][0]


def test_bad_truth(candor):
    root, specs = candor
    f = _folder(root, specs)
    path = f / "simulation_truth.csv"
    original = path.read_text()
    _rewrite(path, lambda d: d.loc.__setitem__((2, "turn_id"), "999"))
    _raises(root, r"simulation_truth\.csv: row 3 \(line 4\), column 'turn_id': turn_id '999' is not in")
    path.write_text(original)
    _rewrite(path, lambda d: d.drop(columns="true_reward"))
    _raises(root, r"simulation_truth\.csv: missing column\(s\) \['true_reward'\]")


# --------------------------------------------------------------------------- ESConv


def test_esconv_roles_scores_feedback(tmp_path):
    path = write_esconv(tmp_path / "esconv.json")
    c = load_esconv(path, DataParams())
    exp = ESCONV_EXPECTED
    assert list(c.conversations["convo_id"]) == exp["convo_ids"]
    assert list(c.conversations["score"]) == exp["empathy_score"]
    assert list(c.conversations["context"]) == [s["situation"] for s in ESCONV_SESSIONS]
    assert c.conversations["has_truth"].all() and c.frames.empty
    for cid, roles, fb in zip(exp["convo_ids"], exp["roles"], exp["feedback"]):
        t = c.turns[c.turns["convo_id"] == cid]
        assert list(t["role"]) == roles
        got = [None if np.isnan(v) else v for v in t["local_feedback"]]
        assert got == fb
        assert t["start"].isna().all() and t["stop"].isna().all()
    t0 = c.turns[c.turns["convo_id"] == "esconv-00000"]
    assert t0["strategy"].iloc[1] == exp["strategy_merged"]
    assert t0["utterance"].iloc[1] == "Hello, I am sorry to hear that. What happened at work?"
    assert c.conversations["listener_id"].tolist() == ["seeker", "usr", "speaker"]
    assert c.conversations["ai_id"].tolist() == ["supporter", "sys", "listener"]

    rel = load_esconv(path, DataParams(esconv_score="relevance"))
    assert list(rel.conversations["score"]) == exp["relevance_score"]
    drop = load_esconv(path, DataParams(esconv_score="intensity_drop"))
    assert list(drop.conversations["score_raw"]) == exp["intensity_drop_raw"]
    assert list(drop.conversations["score"]) == exp["intensity_drop_score"]

    unmerged = load_esconv(path, DataParams(merge_consecutive=False))
    t = unmerged.turns[unmerged.turns["convo_id"] == "esconv-00000"]
    assert list(t["local_feedback"].iloc[1:3]) == [4.0, 4.0]  # both supporter turns before the rating
    assert list(t["turn_idx"]) == list(range(9))


def _esconv_with(tmp_path, edit):
    sessions = json.loads(json.dumps(ESCONV_SESSIONS))
    edit(sessions)
    return write_esconv(tmp_path / "e.json", sessions)


def test_esconv_bad_input(tmp_path):
    p = _esconv_with(tmp_path, lambda s: s[1]["dialog"][2].__setitem__("speaker", "helper"))
    with pytest.raises(
        DataError,
        match=r"e\.json: session 1 \(esconv-00001\), dialog\[2\], field "
        r"'speaker': unknown role name 'helper'",
    ):
        load_esconv(p, DataParams())
    p = _esconv_with(tmp_path, lambda s: s[0]["dialog"][3]["annotation"].__setitem__("feedback", "7"))
    with pytest.raises(DataError, match=r"session 0 .*dialog\[3\], field 'annotation\.feedback': value 7 outside"):
        load_esconv(p, DataParams())
    p = _esconv_with(tmp_path, lambda s: s[2]["survey_score"]["seeker"].__setitem__("empathy", "6"))
    with pytest.raises(DataError, match=r"session 2 .*field 'survey_score\.seeker\.empathy': value 6 outside"):
        load_esconv(p, DataParams())
    p = _esconv_with(tmp_path, lambda s: s[2]["survey_score"]["seeker"].__setitem__("empathy", "lots"))
    with pytest.raises(DataError, match=r"survey_score\.seeker\.empathy': not a number: 'lots'"):
        load_esconv(p, DataParams())
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        load_esconv(tmp_path / "broken.json", DataParams())
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        load_esconv(tmp_path / "missing.json", DataParams())


@pytest.mark.parametrize("value, shown", [(True, "true"), (False, "false")])
def test_esconv_boolean_rating_is_an_error(tmp_path, value, shown):
    p = _esconv_with(tmp_path, lambda s: s[2]["survey_score"]["seeker"].__setitem__("empathy", value))
    with pytest.raises(
        DataError,
        match=rf"session 2 .*field 'survey_score\.seeker\.empathy': expected a "
        rf"rating 1-5, got {shown}",
    ):
        load_esconv(p, DataParams())


def test_esconv_and_soda_not_utf8_name_file_line_and_byte(tmp_path):
    good = write_esconv(tmp_path / "e.json").read_bytes()
    bad = tmp_path / "latin1.json"
    bad.write_bytes(good.replace(b'"', b'"\xe9', 1))  # a Latin-1 é inside the first string
    first_quote = good.index(b'"')
    line = good[:first_quote].count(b"\n") + 1
    with pytest.raises(
        DataError,
        match=rf"latin1\.json: line {line}, byte {first_quote + 1}: not UTF-8 text "
        r"\(b'\\xe9'\)",
    ):
        load_esconv(bad, DataParams())
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_bytes(json.dumps(SODA_RECORDS[0]).encode() + b'\n{"narrative": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"s\.jsonl: line 2, byte \d+: not UTF-8 text"):
        load_soda(jsonl, DataParams())


def test_esconv_whitespace_utterances_are_counted_and_an_all_empty_session_skipped(tmp_path, caplog):
    def edit(s):
        s[0]["dialog"][1]["content"] = "   "
        for turn in s[1]["dialog"]:
            turn["content"] = " \t"

    p = _esconv_with(tmp_path, edit)
    with caplog.at_level("WARNING"):
        c = load_esconv(p, DataParams())
    conv = c.conversations.set_index("convo_id")
    assert conv.loc["esconv-00000", "n_empty_utterances"] == 1 and "esconv-00001" not in conv.index
    assert "no words in any of its" in c.skipped["empty"][0]
    assert "1 turn(s) with an empty or whitespace-only utterance" in caplog.text


def test_esconv_bad_sessions_skipped(tmp_path):
    def edit(s):
        del s[0]["survey_score"]["seeker"]["empathy"]  # unscored
        s[1]["dialog"] = [d for d in s[1]["dialog"] if d["speaker"] == "usr"]  # one speaker
        s.append({**s[2], "dialog": []})  # empty

    p = _esconv_with(tmp_path, edit)
    c = load_esconv(p, DataParams())
    assert list(c.conversations["convo_id"]) == ["esconv-00002"]
    assert {k: len(v) for k, v in c.skipped.items()} == {"unscored": 1, "one speaker": 1, "empty": 1}
    assert c.skipped["unscored"][0].startswith(f"{p}: session 0 (esconv-00000)")
    # empathy missing does not matter when the score is intensity_drop
    c2 = load_esconv(p, DataParams(esconv_score="intensity_drop"))
    assert "esconv-00000" in set(c2.conversations["convo_id"])
    with pytest.raises(DataError, match="no survey_score.seeker.empathy"):
        load_esconv(p, DataParams(bad_conversations="error"))


# --------------------------------------------------------------------------- SODA


@pytest.mark.parametrize("name", ["soda.json", "soda.jsonl"])
def test_soda(tmp_path, name):
    c = load_soda(write_soda(tmp_path / name), DataParams())
    assert list(c.conversations["convo_id"]) == ["soda-000000", "soda-000001"]
    assert c.conversations["score"].isna().all() and c.frames.empty
    assert list(c.conversations["context"]) == [r["narrative"] for r in SODA_RECORDS]
    assert list(c.conversations["listener_id"]) == ["Jamie", "Sam"]
    t = c.turns[c.turns["convo_id"] == "soda-000001"]
    assert list(t["role"]) == ["User", "AI", "User", "AI"]  # Sam's two lines merged
    assert t["utterance"].iloc[2] == "I hope you like chocolate. I love it."
    assert c.skipped == {}


def test_soda_bad_input(tmp_path):
    recs = json.loads(json.dumps(SODA_RECORDS))
    recs.append({**recs[0], "speakers": ["A", "B", "C", "A"]})
    c = load_soda(write_soda(tmp_path / "s.json", recs), DataParams())
    assert list(c.skipped) == ["more than two speakers"] and len(c.conversations) == 2
    recs[0]["speakers"] = recs[0]["speakers"][:3]
    with pytest.raises(
        DataError,
        match=r"s\.json: record 0 \(soda-000000\): 'dialogue' has 4 "
        r"utterances but 'speakers' has 3",
    ):
        load_soda(write_soda(tmp_path / "s.json", recs), DataParams())
    for bad, shown in ((None, "null"), ("", '""'), ("  ", '"  "')):
        recs = json.loads(json.dumps(SODA_RECORDS))
        recs[1]["speakers"][2] = bad
        with pytest.raises(
            DataError,
            match=rf"s\.json: record 1 \(soda-000001\), field 'speakers\[2\]': "
            rf"expected a speaker's name, got {shown}",
        ):
            load_soda(write_soda(tmp_path / "s.json", recs), DataParams())
    recs = json.loads(json.dumps(SODA_RECORDS))
    recs[0]["dialogue"][1] = "  "
    recs[1]["dialogue"] = ["", " \t"] + [" "] * (len(recs[1]["dialogue"]) - 2)
    c = load_soda(write_soda(tmp_path / "s.json", recs), DataParams())
    assert c.conversations["n_empty_utterances"].tolist() == [1] and list(c.skipped) == ["empty"]
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(SODA_RECORDS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid JSON"):
        load_soda(p, DataParams())


# --------------------------------------------------------------------------- load_corpus cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GELI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _frames_equal(a: Corpus, b: Corpus) -> None:
    for t in ("conversations", "turns", "frames"):
        pd.testing.assert_frame_equal(getattr(a, t), getattr(b, t), check_dtype=False)
    assert a.name == b.name and a.skipped == b.skipped


def test_load_corpus_caches_candor(candor, cache, monkeypatch):
    root, specs = candor
    params = StudyParams(corpus="candor", data_path=str(root))
    first = load_corpus(params, progress=False)
    folder = data.corpus_cache_folder(params)
    assert folder.parent == cache / "corpora" and folder.name.startswith("candor-")
    assert (folder / "corpus.json").is_file()

    calls = []
    real = data.load_candor
    monkeypatch.setattr(data_load, "load_candor", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_corpus(params, progress=False)
    assert calls == []  # a cache hit: read from parquet
    _frames_equal(first, again)

    # an interrupted save leaves no marker: the folder is not trusted and is rebuilt
    (folder / "corpus.json").unlink()
    _frames_equal(first, load_corpus(params, progress=False))
    assert calls == [1]

    # other data parameters or other input bytes: another key
    other = StudyParams(corpus="candor", data_path=str(root), data=DataParams(segmentation="audiophile"))
    assert data.corpus_cache_folder(other) != folder
    _rewrite(_folder(root, specs) / "survey.csv", lambda d: d.__setitem__("overall_affect", ["2", "5"]))
    assert data.corpus_cache_folder(params) != folder
    c = load_corpus(params, progress=False)
    assert c.conversations["score"].iloc[0] == 20.0


def test_load_corpus_esconv_and_soda(tmp_path, cache):
    e = load_corpus(StudyParams(corpus="esconv", data_path=str(write_esconv(tmp_path / "e.json"))), progress=False)
    assert e.name == "esconv" and len(e.conversations) == 3
    e2 = load_corpus(StudyParams(corpus="esconv", data_path=str(tmp_path / "e.json")), progress=False)
    _frames_equal(e, e2)
    s = load_corpus(StudyParams(corpus="soda", data_path=str(write_soda(tmp_path / "s.jsonl"))), progress=False)
    assert s.name == "soda" and "context" in s.conversations
    with pytest.raises(DataError, match="data_path not found"):
        load_corpus(StudyParams(corpus="soda", data_path=str(tmp_path / "none.json")), progress=False)


def test_load_corpus_simulated(cache, monkeypatch):
    """The simulator writes the CANDOR layout under the cache; load_candor reads it."""
    calls = []

    def simulate_corpus(sim, out_dir, workers=2, progress=True):
        calls.append((sim, Path(out_dir), workers, progress))
        write_candor(out_dir, sim.n_conversations)
        return Path(out_dir)

    monkeypatch.setattr(data_load, "simulate_corpus", simulate_corpus)
    monkeypatch.setattr(data_load, "SIMULATOR_VERSION", 0)
    sim = SimulationParams(n_conversations=2)
    params = StudyParams(simulation=sim)
    c = load_corpus(params, progress=False)
    assert c.name == "simulated" and len(c.conversations) == 2
    assert (c.conversations["corpus"] == "simulated").all() and c.conversations["has_truth"].all()
    assert calls[0][1] == cache / "corpora" / f"simulated-{content_key(to_dict(sim))}" / "raw"
    assert calls[0][2:] == (2, False)
    load_corpus(params, progress=False)
    assert len(calls) == 1  # cached: no second simulation


# --------------------------------------------------------------------------- splits


def _convs(n):
    return pd.DataFrame({"convo_id": [convo_uuid(k) for k in range(n)]})


def test_split_sizes_rounding():
    assert split_sizes(3, (0.6, 0.2, 0.2)) == [1, 1, 1]
    assert split_sizes(10, (0.36, 0.04, 0.60)) == [4, 1, 5]  # test got its 1 from the largest
    assert split_sizes(1000, (0.36, 0.04, 0.60)) == [360, 40, 600]
    assert split_sizes(7, (0.5, 0.0, 0.5)) == [4, 0, 3]
    assert split_sizes(1, (0.6, 0.2, 0.2)) == [1, 0, 0]
    for n in range(0, 40):
        assert sum(split_sizes(n, (0.5, 0.15, 0.35))) == n


def test_splits_reproducible_disjoint_covering():
    convs = _convs(50)
    params = SplitParams(reward_train=0.5, reward_test=0.15, rl=0.35, seed=3)
    a = split_conversations(convs, params)
    b = split_conversations(convs.sample(frac=1, random_state=1), params)  # row order does not matter
    pd.testing.assert_series_equal(a, b)
    assert a.index.is_unique and set(a.index) == set(convs["convo_id"])
    assert a.value_counts().to_dict() == {"reward_train": 25, "reward_test": 8, "rl": 17}
    c = split_conversations(convs, SplitParams(reward_train=0.5, reward_test=0.15, rl=0.35, seed=4))
    assert not a.equals(c)


# --------------------------------------------------------------------------- pairs


def test_pairs_format_history_and_truncation(tmp_path):
    root = tmp_path / "c"
    write_candor(root, 2, n_turns=30)
    c = load_candor(root, DataParams(), progress=False)
    pairs = build_pairs(c, DataParams())
    assert list(pairs.columns) == [
        "convo_id",
        "turn_idx",
        "history",
        "response",
        "true_reward",
        "local_feedback",
        "score",
    ]
    assert len(pairs) == int(c.turns["is_ai"].sum())
    t = c.turns[c.turns["convo_id"] == c.conversations["convo_id"].iloc[0]].reset_index(drop=True)
    first = pairs.iloc[0]
    assert first["history"] == " User: " + t["utterance"][0]
    assert first["response"] == t["utterance"][1] and first["score"] == c.conversations["score"].iloc[0]
    assert first["true_reward"] == t["true_reward"][1]
    late = pairs[(pairs["convo_id"] == t["convo_id"][0]) & (pairs["turn_idx"] == 27)].iloc[0]
    expected = "".join((" AI: " if r.is_ai else " User: ") + r.utterance for r in t.iloc[7:27].itertuples())
    assert late["history"] == expected  # the last 20 turns
    assert late["history"].count(" User: ") + late["history"].count(" AI: ") == 20

    short = build_pairs(c, DataParams(history_chars=50))
    assert (short["history"].str.len() <= 50).all()
    assert all(full.endswith(cut) for full, cut in zip(pairs["history"], short["history"]))
    one = build_pairs(c, DataParams(), convo_ids=[c.conversations["convo_id"].iloc[1]])
    assert set(one["convo_id"]) == {c.conversations["convo_id"].iloc[1]}


def test_pairs_carry_local_feedback(tmp_path):
    c = load_esconv(write_esconv(tmp_path / "e.json"), DataParams())
    p = build_pairs(c, DataParams())
    row = p[(p["convo_id"] == "esconv-00000") & (p["turn_idx"] == 1)].iloc[0]
    assert row["local_feedback"] == 4.0 and row["score"] == 100.0
    assert row["history"] == " User: Hi, I feel stressed about work."


def test_pairs_at_candor_scale():
    """~130k AI turns (CANDOR scale): one pair per AI turn. Its time is benchmarks/bench_data.py's (target < 10 s)."""
    n_conv, n_turns = 1656, 160
    conv_ids = np.repeat([f"c{k:05d}" for k in range(n_conv)], n_turns)
    idx = np.tile(np.arange(n_turns), n_conv)
    words = np.array(["yeah so I think that is really nice honestly"] * len(idx), dtype=object)
    turns = pd.DataFrame(
        {
            "convo_id": conv_ids,
            "turn_idx": idx,
            "turn_id": idx.astype(str),
            "speaker_id": "x",
            "role": np.where(idx % 2, "AI", "User"),
            "is_ai": idx % 2 == 1,
            "start": np.nan,
            "stop": np.nan,
            "utterance": words,
            "n_words": 9,
            "act": "",
            "true_reward": np.nan,
            "local_feedback": np.nan,
        }
    )
    convs = pd.DataFrame(
        {
            "convo_id": [f"c{k:05d}" for k in range(n_conv)],
            "corpus": "x",
            "listener_id": "a",
            "ai_id": "b",
            "score": 50.0,
            "score_raw": 5.0,
            "n_turns": n_turns,
            "n_ai_turns": n_turns // 2,
            "duration": np.nan,
            "has_truth": False,
        }
    )
    pairs = build_pairs(Corpus("x", convs, turns), DataParams())
    assert len(pairs) == n_conv * n_turns // 2
