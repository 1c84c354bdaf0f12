"""Reward model: MiniLM feature cache, the head, every training method, save/load, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from geli_lib.core.io import cache_dir
from geli_lib.core.params import ParamError, RewardParams, load_params
from geli_lib.reward import reward_model as rm
from geli_lib.reward.evaluation import evaluate_reward
from geli_lib.reward.reward_model import encoder, training

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tiny simulated corpus (8 conversations), its pairs and a train/test split."""
    from fixtures import simulated_corpus

    from geli_lib.corpus.data import build_pairs

    params, corpus = simulated_corpus(tmp_path_factory.mktemp("cache"), simulation={"n_conversations": 8})
    pairs = build_pairs(corpus, params.data)
    ids = sorted(pairs["convo_id"].unique())
    return corpus, pairs, ids[:6], ids[6:]


@pytest.fixture(scope="module")
def synthetic(sim):
    """Features that carry the planted reward (plus noise): trains the heads fast and meaningfully."""
    corpus, pairs, train_ids, test_ids = sim
    rng = np.random.default_rng(0)
    t = pairs["true_reward"].to_numpy(float)
    z = (t - t.mean()) / t.std()
    base = rng.normal(size=(len(pairs), 16))
    base[:, 0] = z + 0.3 * rng.normal(size=len(pairs))
    proj = rng.normal(size=(16, 24)) / 4
    feats = (base @ proj).astype(np.float32)
    va = rm.visual_affect_labels(corpus, pairs)
    ls = rm.sentiment_labels(pairs)
    train = rm.make_train_data(corpus, pairs, feats, train_ids, {"va": va, "ls": ls})
    return feats, va, ls, train


FAST = RewardParams(epochs=60, lr=3e-3, batch_conversations=3, K=8, rudder_epochs=30)


@pytest.fixture()
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GELI_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _pairs(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "convo_id": ["c"] * n,
            "turn_idx": list(range(1, 2 * n, 2)),
            "history": [" User: hi there, how was your weekend?" * (k + 1) for k in range(n)],
            "response": [f"I went hiking with my dog number {k}." for k in range(n)],
            "true_reward": np.arange(n, dtype=float),
            "local_feedback": np.nan,
            "score": 70.0,
        }
    )


# --------------------------------------------------------------------------- encoding


def test_encode_shape_determinism_and_cache_hit(cache_env, monkeypatch):
    pairs = _pairs()
    a = rm.encode_pairs(pairs, progress=False)
    assert a.shape == (5, 2 * 384) and a.dtype == np.float32  # [history | response]
    for half in (a[:, :384], a[:, 384:]):  # sentence-transformers normalises each embedding
        np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    # the response half depends on the response only: the scored utterance is not drowned
    same_resp = rm.encode_pairs(pairs.assign(history=" User: something else entirely"), progress=False)
    np.testing.assert_allclose(same_resp[:, 384:], a[:, 384:], atol=1e-5)
    b = rm.encode_pairs(pairs, progress=False, cache=cache_env / "other")  # fresh cache: model runs again
    np.testing.assert_allclose(a, b, atol=1e-5)

    def boom(*a, **k):
        raise AssertionError("the model was loaded although every pair is cached")

    monkeypatch.setattr(encoder, "_load_encoder", boom)
    c = rm.encode_pairs(pairs.iloc[[3, 1]], progress=False)  # a reordered subset reuses the cache
    np.testing.assert_array_equal(c, a[[3, 1]])


def test_cache_of_another_encoder_is_rejected(cache_env):
    folder = cache_env / "feats"
    store = rm.FeatureCache(folder, "someother-000-t256-f1")
    store.add(["k"], np.zeros((1, 4), np.float32))
    with pytest.raises(rm.EncoderMismatchError, match="someother"):
        rm.encode_pairs(_pairs(2), progress=False, cache=folder)
    # a stray chunk of another encoder inside the right folder is refused too
    own = rm.encoder_id("minilm", 256)
    folder2 = cache_env / "feats2"
    rm.FeatureCache(folder2, "someother-000-t256-f1").add(["k"], np.zeros((1, 4), np.float32))
    (folder2 / "encoder.json").write_text(json.dumps({"encoder_id": own}))
    with pytest.raises(rm.EncoderMismatchError, match="chunk"):
        rm.FeatureCache(folder2, own)


def test_interrupted_encode_keeps_finished_chunks(cache_env, monkeypatch):
    pairs = _pairs(4)
    monkeypatch.setattr(encoder, "CHUNK_PAIRS", 2)
    real, calls = encoder._embed, []

    def flaky(texts, *a, **k):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(texts, *a, **k)

    monkeypatch.setattr(encoder, "_embed", flaky)
    with pytest.raises(KeyboardInterrupt):
        rm.encode_pairs(pairs, progress=False, batch_size=2)
    store = rm.FeatureCache(cache_dir("features") / rm.encoder_id(), rm.encoder_id())
    assert len(store.rows) == 2  # the first chunk survived; the second was never half-written
    monkeypatch.setattr(encoder, "_embed", real)
    assert rm.encode_pairs(pairs, progress=False).shape == (4, 768)


def test_left_truncation_keeps_the_most_recent_history():
    tok, _ = encoder._load_encoder("minilm", "cpu")
    hist, resp = rm.pair_texts(
        pd.DataFrame({"history": [" User: blah blah." * 400 + " AI: zebra crossing tonight"], "response": ["sure"]})
    )
    assert resp == [" AI: sure"]
    ids = tok(hist, truncation=True, max_length=32)["input_ids"][0]
    assert len(ids) == 32
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids[1:-1]).endswith("ai : zebra crossing tonight")  # the END is kept


# --------------------------------------------------------------------------- head and params


def test_head_output_range_and_scale():
    torch.manual_seed(0)
    head = rm.RewardHead(8, scale=12.5)
    out = head(torch.randn(3, 5, 8) * 100)
    assert out.shape == (3, 5)
    assert float(out.detach().abs().max()) <= 12.5 + 1e-5
    head.init_output(4.0)
    head.eval()
    with torch.no_grad():
        assert abs(float(head(torch.zeros(1, 8))[0]) - 4.0) < 3.0  # starts near the mean share


def test_reward_params_validation():
    with pytest.raises(ParamError, match="reward.lam"):
        load_params("smoke", reward={"lam": 1.5})
    with pytest.raises(ParamError, match="reward.K"):
        load_params("smoke", reward={"K": 0})
    with pytest.raises(ParamError, match="reward.ge_method"):
        load_params("smoke", reward={"ge_method": "magic"})
    assert load_params("smoke").reward.encoder == "minilm"


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("method", [m for m in rm.METHOD_FAMILY if m != "llm"])  # llm: tests/test_llm.py
def test_every_method_trains_and_predicts(method, sim, synthetic):
    corpus, pairs, _, test_ids = sim
    feats, va, _, train = synthetic
    tr = rm.train_reward_function(method, train, FAST, seed=0)
    pred = rm.predict(tr, feats)
    assert pred.shape == (len(pairs),) and np.isfinite(pred).all()
    assert np.abs(pred).max() <= tr.scale + 1e-6
    if tr.head is not None:
        assert np.isfinite(tr.info["loss"]).all()
    test = pairs["convo_id"].isin(test_ids).to_numpy()
    m = evaluate_reward(pred[test], pairs[test], va[test], corpus, tr.T_bar)
    assert np.isfinite(m["l_ge_mse"])


def test_training_is_deterministic_per_seed(synthetic):
    feats, _, _, train = synthetic
    p = dataclasses.replace(FAST, epochs=10)
    a = rm.predict(rm.train_reward_function("geli", train, p, seed=1), feats)
    b = rm.predict(rm.train_reward_function("geli", train, p, seed=1), feats)
    c = rm.predict(rm.train_reward_function("geli", train, p, seed=2), feats)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_oracle_beats_mean_on_within_conversation_spearman(sim, synthetic):
    corpus, pairs, _, test_ids = sim
    feats, va, _, train = synthetic
    test = pairs["convo_id"].isin(test_ids).to_numpy()
    res = {}
    for method in ("mean", "oracle"):
        pred = rm.predict(rm.train_reward_function(method, train, FAST, seed=0), feats[test])
        res[method] = evaluate_reward(pred, pairs[test], va[test], corpus)["gt_spearman_within"]
    assert res["mean"] == 0.0  # a constant assigns no credit
    assert res["oracle"] > 0.5


def test_constant_baselines(synthetic):
    _, _, _, train = synthetic
    R, T = train.R.double().numpy(), train.lengths.double().numpy()
    vals, counts = np.unique(R, return_counts=True)
    # sum form: each turn gets R / T (mean over conversations); mode(R) · mean(1/T)
    summed = dataclasses.replace(FAST, ge_form="sum")
    mean = rm.train_reward_function("mean", train, summed)
    assert mean.head is None and mean.T_bar is None
    assert mean.constant == pytest.approx((R / T).mean(), rel=1e-9)
    mode = rm.train_reward_function("mode", train, summed)
    assert mode.constant == pytest.approx(vals[counts.argmax()] * (1 / T).mean(), rel=1e-9)
    # mean form (default): T̄ = the mean length unless set; each turn gets R / T̄
    mean = rm.train_reward_function("mean", train, FAST)
    assert mean.T_bar == pytest.approx(T.mean(), abs=0.01)
    assert mean.constant == pytest.approx(R.mean() / mean.T_bar, rel=1e-6)
    mode = rm.train_reward_function("mode", train, dataclasses.replace(FAST, T_bar=160))
    assert mode.T_bar == 160 and mode.constant == pytest.approx(vals[counts.argmax()] / 160, rel=1e-6)


def test_length_free_convention_lets_the_oracle_recover_the_truth(tmp_path_factory):
    """Simulator, training and evaluation share the fixed-T mean form: with no score noise and features
    that carry each turn's planted reward, the oracle recovers the truth (pooled ρ > 0.9) and Σ-adds up
    to the score up to its rounding to 1-10; in the sum form the same head cannot (it never sees T)."""
    from fixtures import simulated_corpus

    from geli_lib.corpus.data import build_pairs

    _, corpus = simulated_corpus(
        tmp_path_factory.mktemp("noiseless"), simulation={"n_conversations": 16, "score_noise": 0.0}
    )
    pairs = build_pairs(corpus, load_params("smoke").data)
    ids = sorted(pairs["convo_id"].unique())
    t = pairs["true_reward"].to_numpy(float)
    rng = np.random.default_rng(1)
    feats = np.hstack([((t - t.mean()) / t.std())[:, None], rng.normal(size=(len(pairs), 7))]).astype(np.float32)
    train = rm.make_train_data(corpus, pairs, feats, ids[:12])
    test = pairs["convo_id"].isin(ids[12:]).to_numpy()
    assert float(train.lengths.float().std()) > 2  # lengths differ: the sum form's scale would vary
    res = {}
    for form in ("mean", "sum"):
        tr = rm.train_reward_function("oracle", train, dataclasses.replace(FAST, epochs=150, ge_form=form))
        res[form] = evaluate_reward(rm.predict(tr, feats[test]), pairs[test], None, corpus, tr.T_bar)
    assert res["mean"]["gt_pearson"] > 0.9 and res["mean"]["gt_spearman"] > 0.9
    assert res["mean"]["gt_spearman_within"] > 0.6
    assert res["mean"]["l_ge_mse"] < 5**2  # the score is rounded to 1-10 (×10): |error| ≤ 5
    assert res["sum"]["l_ge_mse"] > 3 * res["mean"]["l_ge_mse"]


def test_warm_start_resumes_from_the_va_head_and_keeps_the_best_validation_epoch(synthetic):
    feats, _, _, train = synthetic
    va = rm.train_reward_function("va", train, FAST, seed=0)
    start_only = rm.train_reward_function(
        "geli", train, dataclasses.replace(FAST, warm_start="va", finetune_epochs=0), seed=0
    )
    np.testing.assert_array_equal(rm.predict(start_only, feats), rm.predict(va, feats))
    assert start_only.info["warm_start"]["method"] == "va" and start_only.info["loss"] == []
    p = dataclasses.replace(FAST, warm_start="va", finetune_epochs=4, select_best=True, val_fraction=0.34)
    tuned = rm.train_reward_function("geli", train, p, seed=0)
    info = tuned.info
    assert info["n_validation"] == 2 and info["n_conversations"] == 4 and len(info["val_l_ge"]) == 5
    assert info["best_epoch"] == int(np.argmin(info["val_l_ge"]))  # epoch 0 = the VA head itself
    _, val = rm.split_train_data(train, 0.34, seed=0)
    got = training._val_l_ge(tuned.head, val.X, val, tuned.T_bar)
    assert got == pytest.approx(min(info["val_l_ge"]), rel=1e-5)
    with pytest.raises(ParamError, match="warm_start"):
        load_params("smoke", reward={"warm_start": "mean"})


def test_save_load_round_trip(tmp_path, synthetic):
    feats, _, _, train = synthetic
    tr = rm.train_reward_function("rrd", train, dataclasses.replace(FAST, epochs=5), seed=0)
    tr.save(tmp_path / "rrd")
    meta = json.loads((tmp_path / "rrd" / "reward.json").read_text())
    assert meta["method"] == "rrd" and meta["encoder_id"] == rm.encoder_id()
    back = rm.load_reward_function(tmp_path / "rrd", encoder="minilm")
    np.testing.assert_allclose(rm.predict(back, feats), rm.predict(tr, feats), atol=1e-6)
    assert back.params == tr.params and back.scale == tr.scale
    const = rm.train_reward_function("mean", train, FAST)
    const.save(tmp_path / "mean")
    assert rm.TrainedReward.load(tmp_path / "mean").constant == const.constant
    with pytest.raises(rm.EncoderMismatchError, match="re-encode"):
        rm.TrainedReward.load(tmp_path / "rrd", expect_encoder="smollm2-abc-t256-f1")
    with pytest.raises(rm.EncoderMismatchError, match="d=24"):
        rm.predict(back, np.zeros((2, 384), np.float32))
    with pytest.raises(rm.RewardModelError, match="reward.json"):
        rm.TrainedReward.load(tmp_path / "nothing")


def test_training_cache_keys_exactly_the_inputs_each_method_reads(cache_env, synthetic):
    feats, _, _, train = synthetic
    p = dataclasses.replace(FAST, epochs=5)
    first = rm.train_cached("geli", train, p, seed=0)
    again = rm.train_cached("geli", train, p, seed=0)
    assert again.info["seconds"] == first.info["seconds"]  # read back, not re-trained
    np.testing.assert_array_equal(rm.predict(again, feats), rm.predict(first, feats))
    fresh = rm.train_reward_function("geli", train, p, seed=0)
    np.testing.assert_allclose(rm.predict(fresh, feats), rm.predict(first, feats), atol=1e-6)
    # Other faces (VA labels flipped): RRD does not read them, so its key and its head stay;
    # VA's and GELI's keys change. A new score changes every key.
    faces = dataclasses.replace(train, li={**train.li, "va": 1.0 - train.li["va"]})
    scores = dataclasses.replace(train, R=train.R + 1.0)
    for method, reads_faces in [("rrd", False), ("va", True), ("geli", True)]:
        key = rm.training_key(method, train, p, 0)
        assert (rm.training_key(method, faces, p, 0) != key) == reads_faces
        assert rm.training_key(method, scores, p, 0) != key
        assert rm.training_key(method, train, p, 1) != key
    np.testing.assert_array_equal(
        rm.predict(rm.train_reward_function("rrd", faces, p, seed=0), feats),
        rm.predict(rm.train_reward_function("rrd", train, p, seed=0), feats),
    )
    assert rm.training_key("geli", train, dataclasses.replace(p, lam=1.0), 0) == rm.training_key(
        "geli", faces, dataclasses.replace(p, lam=1.0), 0
    )  # λ = 1: the GE term only


def _chat_pairs() -> pd.DataFrame:
    """5 short hand-made conversations of 3 AI turns each (history, response, score, planted reward)."""
    lines = [
        "I love hiking, the mountains were beautiful.",
        "That sounds awful, I am sorry.",
        "Tell me more about your dog!",
        "Whatever.",
        "Great idea, let us cook pasta tonight.",
        "I do not care about that.",
        "Wonderful news, congratulations!",
        "Hmm, okay then.",
    ]
    rows = []
    for c in range(5):
        hist = ""
        for t in range(3):
            hist += f" User: message {t} of chat {c}, how are you?"
            resp = lines[(c + 2 * t) % len(lines)]
            rows.append(
                {
                    "convo_id": f"c{c}",
                    "turn_idx": 2 * t + 1,
                    "history": hist,
                    "response": resp,
                    "score": 20.0 + 15 * c,
                    "true_reward": float(len(resp) % 7),
                }
            )
            hist += " AI: " + resp
    return pd.DataFrame(rows)


def test_finetune_encoder_trains_saves_and_predicts(cache_env):
    pairs = _chat_pairs()
    feats = rm.encode_pairs(pairs, progress=False)
    va = (pairs["response"].str.contains("!")).to_numpy(float)
    train = rm.make_train_data(None, pairs, feats, li_labels={"va": va, "ls": va})
    p = RewardParams(epochs=2, batch_conversations=2, K=2, finetune_encoder=True, encoder_lr=1e-3, encode_batch_size=8)
    _, base = encoder._load_encoder("minilm", "cpu")
    base_w = dict(base.named_parameters())
    for method in ("geli", "rrd"):  # all valid turns (LI part, RRD reads them) / only the K samples
        tr = rm.train_reward_function(method, train, p, seed=0)
        assert tr.finetuned and tr.info["finetuned"]
        assert np.isfinite(tr.info["loss"]).all()
        name = "encoder.layer.0.attention.self.query.weight"
        assert not torch.equal(dict(tr.text_encoder.named_parameters())[name], base_w[name])
        pred = rm.predict_pairs(tr, pairs)
        assert pred.shape == (len(pairs),) and np.isfinite(pred).all()
    with pytest.raises(rm.RewardModelError, match="predict_pairs"):
        rm.predict(tr, feats)
    tr.save(cache_env / "ft")
    assert json.loads((cache_env / "ft" / "reward.json").read_text())["finetuned"] is True
    back = rm.load_reward_function(cache_env / "ft", encoder="minilm")
    assert back.finetuned
    np.testing.assert_allclose(rm.predict_pairs(back, pairs), pred, atol=1e-5)
    # without fine-tuning, predict_pairs reads the cached features
    frozen = rm.train_reward_function("rrd", train, dataclasses.replace(p, finetune_encoder=False))
    np.testing.assert_allclose(rm.predict_pairs(frozen, pairs), rm.predict(frozen, feats), atol=1e-6)
    with pytest.raises(ParamError, match="encoder_lr"):
        load_params("smoke", reward={"encoder_lr": 0.0})
    assert load_params("gpu").reward.finetune_encoder


# --------------------------------------------------------------------------- bad input


def test_all_nan_labels_are_a_clear_error(sim, synthetic):
    corpus, pairs, train_ids, _ = sim
    feats = synthetic[0]
    nan = np.full(len(pairs), np.nan)
    train = rm.make_train_data(corpus, pairs, feats, train_ids, {"va": nan, "ls": nan})
    with pytest.raises(rm.RewardModelError, match="every 'va' label"):
        rm.train_reward_function("va", train, FAST)
    with pytest.raises(rm.RewardModelError, match="every 'va' label"):
        rm.train_reward_function("geli", train, FAST)
    rm.train_reward_function("rrd", train, dataclasses.replace(FAST, epochs=2))  # GE needs no labels


def test_oracle_needs_truth(sim, synthetic):
    corpus, pairs, train_ids, _ = sim
    p = pairs.assign(true_reward=np.nan)
    train = rm.make_train_data(corpus, p, synthetic[0], train_ids, {"va": synthetic[1], "ls": synthetic[2]})
    with pytest.raises(rm.RewardModelError, match="simulated corpus only"):
        rm.train_reward_function("oracle", train, FAST)


def test_k_larger_than_conversations_and_missing_conversations(sim, synthetic, capsys):
    corpus, pairs, train_ids, _ = sim
    feats, va, ls, train = synthetic
    assert int(train.lengths.max()) < 500
    for sampling in ("ren", "with_replacement", "without_replacement"):
        p = dataclasses.replace(FAST, epochs=3, K=500, rrd_sampling=sampling)
        assert np.isfinite(rm.train_reward_function("rrd", train, p).info["loss"]).all()
    p = dataclasses.replace(FAST, epochs=3, rrd_bias_correction=True, T_bar=160)
    assert np.isfinite(rm.train_reward_function("rrd", train, p).info["loss"]).all()
    t = rm.make_train_data(corpus, pairs, feats, list(train_ids) + ["no-such-convo"], {"va": va, "ls": ls})
    assert t.skipped == {"no_ai_turn": ["no-such-convo"]} and len(t) == len(train_ids)
    assert "no_ai_turn" in capsys.readouterr().err
    with pytest.raises(rm.RewardModelError, match="no trainable conversation"):
        rm.make_train_data(corpus, pairs, feats, ["no-such-convo"], {"va": va, "ls": ls})
    with pytest.raises(rm.RewardModelError, match="features must be"):
        rm.make_train_data(corpus, pairs, feats[:3], train_ids, {"va": va, "ls": ls})
    with pytest.raises(rm.RewardModelError, match="unknown"):
        rm.train_reward_function("magic", train, FAST)


def test_labels_align_with_pairs(sim):
    corpus, pairs, _, _ = sim
    va = rm.visual_affect_labels(corpus, pairs)
    assert va.shape == (len(pairs),) and set(np.unique(va)) <= {0.0, 1.0}
    short = pairs["response"].str.split().str.len() <= 5
    assert (va[short.to_numpy()] == 0).all()  # authors: short turns get Γ = 0
    ls = rm.sentiment_labels(pd.DataFrame({"response": ["I love this, wonderful!", "This is awful."]}))
    assert list(ls) == [1.0, 0.0]


def test_step_loss_is_eq_2_and_each_method_a_case_of_it():
    from geli_lib.reward import losses

    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    r_hat = torch.tensor([[15.0, 20.0, 10.0, 25.0, 10.0], [20.0, 10.0, 15.0, 0.0, 0.0]])
    R = torch.tensor([65.0, 55.0])
    target = torch.tensor([[0.0, 40.0, 0.0, 40.0, float("nan")], [40.0, 0.0, 0.0, 0.0, 0.0]])
    l_ge = lambda: losses.sum_decomposition_loss(r_hat, mask, R, 4.0)  # noqa: E731
    # by hand: (T̄/T)·Σ r̂ = 64, 60 -> L_GE = (1 + 25) / 2 = 13; L_LI over the 7 labelled turns = 1675 / 7
    assert rm.step_loss(r_hat, mask, 1.0, l_ge, target).item() == pytest.approx(13.0)
    assert rm.step_loss(r_hat, mask, 0.0, l_ge, target).item() == pytest.approx(1675 / 7)
    assert rm.step_loss(r_hat, mask, 0.5, l_ge, target).item() == pytest.approx(0.5 * 13 + 0.5 * 1675 / 7)

    def never() -> torch.Tensor:
        raise AssertionError("L_GE computed at λ = 0")

    rm.step_loss(r_hat, mask, 0.0, never, target)  # λ = 0 never samples (RNG order of LI methods)
    with pytest.raises(rm.RewardModelError, match="no loss term"):
        rm.step_loss(r_hat, mask, 0.0, l_ge, None)


def test_masked_mse_raises_like_li_loss_and_an_unlabelled_batch_has_a_zero_li_term():
    r_hat = torch.tensor([[0.5, -1.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    none = torch.full((1, 3), float("nan"))
    with pytest.raises(ValueError, match="no valid turn carries an LI label"):
        training._masked_mse(r_hat, mask, none)
    assert training._masked_mse(r_hat, mask, torch.tensor([[1.5, -1.0, float("nan")]])).item() == pytest.approx(0.5)
    for lam in (0.0, 0.5):  # LI alone, GELI: the step on a batch without labels runs, its LI term is 0
        ge = torch.tensor(4.0)
        loss = rm.step_loss(r_hat, mask, lam, (lambda: ge) if lam > 0 else None, none)
        assert loss.item() == pytest.approx(lam * 4.0)
