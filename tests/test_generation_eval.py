"""Automatic evaluation of generations: text metrics by hand, r_θ's input format, cross-scoring, notebook 08."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from geli_lib.alignment import generation_eval as ge
from geli_lib.core.compute import torch_threads
from geli_lib.core.params import DataParams, EvalParams, load_params


def _gens(**over) -> pd.DataFrame:
    rows = []
    for seed in (0, 1, 2):
        for c in range(2):
            for model, resp in (("base", "That's nice."), ("ground truth", f"I love tennis too, Federer {c}!")):
                rows.append(
                    {
                        "corpus": "simulated",
                        "seed": seed,
                        "context_id": f"c{c}:3",
                        "convo_id": f"c{c}",
                        "turn_idx": 3,
                        "history": "User: I love tennis\nAI: Me too\nUser: Federer is great",
                        "model": model,
                        "response": resp,
                    }
                )
    df = pd.DataFrame(rows)
    for k, v in over.items():
        df[k] = v
    return df


# --------------------------------------------------------------------------- text metrics by hand


def test_distinct_n_by_hand():
    # unigrams: the cat sat | the cat ran -> 6 tokens, 4 unique; bigrams: 4, 3 unique
    assert ge.distinct_n(["The cat sat", "the cat ran"], 1) == pytest.approx(4 / 6)
    assert ge.distinct_n(["The cat sat", "the cat ran"], 2) == pytest.approx(3 / 4)
    assert math.isnan(ge.distinct_n(["", "hi"], 2))


def test_repetition_by_hand():
    # bigrams of "i am sorry i am sorry": (i,am) (am,sorry) (sorry,i) (i,am) (am,sorry): 2 repeats of 5
    assert ge.repetition("I am sorry. I am sorry.", 2) == pytest.approx(2 / 5)
    assert ge.repetition("I went hiking with my dog", 2) == 0.0
    assert ge.repetition("hello", 2) == 0.0


def test_context_overlap_is_a_specificity_proxy():
    hist = "User: I love tennis\nAI: cool\nUser: Federer is the best player"
    assert ge.context_overlap(hist, "That's nice.") == 0.0  # generic: "nice" is not in the context
    assert math.isnan(ge.context_overlap(hist, "Oh yes, it is."))  # only function words: no content
    # content words: love, tennis, can't, get, enough, roger, federer -> tennis, love, federer in history
    assert ge.context_overlap(hist, "Me too, I love tennis, I can't get enough of Roger Federer!") == pytest.approx(
        3 / 7
    )


def test_auto_eval_rows_and_mean_sd_table():
    rows = ge.auto_eval(_gens(), EvalParams(), DataParams())
    assert list(rows.columns) == list(ge.AUTO_EVAL_COLUMNS)
    assert set(rows["metric"]) == {
        "length",
        "vader_compound",
        "vader_positive",
        "context_overlap",
        "repetition",
        "distinct_1",
        "distinct_2",
        "same_as_base",
        "empty",
    }
    base = rows[(rows["model"] == "base") & (rows["seed"] == 0)].set_index("metric")["value"]
    assert base["length"] == 2  # "that's", "nice"
    assert base["distinct_1"] == pytest.approx(2 / 4)  # the same reply to both contexts
    assert base["vader_positive"] == 1.0  # "nice" is positive for VADER
    table = ge.auto_eval_table(rows)
    assert table.loc[("simulated", "base"), "length"] == "2.00 ± 0.00"
    assert table.loc[("simulated", "ground truth"), "distinct_1"] == "0.58 ± 0.00"  # 7 unique of 12 words


def test_same_as_base():
    g = _gens()
    g.loc[(g["model"] == "ground truth") & (g["context_id"] == "c0:3"), "response"] = " That's   nice. "
    g = g[~((g["model"] == "base") & (g["seed"] == 2))]  # no base response in seed 2
    same = ge.same_as_base(g, "base")
    truth = g["model"] == "ground truth"
    assert same[truth & (g["seed"] < 2)].tolist() == [1.0, 0.0, 1.0, 0.0]  # whitespace does not count
    assert same[truth & (g["seed"] == 2)].isna().all()
    assert (same[g["model"] == "base"] == 1.0).all()


def test_mean_sd_over_seeds():
    rows = pd.DataFrame(
        {"corpus": "x", "seed": [0, 1, 2], "model": "m", "metric": "length", "value": [1.0, 2.0, 6.0], "n": 1}
    )
    assert ge.auto_eval_table(rows).loc[("x", "m"), "length"] == f"3.00 ± {np.std([1, 2, 6], ddof=1):.2f}"
    # one seed: the mean alone, since an sd of 0 would claim that seeds agree
    one = ge.auto_eval_table(rows[rows["seed"] == 2])
    assert one.loc[("x", "m"), "length"] == "6.00" and "one seed" in one.attrs["note"]


def test_cross_reward_table_of_one_seed_gives_means_and_stars():
    g = _gens()
    g = g[g["seed"] == 0].reset_index(drop=True)
    per = pd.DataFrame(index=g.index)
    per["reward: A"] = np.where(g["model"] == "base", 0.0, 1.0)
    stats = ge.cross_reward_stats(g, per)
    table = ge.cross_reward_table(stats, order=["base"])
    assert table.loc[("simulated", "base"), "A"] == "0.00"
    # 2 contexts, both +1: a sign flip reaches |sum| = 2 in 2 of 4 patterns, p = 0.5, no star
    assert table.loc[("simulated", "ground truth"), "A"] == "1.00"


# --------------------------------------------------------------------------- significance, cross-reward table


def test_paired_p_by_hand():
    # d = 1, 2, 3, 4: of the 16 sign patterns only all-plus and all-minus reach |sum| >= 10
    assert ge.paired_p([2, 3, 4, 5], [1, 1, 1, 1]) == pytest.approx(2 / 16)
    # d = 1, 1, 1, -1: |sum| >= 2 for 10 of 16 patterns (sums 4, -4, and 8 patterns with sum ±2)
    assert ge.paired_p([1, 1, 1, 0], [0, 0, 0, 1]) == pytest.approx(10 / 16)
    # off the grid: Monte-Carlo sign flips; exact answer for √2, √3, √5: 2 of 8 patterns
    mc = ge.paired_p(np.sqrt([2.0, 3.0, 5.0]), [0.0, 0.0, 0.0], permutations=20000)
    assert mc == pytest.approx(0.25, abs=0.015)
    assert ge.paired_p([1.0, 2.0], [1.0, 2.0]) == 1.0  # no difference at all
    assert ge.paired_p([1.0, np.nan, 3.0], [0.0, 5.0, 0.0]) == pytest.approx(2 / 4)  # NaN pairs dropped
    with pytest.raises(ValueError, match="different sizes"):
        ge.paired_p([1.0], [1.0, 2.0])


def test_cross_reward_table_mean_sd_over_seeds_and_stars():
    g = _gens()
    per = pd.DataFrame(index=g.index)
    # base scores 0; ground truth scores 1 + seed under "A" (significant: 6 positive pairs), 0 under "B"
    per["reward: A"] = np.where(g["model"] == "base", 0.0, 1.0 + g["seed"])
    per["reward: B"] = 0.0
    stats = ge.cross_reward_stats(g, per)
    truth_a = stats[(stats["model"] == "ground truth") & (stats["reward_fn"] == "A")].iloc[0]
    assert truth_a["mean"] == pytest.approx(2.0) and truth_a["sd"] == pytest.approx(1.0)  # seeds: 1, 2, 3
    assert truth_a["n"] == 6 and truth_a["diff"] == pytest.approx(2.0)
    assert truth_a["p"] == pytest.approx(2 / 64) and truth_a["test"] == ge.PAIRED_TEST
    assert np.isnan(stats[(stats["model"] == "base")]["p"]).all()
    table = ge.cross_reward_table(stats, order=["base"])
    assert list(table.columns) == ["A", "B"] and table.index[0] == ("simulated", "base")
    assert table.loc[("simulated", "ground truth"), "A"] == "2.00 ± 1.00*"
    assert table.loc[("simulated", "ground truth"), "B"] == "0.00 ± 0.00"
    assert "sign-flip" in table.attrs["note"]


# --------------------------------------------------------------------------- reading generations


def test_read_generations_missing_file_points_to_07(tmp_path):
    with pytest.raises(ge.GenerationsError, match="07_ppo"):
        ge.read_generations(tmp_path / "generations.csv")


def test_read_generations_bad_input(tmp_path):
    path = tmp_path / "g.csv"
    _gens().drop(columns="history").to_csv(path, index=False)
    with pytest.raises(ge.GenerationsError, match=r"missing column\(s\) \['history'\]"):
        ge.read_generations(path)
    g = _gens()
    pd.concat([g, g.iloc[[3]]]).to_csv(path, index=False)
    with pytest.raises(ge.GenerationsError, match="duplicate"):
        ge.read_generations(path)
    g.loc[5, "model"] = ""
    g.to_csv(path, index=False)
    with pytest.raises(ge.GenerationsError, match="row 7: empty 'model'"):
        ge.read_generations(path)
    g = _gens()
    g.loc[0, "response"] = ""  # an empty response (EOS at once) is kept
    g.to_csv(path, index=False)
    assert ge.read_generations(path)["response"].iloc[0] == ""


# --------------------------------------------------------------------------- r_θ's input and cross-scoring


@pytest.fixture(scope="module")
def corpus_pairs():
    from geli_lib.corpus.data import build_pairs, load_corpus

    params = load_params("smoke")
    corpus = load_corpus(params, progress=False)
    ids = sorted(corpus.conversations["convo_id"])[:3]
    return corpus, build_pairs(corpus, params.data, convo_ids=ids), params


def test_reward_history_equals_build_pairs_format(corpus_pairs):
    corpus, pairs, params = corpus_pairs
    t = corpus.turns.sort_values(["convo_id", "turn_idx"])
    checked = 0
    for cid, g in t.groupby("convo_id"):
        if cid not in set(pairs["convo_id"]):
            continue
        lines = [("AI: " if a else "User: ") + u for a, u in zip(g["is_ai"], g["utterance"])]
        for i, (ai, idx) in enumerate(zip(g["is_ai"], g["turn_idx"])):
            if ai:
                want = pairs[(pairs["convo_id"] == cid) & (pairs["turn_idx"] == idx)]["history"].iloc[0]
                assert ge.reward_history("\n".join(lines[:i]), params.data) == want
                checked += 1
    assert checked > 20
    short = DataParams(history_turns=2, history_chars=12)
    assert ge.reward_history("User: a\nAI: bb\nUser: hello there", short) == "bb User: hello there"[-12:]


def test_cross_scoring_with_a_trained_reward_function(corpus_pairs, tmp_path, monkeypatch):
    from geli_lib.core.params import RewardParams
    from geli_lib.reward import reward_model as rm

    monkeypatch.setenv("GELI_CACHE", str(tmp_path / "cache"))
    corpus, pairs, params = corpus_pairs
    feats = rm.encode_pairs(pairs, progress=False)
    train = rm.make_train_data(corpus, pairs, feats)
    rp = RewardParams(epochs=20, lr=3e-3, batch_conversations=3)
    ls = rm.train_reward_function("ls", train, rp, seed=0, progress=False)
    mean = rm.train_reward_function("mean", train, rp, seed=0, progress=False)
    folders = {"LI: Language Sentiment": ls.save(tmp_path / "ls"), "Mean": mean.save(tmp_path / "mean")}
    gens = _gens()
    scores = ge.cross_scores(gens, folders, params.data)
    assert list(scores.columns) == ["reward: LI: Language Sentiment"]  # the constant Mean is left out
    want = rm.predict(ls, rm.encode_pairs(ge.reward_pairs(gens, params.data), progress=False))
    np.testing.assert_allclose(scores.iloc[:, 0].to_numpy(), want, rtol=1e-5)
    assert scores.iloc[:, 0].nunique() == 3  # three distinct responses, one shared history
    scorer = ge.PairScorer(ls, params.data)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the context of a bf16 RL trainer (rl.bf16)
        in_bf16_trainer = scorer(gens["history"].tolist(), gens["response"].tolist())
    np.testing.assert_allclose(in_bf16_trainer, want, rtol=1e-6)  # r̂ stays fp32: one reward
    rows = ge.auto_eval(gens, params.eval, params.data, folders)
    got = rows[(rows["metric"] == "reward: LI: Language Sentiment") & (rows["model"] == "base")]["value"]
    np.testing.assert_allclose(got.to_numpy(), want[(gens["model"] == "base").to_numpy()][:3], rtol=1e-5)

    # The collapse control: the adapted model's most frequent reply, given in every context, vs the real reply
    truth = gens[gens["model"] == "ground truth"]
    replies = ["Great, wonderful, amazing!", "Great, wonderful, amazing!", "I hate it."] * 2
    gens = pd.concat([gens, truth.assign(model="LS", response=replies[: len(truth)])], ignore_index=True)
    per = ge.per_response(gens, params.eval, params.data, folders)
    probe = ge.modal_response_probe(gens, per, folders, params.data, models=["LS"])
    assert list(probe.columns) == list(ge.PROBE_COLUMNS) and len(probe) == 3  # one per seed, one reward fn
    row = probe[probe["seed"] == 0].iloc[0]
    assert row["modal response"] == "Great, wonderful, amazing!" and row["share of its responses"] == 1.0
    modal = scorer(truth["history"].tolist()[:2], ["Great, wonderful, amazing!"] * 2)
    real = scorer(truth["history"].tolist()[:2], truth["response"].tolist()[:2])
    assert row["modal r̂"] == pytest.approx(modal.mean(), rel=1e-5)
    assert row["ground truth r̂"] == pytest.approx(real.mean(), rel=1e-5)
    assert row["modal beats ground truth"] == (modal > real).mean() and row["n"] == 2


def test_a_texts_embedding_does_not_depend_on_what_the_process_scored_before(corpus_pairs, tmp_path, monkeypatch):
    """The embeddings PairScorer keeps in the process-wide memo are bit for bit the same whether a text was
    scored among 80 texts or with only its pair's other text: each text is embedded on its own. In a batch its
    embedding moved in the last bits with the batch's shape, and through the memo one RL run's rewards followed
    what another run of the process had scored (LI: Visual Affect after GELI vs alone: r̂ 1.67 vs 1.74 at
    update 3)."""
    from geli_lib.core.params import RewardParams
    from geli_lib.reward import reward_model as rm

    monkeypatch.setenv("GELI_CACHE", str(tmp_path / "cache"))
    corpus, pairs, params = corpus_pairs
    train = rm.make_train_data(corpus, pairs, rm.encode_pairs(pairs, progress=False))
    ls = rm.train_reward_function("ls", train, RewardParams(epochs=5, batch_conversations=3), seed=0, progress=False)
    texts = corpus.turns["utterance"].astype(str).tolist()
    hist = ["\n".join(f"User: {t}" for t in texts[i : i + 1 + i % 7]) for i in range(40)]  # 1-7 lines: mixed lengths
    resp = texts[100:140]
    ge._FROZEN_MEMO.clear()
    together = ge.PairScorer(ls, params.data)
    together(hist, resp)
    together_memo = dict(together.memo)  # the shared memo is emptied below
    alone: dict[str, np.ndarray] = {}
    for h, r in zip(hist, resp):
        ge._FROZEN_MEMO.clear()
        scorer = ge.PairScorer(ls, params.data)
        scorer([h], [r])
        alone.update(scorer.memo)
    assert set(alone) == set(together_memo) and len(alone) == 80
    differ = [t for t in alone if not np.array_equal(alone[t], together_memo[t])]
    assert not differ, f"{len(differ)} of 80 embeddings depend on their batch"
    # nor on the thread count of earlier work: another count has its own memo
    with torch_threads(1 if torch.get_num_threads() > 1 else 2):
        assert together.memo == {}
    assert together.memo is ge._FROZEN_MEMO[(*together._memo_key, torch.get_num_threads())]


# --------------------------------------------------------------------------- notebook 08


def test_notebook_08_without_generations_names_07(tmp_path, monkeypatch):
    from geli_lib.core.runs import NOTEBOOK_DIR, StageError, run_notebook

    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    with pytest.raises(StageError, match="07_ppo"):
        run_notebook(
            NOTEBOOK_DIR / "08_generations_eval.ipynb", tmp_path / "08.ipynb", {"profile": "smoke"}, progress=False
        )


def test_cross_reward_reading_by_hand():
    def row(model, fn, diff, p):
        cells = {"corpus": "simulated", "model": model, "reward_fn": fn, "mean": 1.0 + diff, "sd": 0.0}
        return cells | {"sd_contexts": 0.5, "n_seeds": 1, "n": 64, "diff": diff, "p": p, "test": ge.PAIRED_TEST}

    fns = ["G", "R", "V", "S", "Oracle"]
    stats = pd.DataFrame(
        [row("base", f, np.nan, np.nan) for f in fns]
        + [row("G", "G", 0.26, 7e-4), row("G", "R", 0.30, 1e-4), row("G", "V", -0.14, 0.003)]
        + [row("G", "S", 0.05, 0.40), row("G", "Oracle", -0.11, 0.014)]
        + [row("ground truth", f, d, p) for f, d, p in zip(fns, [0.1, 0.2, 0.3, 0.4, -0.1], [0.5, 0.01, 0.02, 0.03, 1])]
    )
    text = ge.cross_reward_reading(stats, truth="Oracle", top=2)
    lines = text.split("\n")
    assert lines[0] == (
        "- **G** (1 seed, 64 paired contexts): +0.26 under its own reward (p 7e-4); of the 3 other reward functions it "
        "raises 1 (R +0.30), lowers 1 (V -0.14) and leaves 1 within noise (p ≥ 0.05); under Oracle: -0.11 (p 0.014)."
    )
    # no reward of its own; 3 of 4 raised at p < 0.05, the two largest named
    assert lines[1].startswith("- **ground truth** (1 seed, 64 paired contexts): of the 4 other reward functions it ")
    assert "raises 3 (largest: S +0.40, V +0.30), lowers 0 and leaves 1 within noise" in lines[1]
    assert len(lines) == 2  # the base is what the others are compared with: no line of its own
