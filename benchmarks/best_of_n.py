"""Control for 07: best-of-n of the base policy under each RL reward function, no training.

For each ``--seeds``: the 64 held-out contexts 08 tests the adapted models on, ``--n`` sampled base responses
each (``rl.temperature``, as RL's rollouts; ``rl.gen_tokens`` tokens, as 08's generations) and the base's
greedy response; every draw is scored by that seed's reward functions of ``rl.reward_fns`` and the oracle
(the one scoring of training and evaluation, ``PairScorer``); best-of-1, 2, 4, … under each reward function
is scored by all of them (:func:`geli_lib.alignment.best_of_n.control`, which 07 runs at the profile's seed
with ``eval.best_of_n`` draws). Read it beside
``adhoc/rl_seeds`` (``benchmarks/rl_seeds.py``): where RL collapses and best-of-n does not, the reward has
gains without collapse that the optimiser missed; the oracle column says whether the picks are better for the
planted truth or only for the reward that picked them.

A reward function (or the oracle) that 02-04 did not train at a seed is trained first, as ``rl_seeds.py`` does
(:func:`geli_lib.reward.experiments.train_missing`).

Writes ``results/<profile>/adhoc/best_of_n/tables/best_of_n.csv`` (a rerun replaces its own seeds; rows of
other draw settings are dropped with a message) and prints the table per seed and its mean over seeds.

Run: ``python benchmarks/best_of_n.py [--profile cpu] [--seeds 0 1 2] [--n 8]``
(2 cores of a Xeon with AMX, cpu profile: ~1.6 min per seed at n 8, mostly sampling and scoring).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GELI_PROGRESS", "0")

import pandas as pd  # noqa: E402

from geli_lib.alignment import rl  # noqa: E402
from geli_lib.alignment.best_of_n import control  # noqa: E402
from geli_lib.core import load_params, results_dir, write_csv  # noqa: E402
from geli_lib.core.params import StudyParams  # noqa: E402
from geli_lib.corpus import data  # noqa: E402
from geli_lib.reward import experiments  # noqa: E402


def one_seed(params: StudyParams, seed: int, n: int) -> pd.DataFrame:
    """The best-of-n table of one seed (its held-out contexts, its reward functions), as 07 computes it."""
    corpus = data.load_corpus(params)
    split = data.split_conversations(corpus.conversations, params.splits)
    _, held_out, _ = rl.rl_contexts(corpus, split, params.rl, seed)
    saved = experiments.train_missing(params, [*params.rl.reward_fns, experiments.ORACLE.id], seed)
    selectors = rl.select_reward_functions(saved, params.rl.reward_fns, params.rl)
    return control(
        held_out,
        selectors,
        experiments.oracle_of(saved),
        params.rl,
        params.data,
        n,
        seed,
        params.device,
        params.eval.permutations,
    )


def over_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Per (selector, n): the mean over seeds of every score, and at how many seeds the gains are significant
    (p < 0.05, upwards) or the picks collapsed."""
    scores = [c for c in table if c.startswith("r̂: ")]
    gains = [c for c in table if c.startswith("gain")]
    cols = [*scores, *gains, "distinct-2", "top response share"]
    over = table.groupby(["selected by", "n"], sort=False)
    summary = over[cols].mean()
    for gain in gains:  # significant gains, not falls
        p = gain.replace("gain", "p", 1)
        summary[f"{gain} p < 0.05 at"] = over.apply(
            lambda g, gain=gain, p=p: int(((g[p] < 0.05) & (g[gain] > 0)).sum())
        )
    summary["collapsed at"], summary["seeds"] = over["collapsed"].sum(), over["seed"].nunique()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=8, help="sampled responses per context (best-of-1 .. best-of-n)")
    args = parser.parse_args()
    params = load_params(args.profile)
    path = results_dir(f"{params.study_key}/adhoc/best_of_n", "tables") / "best_of_n.csv"
    settings = f"n {args.n}, temperature {params.rl.temperature}, {params.rl.gen_tokens} tokens"
    pd.set_option("display.width", 250)
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(params, seed, args.n).assign(settings=settings))
        print(f"seed {seed} ({settings}):\n{rows[-1].drop(columns=['test', 'settings']).round(3).to_string()}")
    new = pd.concat(rows, ignore_index=True)
    if path.exists():
        old = pd.read_csv(path)
        other = old["settings"] != settings
        if other.any():
            print(f"{path}: {int(other.sum())} rows of other draw settings dropped", flush=True)
        new = pd.concat([old[~other & ~old["seed"].isin(args.seeds)], new], ignore_index=True)
    write_csv(path, new.sort_values(["seed", "selected by", "n"]))
    print(f"mean over seeds {sorted(new['seed'].unique().tolist())}:\n{over_seeds(new).round(3).to_string()}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
