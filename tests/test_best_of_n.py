"""Best-of-n, the training-free control for RL: the KL bound and the picks by hand, real draws of the policy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from geli_lib.alignment import best_of_n as bon


def test_kl_bound_by_hand():
    assert bon.kl_bound(1) == 0.0
    assert bon.kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.193 nats
    assert bon.kl_bound(8) == pytest.approx(2.0794415 - 0.875)
    with pytest.raises(ValueError, match="n >= 1"):
        bon.kl_bound(0)


def test_pick_best_takes_the_highest_of_the_first_n_and_the_first_on_ties():
    scores = np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0], [2.0, 2.0, 2.0]])
    assert bon.pick_best(scores, 1).tolist() == [0, 0, 0]
    assert bon.pick_best(scores, 2).tolist() == [1, 0, 0]
    assert bon.pick_best(scores, 3).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="1 <= n <= 3"):
        bon.pick_best(scores, 4)


def _words(_: list[str], responses: list[str]) -> np.ndarray:
    return np.array([len(r.split()) for r in responses], dtype=float)


def _sorry(_: list[str], responses: list[str]) -> np.ndarray:
    return np.array([r.lower().count("sorry") for r in responses], dtype=float)


def test_best_of_n_by_hand_a_varied_pick_and_a_collapsed_one():
    # four contexts, two draws each: the second is longer in every context, and in three of them the same apology
    states = [f"User: topic {i}" for i in range(4)]
    samples = [
        ["I like cats", "I like cats a lot"],
        ["Tennis is fun", "I am so sorry"],
        ["Go team go", "I am so sorry"],
        ["Hello there", "I am so sorry"],
    ]
    greedy = ["ok", "ok", "ok", "ok"]
    judges = {"words": _words, "sorry": _sorry}
    table = bon.best_of_n(states, samples, judges, ["words", "sorry"], [1, 2], greedy, tested=["sorry"])
    row = table.set_index(["selected by", "n"])
    # best-of-2 by length: draws 2 everywhere; gains 2, 1, 1, 2 words -> mean 1.5, all positive:
    # exact two-sided sign-flip p = 2 / 2^4 = 0.125
    assert row.loc[("words", 2), "r̂: words"] == pytest.approx((5 + 4 + 4 + 4) / 4)
    assert row.loc[("words", 2), "gain"] == pytest.approx(1.5)
    assert row.loc[("words", 2), "p"] == pytest.approx(0.125)
    assert row.loc[("words", 2), "r̂: sorry"] == pytest.approx(3 / 4)  # the judge that did not pick
    # ... tested: +1 apology at contexts 2-4, none at context 1 -> mean 0.75; exact p: 2 of 2^3 sign patterns
    # of the three nonzero differences reach |mean| 0.75: 0.25
    assert row.loc[("words", 2), "gain: sorry"] == pytest.approx(0.75)
    assert row.loc[("words", 2), "p: sorry"] == pytest.approx(0.25)
    assert row.loc[("words", 1), "gain"] == 0.0 and row.loc[("words", 1), "p"] == 1.0
    # against greedy "ok" (1 word): +4, +3, +3, +3
    assert row.loc[("words", 2), "gain vs greedy"] == pytest.approx(3.25)
    # the apology is 3 of 4 picks: one response for over half of them, collapsed against the first draws
    assert row.loc[("sorry", 2), "top response share"] == pytest.approx(0.75)
    assert bool(row.loc[("sorry", 2), "collapsed"]) and not bool(row.loc[("sorry", 1), "collapsed"])
    assert row.loc[("greedy base", 0), "r̂: words"] == 1.0 and math.isnan(row.loc[("greedy base", 0), "p"])
    assert row.loc[("words", 2), "KL bound (nats)"] == pytest.approx(bon.kl_bound(2))


def test_best_of_n_refuses_an_unknown_selector_and_ragged_draws():
    with pytest.raises(ValueError, match="not among the scorers"):
        bon.best_of_n(["s"], [["a"]], {"words": _words}, ["sorry"], [1])
    with pytest.raises(ValueError, match=r"\['oracle'\] are not among"):
        bon.best_of_n(["s"], [["a"]], {"words": _words}, ["words"], [1], tested=["oracle"])
    with pytest.raises(ValueError, match="same number of draws"):
        bon.best_of_n(["s", "t"], [["a"], ["a", "b"]], {"words": _words}, ["words"], [1])


def test_sample_groups_draws_from_the_policy_and_its_first_draws_do_not_depend_on_n():
    from geli_lib.core.models import load_policy

    model, tok = load_policy()
    histories = ["User: I went hiking with my dog today.", "User: My exam was cancelled!"]
    three = bon.sample_groups(model, tok, histories, 3, 6, 0.7, 128, seed=1)
    two = bon.sample_groups(model, tok, histories, 2, 6, 0.7, 128, seed=1)
    assert len(three) == 2 and all(len(g) == 3 for g in three)
    assert [g[:2] for g in three] == two
    assert len({r for g in three for r in g}) > 1  # sampled, not one greedy reply repeated


def test_reading_states_the_largest_n_against_rl_in_numbers_and_refuses_several_seeds():
    states = [f"User: topic {i}" for i in range(4)]
    samples = [["a b", "a b c d"], ["x y", "I am so sorry"], ["p q", "I am so sorry"], ["m n", "I am so sorry"]]
    table = bon.best_of_n(states, samples, {"words": _words, "sorry": _sorry}, ["words"], [1, 2], ["ok"] * 4,
                          tested=["sorry"]).assign(seed=0)  # fmt: skip
    rl = pd.DataFrame([{"reward function": "words", "gain": 0.5, "p": 0.01, "KL (nats)": 2.0, "learned": True}])
    assert "RL: +0.50 (p 0.010, KL 2.0 nats), learned." in bon.reading(table, rl)
    text = bon.reading(table, rl.assign(**{"kept update": 15}))
    assert "**words**, best-of-2 (KL ≤ 0.19 nats): +2.00 over a base draw (p 0.125)" in text
    assert "+3.00 over the greedy base" in text and "sorry +0.75 (p 0.250)" in text  # 4 words against "ok"
    assert "RL, kept update 15: +0.50 (p 0.010, KL 2.0 nats), learned." in text
    assert "top response share 0.75, collapsed" in text
    with pytest.raises(ValueError, match="one seed"):
        bon.reading(pd.concat([table, table.assign(seed=1)]))
