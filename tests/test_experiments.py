"""Experiments: trained reward functions are saved per (profile, corpus, name, seed) and found again."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geli_lib import experiments as ex
from geli_lib import reward_model as rm
from fixtures import simulated_corpus
from geli_lib.data import build_pairs


@pytest.fixture(scope="module")
def reward_data(tmp_path_factory):
    """RewardData of a tiny simulated corpus with random features (no encoder needed)."""
    params, corpus = simulated_corpus(tmp_path_factory.mktemp("cache"), simulation={"n_conversations": 6},
                                      reward={"epochs": 5, "batch_conversations": 3, "K": 4})
    pairs = build_pairs(corpus, params.data)
    ids = sorted(pairs["convo_id"].unique())
    pairs["split"] = np.where(pairs["convo_id"].isin(ids[:4]), "reward_train", "reward_test")
    feats = np.random.default_rng(0).normal(size=(len(pairs), 12)).astype(np.float32)
    labels = {"va": rm.visual_affect_labels(corpus, pairs), "ls": rm.sentiment_labels(pairs)}
    train = rm.make_train_data(corpus, pairs, feats, ids[:4], labels)
    return params, ex.RewardData(corpus, pairs, feats, labels, train)


def test_run_methods_saves_every_seed_and_lists_by_name(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    specs = [ex.MethodSpec("GE: RRD (K=4)", "rrd", {"K": 4}), ex.MethodSpec("Mean", "mean")]
    rows, _ = ex.run_methods(data, specs, [3, 1], params)
    assert len(rows) == 4
    saved = ex.saved_reward_functions(params.profile, params.corpus)
    assert set(saved) == {"GE: RRD (K=4)", "Mean"}
    assert saved["Mean"] == ex.reward_function_dir(params.profile, params.corpus, "Mean", 1)  # lowest seed
    assert ex.saved_reward_functions(params.profile, params.corpus, seed=3)["Mean"].name == "seed3"
    assert ex.saved_reward_functions(params.profile, "esconv") == {}
    # the saved function predicts what the trained one did
    loaded = rm.TrainedReward.load(saved["GE: RRD (K=4)"])
    assert loaded.info["name"] == "GE: RRD (K=4)" and loaded.seed == 1
    again = rm.train_reward_function("rrd", data.train, dataclasses.replace(params.reward, K=4), seed=1)
    np.testing.assert_allclose(rm.predict(loaded, data.features[data.test]),
                               rm.predict(again, data.features[data.test]), rtol=1e-5)


def test_sweeps_do_not_overwrite_saved_functions(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    ex.sweep(data, dataclasses.replace(params, seeds=[0]), "lam", [0.2])
    assert ex.saved_reward_functions(params.profile, params.corpus) == {}
