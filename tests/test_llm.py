"""LLM-GELI decomposition: prompt, chunks, parsing of real answers, validation, cache, endpoints, distillation.

The HTTP backend is tested against real servers on loopback: ``transformers
serve`` with the local SmolLM2 checkpoint (one real round trip), and a tiny
``http.server`` of our own that refuses, stalls or answers garbage.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from geli_lib.core.params import LLMParams, ParamError, RewardParams, load_params
from geli_lib.reward import llm
from geli_lib.reward import reward_model as rm
from geli_lib.reward.llm import prompt as llm_prompt
from geli_lib.reward.reward_model import training as rm_training

DATA = Path(__file__).parent / "data" / "llm_outputs"
FAST = LLMParams(retries=1, backoff_s=0.01, timeout_s=5.0, output_retries=1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tiny simulated corpus (6 conversations) with its listener cues."""
    from fixtures import simulated_corpus

    _, corpus = simulated_corpus(tmp_path_factory.mktemp("cache"), simulation={"n_conversations": 6})
    return corpus, llm.listener_cues(corpus)


def _turns(n_ai: int, words: int = 6) -> pd.DataFrame:
    rows = []
    for i in range(2 * n_ai):
        ai = i % 2 == 1
        rows.append({"turn_idx": i, "is_ai": ai, "utterance": " ".join([("sure" if ai else "well")] * words) + f" {i}"})
    return pd.DataFrame(rows, columns=["turn_idx", "is_ai", "utterance"])


def _chunk(n_ai: int = 3, score: float = 60.0, variant: str = "text") -> llm.Chunk:
    return llm.conversation_chunks("c0", _turns(n_ai), score, LLMParams(), variant)[0]


# --------------------------------------------------------------------------- prompt and chunks


def test_prompt_is_the_papers_with_ids_speakers_and_score(sim):
    corpus, cues = sim
    cid = sorted(corpus.conversations["convo_id"])[0]
    score = float(corpus.conversations.set_index("convo_id").at[cid, "score"])
    text = llm.build_chunks(corpus, [cid], LLMParams(), "text")[0]
    mm = llm.build_chunks(corpus, [cid], LLMParams(), "multimodal", cues)[0]
    p_text = llm.prompt_messages(text)[0]["content"]
    p_mm = llm.prompt_messages(mm)[0]["content"]
    assert "Redistribute the score across each of Speaker A's utterances." in p_text
    assert f"Final score: {llm_prompt._fmt(score)}" in p_text and f"must sum up to: {llm_prompt._fmt(score)}." in p_text
    assert "multimodal" not in p_text and "aligned multimodal conversational features" in p_mm
    ai = corpus.turns[(corpus.turns["convo_id"] == cid) & corpus.turns["is_ai"]]
    assert text.turn_ids == tuple(f"A{t}" for t in ai["turn_idx"])
    for t in ai["turn_idx"]:
        assert f"[A{t}] Speaker A: " in p_text
    assert p_text.count("Speaker B: ") == int((~corpus.turns.loc[corpus.turns["convo_id"] == cid, "is_ai"]).sum())
    # the multimodal variant adds one cue line per AI turn that has one, and nothing else
    assert p_mm.count(llm.CUE_PREFIX) == len(cues[cid]) > 0
    assert p_mm.replace("\n", "").count("Speaker A: ") == p_text.count("Speaker A: ")
    assert llm.prompt_messages(text) == llm.prompt_messages(text)  # stable: the cache key depends on it


def test_long_conversation_is_chunked_with_shares_that_add_up():
    params = LLMParams(chunk_chars=400)
    chunks = llm.conversation_chunks("c0", _turns(30), 75.0, params)
    assert len(chunks) > 3
    assert math.isclose(sum(c.share for c in chunks), 75.0)
    ids = [i for c in chunks for i in c.turn_ids]
    assert ids == [f"A{t}" for t in range(1, 60, 2)]  # every AI turn once, in order
    for c in chunks:
        assert len(c.transcript) <= 400
        assert math.isclose(c.share, 75.0 * len(c.turn_ids) / 30)
        assert f"part {c.index + 1} of {len(chunks)}" in llm.prompt_messages(c)[0]["content"]
        assert f"Final score: {llm_prompt._fmt(c.share)}" in llm.prompt_messages(c)[0]["content"]


def test_huge_utterance_is_cut_and_marked():
    turns = _turns(2)
    turns.loc[1, "utterance"] = "word " * 10_000
    ch = llm.conversation_chunks("c0", turns, 50.0, LLMParams(max_utterance_chars=100, chunk_chars=300))
    assert sum(len(c.turn_ids) for c in ch) == 2
    assert "[…]" in ch[0].transcript and len(ch[0].transcript) < 400


def test_empty_transcript_and_scores_outside_the_range_are_clear_errors():
    with pytest.raises(llm.LLMInputError, match="c0: 0 turn.*no AI turn"):
        llm.conversation_chunks("c0", _turns(0), 50.0, LLMParams())
    only_user = _turns(2)
    only_user["is_ai"] = False
    with pytest.raises(llm.LLMInputError, match="no AI turn"):
        llm.conversation_chunks("c0", only_user, 50.0, LLMParams())
    for bad in (101.0, -1.0, float("nan")):
        with pytest.raises(llm.LLMInputError, match=r"c0: session score .* outside the declared range \[0, 100\]"):
            llm.conversation_chunks("c0", _turns(2), bad, LLMParams())
    assert llm.conversation_chunks("c0", _turns(2), 9.0, LLMParams(score_range=(1.0, 10.0)))


def test_multimodal_needs_video(sim):
    corpus, _ = sim
    with pytest.raises(llm.LLMInputError, match="no listener video"):
        llm.build_chunks(corpus, sorted(corpus.conversations["convo_id"])[:1], LLMParams(), "multimodal", {})


def test_llm_params_are_validated():
    with pytest.raises(ParamError, match="llm.backend"):
        load_params("smoke", llm={"backend": "gpt5"})
    with pytest.raises(ParamError, match="llm.rescale"):
        load_params("smoke", llm={"rescale": "magic"})
    with pytest.raises(ParamError, match="llm.api_key"):
        load_params("smoke", llm={"api_key": "sk-should-never-be-here"})


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.txt")))
def test_real_smollm2_outputs_parse_as_expected(name):
    expected = json.loads((DATA / "expected.json").read_text())[name]
    text = (DATA / name).read_text()
    if expected is None:
        with pytest.raises(llm.MalformedOutput):
            llm.parse_scores(text)
        return
    got = llm.parse_scores(text)
    assert len(got) == expected.pop("n_keys")
    for k, v in expected.items():
        assert float(got[k]) == v


def test_real_truncated_answer_validates_against_its_chunk():
    """The greedy answer repeats A29 and stops mid-object; its 15 ids are the chunk's 15 AI turns."""
    ch = llm.conversation_chunks("c0", _turns(15), 80.0, LLMParams())[0]
    v = llm.validate_scores(
        llm.parse_scores((DATA / "smollm2_prefill_greedy_truncated.txt").read_text()), ch, LLMParams()
    )
    assert sorted(v.labels) == sorted(ch.turn_ids) and not v.unknown
    assert v.raw_sum == 5 - 2 + 13 * 2 and math.isclose(v.deviation, v.raw_sum - 80.0)
    t1 = llm.validate_scores(
        llm.parse_scores((DATA / "smollm2_prefill_t1_trailing_text.txt").read_text()), ch, LLMParams()
    )
    assert set(t1.unknown) == {"A8", "A12", "A14", "A18", "A24", "A2A", "A2B", "A2C", "A2D"}


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"A1": 10, "A3": -5.5}\n```',
        'Sure! Here are the scores:\n{"A1": 10, "A3": -5.5}\nHope this helps.',
        "{'A1': 10, 'A3': -5.5,}",
        "{A1: 10, [A3]: -5.5}",
        '{"scores": {"A1": 10, "A3": -5.5}}',
        '[{"id": "A1", "score": 10}, {"id": "A3", "score": -5.5}]',
        "A1: 10\nA3 = -5.5",
        '{"A1": {"score": 10}, "A3": {"score": "-5.5"}}',
    ],
)
def test_tolerant_parsing(text):
    got = llm.parse_scores(text)
    assert {k.strip("[]"): float(v) for k, v in got.items()} == {"A1": 10.0, "A3": -5.5}


@pytest.mark.parametrize("text", ["", "   ", "I cannot help with that.", '{"Score": 80}', "[1, 2, 3]"])
def test_no_mapping_is_malformed(text):
    with pytest.raises(llm.MalformedOutput):
        llm.parse_scores(text)


def test_an_answer_cut_inside_its_object_drops_the_number_that_may_be_cut():
    """`{"A1": 20, "A3": 3` may have been `"A3": 30`: A3 is left out (not annotated), A1 kept."""
    got = llm.parse_scores('{"A1": 20, "A3": 3')
    assert got == {"A1": 20.0}
    v = llm.validate_scores(got, _chunk(2, 60.0), LLMParams(rescale="none"))
    assert v.annotated == ["A1"] and v.labels == {"A1": 20.0, "A3": 0.0}
    assert llm.parse_scores('{"A1": 20, "A3": 3,') == {"A1": 20.0, "A3": 3.0}  # its number ended


def test_true_and_false_are_not_scores():
    v = llm.validate_scores(
        llm.parse_scores('{"A1": true, "A3": false, "A5": 7}'), _chunk(3, 60.0), LLMParams(rescale="none")
    )
    assert v.invalid == ["A1", "A3"] and v.annotated == ["A5"] and v.labels == {"A1": 0.0, "A3": 0.0, "A5": 7.0}


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[" * 3000, "no id → score mapping"),
        ("{" * 3000, "no id → score mapping"),
        ('{"a": ' * 900 + '{"A1": 3}' + "}" * 900, None),  # deep but readable
        ("[1," * 33_000, "no id → score mapping"),
        ("[" * 1_000_000, "answer of 1000000 characters"),
        ('{"A1": [' * 200_000, "answer of 1600000 characters"),
    ],
)
def test_hostile_answers_are_malformed_quickly_never_a_crash(text, reason):
    t0 = time.perf_counter()
    if reason is None:
        assert llm.parse_scores(text) == {"A1": 3}
    else:
        with pytest.raises(llm.MalformedOutput, match=reason):
            llm.parse_scores(text)
    assert time.perf_counter() - t0 < 2, "the parser's work must be bounded"


def test_a_cached_hostile_answer_marks_its_chunk_failed_on_every_rerun(tmp_path, monkeypatch):
    """The answer is cached before it is parsed: a rerun reads it from the cache and must not crash."""
    monkeypatch.setenv("GELI_TEST_LLM_KEY", "sk-test-secret")
    params = _http_params("http://127.0.0.1:9", output_retries=0)  # nothing listens there: cache only
    backend, ch, cache = llm.OpenAIBackend(params), _chunk(2, 60.0), llm.ResponseCache(tmp_path)
    sampling = llm.sampling_params(ch, params, 0, 0)
    key = llm.ResponseCache.key(backend.name, backend.model, llm.prompt_messages(ch), sampling)
    cache.put(key, {"response": "[" * 3000})
    for _ in range(2):
        dec = llm.decompose([ch], backend, params, llm.ResponseCache(tmp_path), progress=False)
        rec = dec.chunks.iloc[0]
        assert rec["status"] == "failed" and rec["from_cache"] == 1 and "no id" in rec["reason"]


def test_validation_reports_unknown_invalid_and_gives_left_out_turns_zero():
    ch = _chunk(4, 60.0)  # A1 A3 A5 A7
    answer = {"A1": 30, "a3": "20", "A2": 5, "B9": 1, "A5": "lots", "A7": 500}
    v = llm.validate_scores(answer, ch, LLMParams(rescale="none"))
    assert v.labels == {"A1": 30.0, "A3": 20.0, "A5": 0.0, "A7": 0.0}  # every turn of a parsed chunk has a label
    assert v.annotated == ["A1", "A3"]  # App. J's "no annotation": A5 (not a number) and A7 (off the scale)
    assert v.unknown == ["A2", "B9"] and v.invalid == ["A5", "A7"]
    assert v.raw_sum == 50.0 and v.deviation == -10.0 and v.rescaled == "none"
    # the default (shift) moves the annotated turns only: the left-out ones stay at 0, the chunk sums to its share
    d = llm.validate_scores(answer, ch, LLMParams())
    assert d.labels == {"A1": 35.0, "A3": 25.0, "A5": 0.0, "A7": 0.0} and d.rescaled == "shift"
    assert math.isclose(sum(d.labels.values()), ch.share) and d.deviation == -10.0
    none = llm.validate_scores({"A9": 3, "A5": "x"}, ch, LLMParams())
    assert none.labels == {} and none.annotated == []  # nothing usable: the chunk is re-sampled, then failed


def test_rescale_shift_is_the_default_and_no_profile_overrides_it():
    assert LLMParams().rescale == "shift"
    for profile in ("smoke", "cpu", "gpu"):
        assert load_params(profile).llm.rescale == "shift", profile
    ch = llm.conversation_chunks("c0", _turns(30), 75.0, LLMParams(chunk_chars=400))
    assert len(ch) > 3
    for c in ch:  # answers that miss the share in every way: too much, too little, the wrong sign, one id
        for raw in ({c.turn_ids[0]: 90.0}, {i: -7.5 for i in c.turn_ids}, {i: 0.0 for i in c.turn_ids[:2]}):
            v = llm.validate_scores(raw, c, LLMParams())
            assert math.isclose(sum(v.labels.values()), c.share, abs_tol=1e-9)
            assert set(v.labels) == set(c.turn_ids) and v.rescaled == "shift"


@pytest.mark.parametrize(
    "mode,raw,expected",
    [
        ("scale", {"A1": 30, "A3": 10}, {"A1": 45.0, "A3": 15.0}),
        ("shift", {"A1": 30, "A3": 10}, {"A1": 40.0, "A3": 20.0}),
        ("scale", {"A1": 10, "A3": -10}, {"A1": 40.0, "A3": 20.0}),  # sum 0 cannot be scaled: shifted
    ],
)
def test_rescaling_enforces_the_sum(mode, raw, expected):
    v = llm.validate_scores(raw, _chunk(2, 60.0), LLMParams(rescale=mode))
    assert v.labels == pytest.approx(expected) and math.isclose(sum(v.labels.values()), 60.0)
    assert v.deviation == sum(raw.values()) - 60.0


def test_answer_pattern_is_the_chunks_ids_in_order_with_bounded_numbers():
    import re

    ch = _chunk(3, 60.0)  # A1 A3 A5
    pat = llm.answer_pattern(ch, 100.0)
    for ok in (
        '{"A1": 10, "A3": -5.5, "A5": 0}',
        '{"A1": 99.25, "A3": -0.5, "A5": 100}',
        '{"A1": -100.0, "A3": 0, "A5": 7}',
    ):
        assert re.fullmatch(pat, ok) and list(json.loads(ok)) == ["A1", "A3", "A5"]
    for bad in (
        '{"A1": 10, "A3": 5}',
        '{"A3": 5, "A1": 10, "A5": 0}',
        '{"A1": 1, "A3": 2, "A5": 3, "A7": 4}',
        '{"A1": 101, "A3": 2, "A5": 3}',
        '{"A1": 100.5, "A3": 2, "A5": 3}',
        '{"A1": -250, "A3": 2, "A5": 3}',
        '{"A1": 1.234, "A3": 2, "A5": 3}',
        '{"A1": 01, "A3": 2, "A5": 3}',
        '{"A1": "1", "A3": 2, "A5": 3}',
        '{"A1": 1e3, "A3": 2, "A5": 3}',
    ):
        assert not re.fullmatch(pat, bad), bad  # off the ids, their order, JSON numbers or |x| ≤ 100
    longest = '{"A1": -100.00, "A3": -100.00, "A5": -100.00}'
    assert re.fullmatch(pat, longest) and llm.answer_max_chars(ch, 100.0) == len(longest)
    assert re.fullmatch(llm.answer_pattern(ch, 10.0), '{"A1": -9.5, "A3": 10, "A5": 3}')
    for bad in ("-10.5", "11", "100"):
        assert not re.fullmatch(llm.answer_pattern(ch, 10.0), '{"A1": %s, "A3": 0, "A5": 3}' % bad)


def test_cache_key_covers_backend_model_prompt_and_sampling():
    ch = _chunk()
    msgs = llm.prompt_messages(ch)
    s = llm.sampling_params(ch, LLMParams(), sample=0, attempt=0)
    key = llm.ResponseCache.key("local", "m", msgs, s)
    assert key == llm.ResponseCache.key("local", "m", llm.prompt_messages(_chunk()), dict(s))
    other_prompt = [{"role": "user", "content": msgs[0]["content"] + " "}]
    variants = [
        ("openai", "m", msgs, s),
        ("local", "m2", msgs, s),
        ("local", "m", other_prompt, s),
        ("local", "m", msgs, {**s, "temperature": 0.5}),
        ("local", "m", msgs, llm.sampling_params(ch, LLMParams(), sample=1, attempt=0)),
    ]
    assert len({key, *(llm.ResponseCache.key(*v) for v in variants)}) == 1 + len(variants)


# --------------------------------------------------------------------------- reference decomposer


def test_reference_decomposer_splits_the_share_by_affect(sim, tmp_path):
    corpus, _ = sim
    ids = sorted(corpus.conversations["convo_id"])
    chunks = llm.build_chunks(corpus, ids, LLMParams(), "text")
    dec = llm.decompose(chunks, llm.ReferenceDecomposer(), LLMParams(), llm.ResponseCache(tmp_path), progress=False)
    assert not list(tmp_path.rglob("*.json"))  # deterministic and free: never cached
    assert not llm.ReferenceDecomposer.is_llm
    assert (dec.chunks["status"] == "ok").all() and dec.labels["label"].notna().all()
    np.testing.assert_allclose(dec.chunks["deviation"], 0.0, atol=1e-2)
    affect = llm.listener_affect(corpus)
    one = dec.labels[dec.labels["convo_id"] == ids[0]]
    a = np.array([affect[ids[0]][t] for t in one["turn_idx"]])
    assert np.corrcoef(a, one["label"])[0, 1] > 0.99
    q = llm.quality(dec.labels, corpus)
    assert q["coverage"] == 1.0 and q["gt_spearman_within"] > 0.2  # the face is a noisy proxy of the truth


# --------------------------------------------------------------------------- endpoints (real sockets)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        }
    ).encode()


class FakeEndpoint:
    """A real HTTP server on loopback whose /v1/chat/completions answers per ``mode`` (counts requests)."""

    def __init__(self, mode: str):
        self.mode, self.requests, self.bodies = mode, 0, []
        self.in_flight = self.max_in_flight = 0
        lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                with lock:
                    outer.bodies.append(json.loads(self.rfile.read(n)))
                    outer.requests += 1
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                status, body, ctype = outer.answer(outer.requests)
                if status == "sleep":
                    time.sleep(3)
                    status = 200
                elif outer.mode == "ok_busy":
                    time.sleep(0.3)  # long enough for concurrent requests to overlap
                with lock:
                    outer.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, k: int):
        ok = _completion('{"A1": 40, "A3": 20}')
        return {
            "ok": (200, ok, "application/json"),
            "ok_busy": (200, ok, "application/json"),
            "error500": (500, b'{"error": {"message": "boom"}}', "application/json"),
            "refuse401": (401, b'{"error": {"message": "bad key"}}', "application/json"),
            "garbage_http": (200, b"<html>not json at all", "application/json"),
            "garbage_text": (200, _completion("I would rather not say."), "application/json"),
            "slow": ("sleep", ok, "application/json"),
            "first_ok_then_500": (200, ok, "application/json")
            if k == 1
            else (500, b'{"error": {"message": "down"}}', "application/json"),
            "partial_then_garbage": (200, _completion('Scores: {"A3": 50}'), "application/json")
            if k == 1
            else (200, _completion("No idea, sorry."), "application/json"),
        }[self.mode]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def endpoint(request, monkeypatch):
    monkeypatch.setenv("GELI_TEST_LLM_KEY", "sk-test-secret-123")
    ep = FakeEndpoint(request.param)
    yield ep
    ep.close()


def _http_params(url: str, **kw) -> LLMParams:
    return LLMParams(
        **{
            **FAST.__dict__,
            "backend": "openai",
            "base_url": url,
            "model": "m",
            "api_key_env": "GELI_TEST_LLM_KEY",
            **kw,
        }
    )


@pytest.mark.parametrize("endpoint", ["ok"], indirect=True)
def test_http_backend_round_trip_caches_and_keeps_the_key_out(endpoint, tmp_path):
    params = _http_params(endpoint.url)
    cache = llm.ResponseCache(tmp_path)
    chunks = [_chunk(2, 60.0)]
    dec = llm.decompose(chunks, llm.OpenAIBackend(params), params, cache, progress=False)
    assert endpoint.requests == 1 and dec.labels["label"].tolist() == [40.0, 20.0]
    assert endpoint.bodies[0]["model"] == "m" and endpoint.bodies[0]["temperature"] == 1.0
    again = llm.decompose(chunks, llm.OpenAIBackend(params), params, cache, progress=False)
    assert endpoint.requests == 1 and again.chunks["from_cache"].tolist() == [1]
    for f in tmp_path.rglob("*.json"):
        assert "sk-test-secret" not in f.read_text()


@pytest.mark.parametrize("endpoint", ["ok_busy"], indirect=True)
def test_concurrency_limit_holds(endpoint, tmp_path):
    params = _http_params(endpoint.url, concurrency=2)
    chunks = [_chunk(n, 60.0) for n in range(1, 7)]  # distinct prompts: no cache hits
    dec = llm.decompose(chunks, llm.OpenAIBackend(params), params, llm.ResponseCache(tmp_path), progress=False)
    assert endpoint.requests == 6 and endpoint.max_in_flight == 2
    assert dec.chunks["convo_id"].tolist() == ["c0"] * 6 and dec.chunks["n_ai_turns"].tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("endpoint", ["error500"], indirect=True)
def test_endpoint_errors_are_retried_then_raised(endpoint):
    params = _http_params(endpoint.url, retries=2)
    with pytest.raises(llm.LLMEndpointError, match=r"InternalServerError.*after 3 tries.*re-run to resume"):
        llm.decompose([_chunk()], llm.OpenAIBackend(params), params, llm.ResponseCache(), progress=False)
    assert endpoint.requests == 3


@pytest.mark.parametrize("endpoint", ["refuse401"], indirect=True)
def test_endpoint_refusal_fails_at_once(endpoint):
    params = _http_params(endpoint.url, retries=3)
    with pytest.raises(llm.LLMEndpointError, match="HTTP 401 for model 'm'"):
        llm.decompose([_chunk()], llm.OpenAIBackend(params), params, llm.ResponseCache(), progress=False)
    assert endpoint.requests == 1


@pytest.mark.parametrize("endpoint", ["garbage_http"], indirect=True)
def test_garbage_body_is_an_endpoint_error(endpoint):
    params = _http_params(endpoint.url)
    with pytest.raises(llm.LLMEndpointError, match="after 2 tries"):
        llm.decompose([_chunk()], llm.OpenAIBackend(params), params, llm.ResponseCache(), progress=False)


@pytest.mark.parametrize("endpoint", ["slow"], indirect=True)
def test_timeout_is_an_endpoint_error(endpoint):
    params = _http_params(endpoint.url, timeout_s=0.5, retries=0)
    t0 = time.perf_counter()
    with pytest.raises(llm.LLMEndpointError, match="Timeout"):
        llm.decompose([_chunk()], llm.OpenAIBackend(params), params, llm.ResponseCache(), progress=False)
    assert time.perf_counter() - t0 < 3


@pytest.mark.parametrize("endpoint", ["garbage_text"], indirect=True)
def test_malformed_answer_is_resampled_then_recorded_failed(endpoint, tmp_path):
    params = _http_params(endpoint.url, output_retries=2, concurrency=1)  # in turn: the 2nd chunk hits the cache
    dec = llm.decompose(
        [_chunk(), _chunk()], llm.OpenAIBackend(params), params, llm.ResponseCache(tmp_path), progress=False
    )
    rec = dec.chunks.iloc[0]
    assert rec["status"] == "failed" and rec["attempts"] == 3 and "no id" in rec["reason"]
    assert dec.labels["label"].isna().all() and not dec.labels["annotated"].any()  # a failed chunk: masked
    assert dec.summary()["coverage"] == 0.0 and dec.summary()["failed"] == 2
    assert [b["seed"] for b in endpoint.bodies] == [0, 1, 2]  # each re-sample has a new seed
    assert dec.chunks["from_cache"].tolist() == [0, 3]  # the second, identical chunk: no request at all


@pytest.mark.parametrize("endpoint", ["partial_then_garbage"], indirect=True)
def test_left_out_turn_is_zero_and_only_a_failed_chunk_is_masked(endpoint, tmp_path):
    """The first chunk's answer scores A3 only: A1 and A5 get 0 (not annotated), A3 the chunk's whole share;
    the second chunk's answers never parse: its turns are NaN, the only ones masked out of eq. 5."""
    params = _http_params(endpoint.url, output_retries=1, concurrency=1)
    parsed, failed = (
        llm.conversation_chunks("x", _turns(3), 60.0, params)[0],
        llm.conversation_chunks("y", _turns(2), 40.0, params)[0],
    )
    dec = llm.decompose(
        [parsed, failed], llm.OpenAIBackend(params), params, llm.ResponseCache(tmp_path), progress=False
    )
    assert dec.chunks["status"].tolist() == ["ok", "failed"] and dec.chunks["n_annotated"].tolist() == [1, 0]
    x = dec.labels[dec.labels["convo_id"] == "x"].set_index("turn_id")
    assert x["label"].to_dict() == {"A1": 0.0, "A3": 60.0, "A5": 0.0}  # shifted by the default rescale
    assert x["annotated"].to_dict() == {"A1": False, "A3": True, "A5": False}
    assert dec.chunks.loc[0, "raw_sum"] == 50.0 and dec.chunks.loc[0, "deviation"] == -10.0
    y = dec.labels[dec.labels["convo_id"] == "y"]
    assert y["label"].isna().all() and not y["annotated"].any()
    s = dec.summary()
    assert s["coverage"] == pytest.approx(3 / 5) and s["annotated"] == pytest.approx(1 / 5)
    assert s["mean_abs_deviation"] == 10.0 and s["mean_abs_deviation_labels"] == pytest.approx(0.0)
    pairs = pd.DataFrame({"convo_id": ["x", "x", "x", "y", "y"], "turn_idx": [1, 3, 5, 1, 3]})
    got = llm.labels_for_pairs(pairs, dec.labels)
    np.testing.assert_array_equal(got[:3], [0.0, 60.0, 0.0])
    assert np.isnan(got[3:]).all()
    # App. J: the left-out turns are "no annotation", whatever their label 0 says
    assert llm.label_classes(x["label"], x["annotated"]).tolist() == ["no_annotation", "positive", "no_annotation"]


@pytest.mark.parametrize("endpoint", ["first_ok_then_500"], indirect=True)
def test_partial_progress_is_kept_in_the_cache(endpoint, tmp_path):
    params = _http_params(endpoint.url, retries=0, concurrency=1)
    cache = llm.ResponseCache(tmp_path)
    chunks = [_chunk(2, 60.0), _chunk(3, 30.0)]
    with pytest.raises(llm.LLMEndpointError):
        llm.decompose(chunks, llm.OpenAIBackend(params), params, cache, progress=False)
    ok = FakeEndpoint("ok")
    try:
        dec = llm.decompose(
            chunks, llm.OpenAIBackend(_http_params(ok.url, concurrency=1)), params, cache, progress=False
        )
    finally:
        ok.close()
    assert ok.requests == 1 and dec.chunks["from_cache"].tolist() == [1, 0]


def test_missing_api_key_and_url_are_clear_errors(monkeypatch):
    monkeypatch.delenv("GELI_NO_SUCH_KEY", raising=False)
    monkeypatch.delenv("GELI_LLM_BASE_URL", raising=False)
    with pytest.raises(llm.LLMError, match="environment variable 'GELI_NO_SUCH_KEY'"):
        llm.OpenAIBackend(
            LLMParams(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="GELI_NO_SUCH_KEY")
        )
    with pytest.raises(llm.LLMError, match="GELI_LLM_BASE_URL"):
        llm.OpenAIBackend(LLMParams(backend="openai", model="m"))


# --------------------------------------------------------------------------- transformers serve (real LLM server)


@pytest.fixture(scope="module")
def served_smollm2(tmp_path_factory):
    """``transformers serve`` with the local SmolLM2 checkpoint on a free loopback port (no model hub)."""
    from geli_lib.core.models import ModelsNotPrepared, smollm2_path

    try:
        path = str(smollm2_path())
    except ModelsNotPrepared as e:
        pytest.skip(str(e))
    home = tmp_path_factory.mktemp("hf_home")
    (home / "hub").mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    log = open(home / "serve.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            path,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {(home / 'serve.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"transformers serve not ready in 120 s: {(home / 'serve.log').read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        yield url, path, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_real_round_trip_through_transformers_serve(served_smollm2, tmp_path, monkeypatch):
    url, path, proc = served_smollm2
    monkeypatch.setenv("GELI_TEST_LLM_KEY", "local-server-needs-no-key")
    params = _http_params(url, model=path, timeout_s=300.0, output_retries=0, tokens_per_turn=4)
    cache = llm.ResponseCache(tmp_path)
    chunks = [_chunk(1, 60.0)]  # one AI turn, ≤ 36 new tokens: a few seconds on 2 idle cores
    dec = llm.decompose(chunks, llm.OpenAIBackend(params), params, cache, progress=False)
    rec = dec.chunks.iloc[0]
    assert rec["attempts"] == 1 and rec["from_cache"] == 0 and rec["status"] in ("ok", "failed")
    stored = [json.loads(f.read_text()) for f in tmp_path.rglob("*.json")]
    assert len(stored) == 1 and stored[0]["model"] == path and isinstance(stored[0]["response"], str)
    assert stored[0]["response"].strip()  # the model answered something (SmolLM2: rarely valid JSON)
    # The cache hit sends no request: a backend pointed at a closed port still answers.
    dead = _http_params(f"http://127.0.0.1:{_free_port()}/v1", model=path, retries=0)
    again = llm.decompose(chunks, llm.OpenAIBackend(dead), params, cache, progress=False)
    assert again.chunks["from_cache"].tolist() == [1]
    pd.testing.assert_frame_equal(again.labels, dec.labels)


# --------------------------------------------------------------------------- local SmolLM2, constrained decoding


@pytest.fixture(scope="module")
def local_smollm2():
    """The local backend (SmolLM2-135M-Instruct, constrained decoding), loaded once for the module."""
    from geli_lib.core.models import ModelsNotPrepared

    try:
        backend = llm.LocalBackend("cpu", threads=1)
    except ModelsNotPrepared as e:
        pytest.skip(str(e))
    backend._load()
    return backend


def test_local_cache_key_names_the_decoding_constraint(local_smollm2):
    """A cached unconstrained answer is never served as a constrained one (nor across number bounds)."""
    free = llm.LocalBackend("cpu", 1, constrained=False)
    narrow = llm.LocalBackend("cpu", 1, constrained=True, bound=10.0)
    assert free.model.endswith("-json-prefill") and "-json-constrained-" in local_smollm2.model
    assert len({local_smollm2.model, free.model, narrow.model}) == 3
    ch = _chunk()
    msgs, s = llm.prompt_messages(ch), llm.sampling_params(ch, LLMParams(), 0, 0)
    keys = {llm.ResponseCache.key(b.name, b.model, msgs, s) for b in (local_smollm2, free, narrow)}
    assert len(keys) == 3
    assert llm.make_backend(LLMParams(constrained=False)).model == free.model
    assert llm.make_backend(LLMParams()).model == local_smollm2.model
    # bf16 weights answer differently: the id names the dtype in effect (float32 where bf16 is not fast)
    from geli_lib.core.models import fast_bf16

    half = llm.make_backend(LLMParams(bf16=True))
    assert half.model.endswith("-bf16") == half.bf16 == fast_bf16("cpu")
    assert (half.model != local_smollm2.model) == fast_bf16("cpu")


def test_constrained_decoding_scores_every_id_on_a_real_smollm2_call(local_smollm2, sim, tmp_path):
    """One real sampled call (temperature 1) on a real transcript: the answer is the JSON object of
    exactly the chunk's ids, in order, with numbers; the chunk parses at the first attempt."""
    corpus, _ = sim
    cid = sorted(corpus.conversations["convo_id"])[0]
    params = LLMParams(chunk_chars=700, output_retries=0)  # a small chunk: a few seconds on one core
    ch = llm.build_chunks(corpus, [cid], params, "text")[0]
    assert 2 <= len(ch.turn_ids) <= 8
    cache = llm.ResponseCache(tmp_path)
    calls = local_smollm2.calls
    dec = llm.decompose([ch], local_smollm2, params, cache, progress=False)
    assert local_smollm2.calls == calls + 1
    raw = [json.loads(f.read_text())["response"] for f in tmp_path.rglob("*.json")]
    assert len(raw) == 1
    answer = json.loads(raw[0])  # plain JSON, nothing around it
    assert list(answer) == list(ch.turn_ids)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in answer.values())
    rec = dec.chunks.iloc[0]
    assert rec["status"] == "ok" and rec["attempts"] == 1 and rec["n_annotated"] == len(ch.turn_ids)
    assert dec.labels["annotated"].all() and dec.labels["label"].notna().all()
    assert dec.summary()["coverage"] == 1.0 and dec.summary()["annotated"] == pytest.approx(
        1.0 - rec["n_invalid"] / len(ch.turn_ids)
    )
    assert math.isclose(dec.labels["label"].sum(), ch.share, abs_tol=1e-6)  # rescale: shift (the default)


# --------------------------------------------------------------------------- consistency and distillation


def test_consistency_classes_and_agreement():
    """Left-out turns carry label 0 and annotated False: App. J's third class comes from the flag."""
    a = pd.DataFrame(
        {
            "convo_id": ["x"] * 4 + ["y"] * 2,
            "turn_idx": [1, 3, 5, 7, 1, 3],
            "label": [5.0, 0.0, 0.0, -2.0, 1.0, 2.0],
            "annotated": [True, True, False, True, True, True],
        }
    )
    b = a.assign(label=[3.0, -1.0, 0.0, 4.0, 0.0, 2.0], annotated=[True, True, False, True, False, True])
    assert llm.label_classes(a["label"], a["annotated"]).tolist() == [
        "positive",
        "zero_or_negative",
        "no_annotation",
        "zero_or_negative",
        "positive",
        "positive",
    ]
    c = llm.consistency(a, b)
    assert c.set_index("convo_id")["agreement"].to_dict() == {"x": 0.75, "y": 0.5}
    # without the flag a left-out turn (0) would pass for "zero or negative"
    assert llm.label_classes(b["label"]).tolist()[4] == "zero_or_negative"
    # a failed chunk's NaN is "no annotation" with or without it
    failed = a.assign(label=np.nan, annotated=False)
    assert set(llm.label_classes(failed["label"], failed["annotated"])) == {"no_annotation"}
    assert set(llm.label_classes(failed["label"])) == {"no_annotation"}


def test_labels_align_with_pairs():
    """NaN for a failed chunk's turn (x, 1) and for a turn never decomposed (y, 1)."""
    pairs = pd.DataFrame({"convo_id": ["x", "x", "y"], "turn_idx": [1, 3, 1]})
    labels = pd.DataFrame({"convo_id": ["x", "x"], "turn_idx": [3, 1], "label": [7.0, np.nan]})
    out = llm.labels_for_pairs(pairs, labels)
    assert np.isnan(out[0]) and out[1] == 7.0 and np.isnan(out[2])


@pytest.fixture(scope="module")
def train_parts(sim):
    """Pairs and features that carry the planted reward (plus noise), as in test_reward_model."""
    from geli_lib.corpus.data import build_pairs

    corpus, _ = sim
    pairs = build_pairs(corpus, load_params("smoke").data)
    rng = np.random.default_rng(0)
    t = pairs["true_reward"].to_numpy(float)
    base = rng.normal(size=(len(pairs), 16))
    base[:, 0] = (t - t.mean()) / t.std() + 0.3 * rng.normal(size=len(pairs))
    feats = (base @ (rng.normal(size=(16, 24)) / 4)).astype(np.float32)
    ids = sorted(pairs["convo_id"].unique())
    return corpus, pairs, feats, ids[:4], ids[4:]


def test_distillation_fits_the_labels_and_masks_failed_chunks(train_parts):
    """eq. 5: r_θ regressed on the LLM's labels; the turns of failed chunks (NaN) do not pull it."""
    corpus, pairs, feats, train_ids, test_ids = train_parts
    # labels as an LLM gives them: they add up to the score over a conversation (the truth's share)
    labels = (pairs["true_reward"] / pairs.groupby("convo_id")["true_reward"].transform("size")).to_numpy(copy=True)
    labels[::2] = np.nan  # half of the turns: in failed chunks
    p = RewardParams(epochs=40, lr=3e-3, batch_conversations=2)
    base = {"va": np.zeros(len(pairs)), "ls": np.zeros(len(pairs))}
    train = rm.make_train_data(corpus, pairs, feats, train_ids, {**base, rm.LLM_LABELS: labels})
    tr = rm.train_reward_function("llm", train, p, seed=0)
    assert tr.family == "LLM" and np.isfinite(tr.info["loss"]).all()
    test = pairs["convo_id"].isin(test_ids).to_numpy()
    pred = rm.predict(tr, feats[test])
    from geli_lib.reward.evaluation import spearman

    assert spearman(pred, pairs.loc[test, "true_reward"].to_numpy()) > 0.5
    with pytest.raises(rm.RewardModelError, match="no 'llm' labels"):
        rm.train_reward_function("llm", rm.make_train_data(corpus, pairs, feats, train_ids, base), p)
    assert tr.info["labels_clipped"] == 0.0
    # a small LLM that gives one turn of each conversation the whole score: clipped into the head's range
    greedy = np.where(pairs.groupby("convo_id").cumcount() == 0, pairs["score"], 0.0)
    lumpy = rm.train_reward_function(
        "llm", rm.make_train_data(corpus, pairs, feats, train_ids, {**base, rm.LLM_LABELS: greedy}), p, seed=0
    )
    assert 0 < lumpy.info["labels_clipped"] < 0.2
    # clipped labels keep each conversation's sum (eq. 5's labels add up to R), NaN stays NaN
    raw = torch.tensor([[10.0, 0.0, 0.0, float("nan")], [-1.0, 1.0, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    moved, out = rm_training._clip_to_range(raw, mask, 4.0)
    assert out == pytest.approx(1 / 6)
    assert moved[0, :3].tolist() == pytest.approx([4.0, 3.0, 3.0]) and moved[0, 3].isnan()
    assert moved[1, :3].tolist() == pytest.approx([-1.0, 1.0, 0.5])  # in range: unchanged
    assert rm_training._clip_to_range(torch.tensor([[20.0, 20.0]]), torch.tensor([[True, True]]), 4.0)[0].tolist() == [
        [4.0, 4.0]
    ]  # more than the range can hold: capped
    assert np.abs(rm.predict(lumpy, feats)).max() <= lumpy.scale <= 1.25 * 100 / lumpy.T_bar + 1e-6
    none = rm.make_train_data(corpus, pairs, feats, train_ids, {**base, rm.LLM_LABELS: np.full(len(pairs), np.nan)})
    with pytest.raises(rm.RewardModelError, match="every LLM label"):
        rm.train_reward_function("llm", none, p)


def test_esconv_has_text_only_and_its_truth_is_the_local_feedback(tmp_path):
    from fixtures import write_esconv

    from geli_lib.core.params import DataParams
    from geli_lib.corpus.data import load_esconv

    corpus = load_esconv(write_esconv(tmp_path / "esconv.json"), DataParams())
    assert llm.listener_cues(corpus) == {}  # no video: the notebook runs the text variant only
    ids = sorted(corpus.conversations["convo_id"])
    chunks = llm.build_chunks(corpus, ids, LLMParams(), "text")
    assert "Speaker B: Hi, I feel stressed about work." in chunks[0].transcript
    dec = llm.decompose(
        chunks, llm.ReferenceDecomposer(), LLMParams(), llm.ResponseCache(tmp_path / "c"), progress=False
    )
    q = llm.quality(dec.labels, corpus)
    assert q["coverage"] == 1.0 and np.isfinite(q["gt_spearman"])  # against the seeker's feedback


def test_distilled_rows_name_a_non_llm_decomposer():
    assert (
        llm.distilled_name("text", llm.ReferenceDecomposer())
        == "LLM GELI: Language Only [reference decomposer, not an LLM]"
    )
    assert llm.DISTILLED == {"text": "LLM GELI: Language Only", "multimodal": "LLM GELI: Multimodal"}


# --------------------------------------------------------------------------- jump-forward decoding


def test_next_token_greedy_nucleus_and_order_of_the_allowed_set():
    """Greedy takes the most likely allowed token; top_p keeps the smallest set reaching its mass; the
    pick depends on the allowed tokens, not on the order lm-format-enforcer lists them in."""
    logits = torch.full((10,), -5.0)
    logits[[2, 5, 7]] = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    g = torch.Generator()
    assert llm.next_token(logits, [2, 5, 7], 0.0, 1.0, g) == 2
    assert llm.next_token(logits, [5, 7], 0.0, 1.0, g) == 5  # the mask: 2 is not allowed
    # mass 0.6 of the three reaches top_p 0.5: only token 2 is ever drawn
    assert {llm.next_token(logits, [2, 5, 7], 1.0, 0.5, g.manual_seed(s)) for s in range(50)} == {2}
    # top_p 0.8: 2 and 5 (0.9 >= 0.8), never 7
    drawn = [llm.next_token(logits, [2, 5, 7], 1.0, 0.8, g.manual_seed(s)) for s in range(200)]
    assert set(drawn) == {2, 5} and 0.55 < drawn.count(2) / 200 < 0.8  # 0.6 / 0.9 = 0.67
    # top_p 1: all three, about in proportion
    drawn = [llm.next_token(logits, [2, 5, 7], 1.0, 1.0, g.manual_seed(s)) for s in range(400)]
    assert set(drawn) == {2, 5, 7} and 0.04 < drawn.count(7) / 400 < 0.17


def test_jump_forward_equals_token_by_token_decoding_with_fewer_forward_passes(local_smollm2):
    """On a real chunk, greedy jump-forward decoding gives the answer that transformers' generate gives
    under the same grammar one token per forward pass, in fewer passes (ids and separators are forced);
    sampling is a function of the request's seed only (the allowed lists arrive in any order)."""
    from lmformatenforcer import RegexParser, TokenEnforcer

    b, ch = local_smollm2, _chunk(4)
    ids = b._prompt_ids(llm.prompt_messages(ch))
    budget = llm.answer_max_chars(ch, b.bound) + 1

    def enforcer():
        return TokenEnforcer(b._lmfe, RegexParser(llm.answer_pattern(ch, b.bound)))

    e = enforcer()
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = b._lm.generate(
            x,
            attention_mask=torch.ones_like(x),
            pad_token_id=b._tok.pad_token_id,
            prefix_allowed_tokens_fn=lambda _b, s: e.get_allowed_tokens(s.tolist()).allowed_tokens,
            max_new_tokens=budget,
            do_sample=False,
        )[0, len(ids) :].tolist()
    e = enforcer()
    out, forwards = llm.constrained_decode(
        b._lm, ids, lambda s: e.get_allowed_tokens(s).allowed_tokens, budget, b._tok.eos_token_id, 0.0, 1.0, 0
    )
    assert out == ref and out[-1] == b._tok.eos_token_id
    assert list(json.loads(b._tok.decode(out, skip_special_tokens=True))) == list(ch.turn_ids)
    assert forwards < 0.8 * len(out)

    def sampled(seed: int, shuffle: bool) -> list[int]:
        e, rng = enforcer(), np.random.default_rng(seed + 99)

        def allowed(s: list[int]) -> list[int]:
            a = list(e.get_allowed_tokens(s).allowed_tokens)
            return rng.permutation(a).tolist() if shuffle else a

        return llm.constrained_decode(b._lm, ids, allowed, budget, b._tok.eos_token_id, 1.0, 1.0, seed)[0]

    assert sampled(3, False) == sampled(3, True)
    assert len({tuple(sampled(s, False)) for s in range(4)}) > 1  # the seed matters
