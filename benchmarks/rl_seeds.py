"""Robustness check: notebook 07's verdict for some reward functions over several seeds, not one.

The study adapts the policy once per reward function, at the profile's seed (07, ``tables/rl_summary.csv``).
One seed cannot tell a weak effect from noise (at seed 0 on cpu, GE: RRD's gain is significant while its
slope CI touches 0). This script runs the same adaptation, generations and test for each ``--seeds``
(the seed picks the reward function trained at that seed in 02-04, the RL and held-out contexts and
the sampling), prints :func:`geli_lib.alignment.rl.rl_summary` per seed, and adds the rows to
``results/<profile>/adhoc/rl_seeds/tables/rl_seeds.csv`` (a rerun replaces its own reward functions and
seeds only); the study's own tables are not touched. Each row also says how early the run's curve replies
collapsed (:func:`geli_lib.alignment.rl.collapse_onsets`, as 07's diversity figure) and names the CPU it ran on
(:func:`geli_lib.core.runs.machine`: the sampled runs and their speed depend on its bf16 kernels). A reward
function that 02-04 did not train at a seed (they train the profile's ``seeds``) is trained first with the
profile's reward settings (:func:`geli_lib.reward.experiments.train_missing`; on cpu 37-80 s for GELI, GE: RRD,
VA and LS at one seed with two RL runs sharing the 2 cores).

It also answers 08's question over seeds: each seed's generations are kept
(``<folder>/seed_<s>/tables/generations.csv``), and every model of the table's seeds is scored under 08's
judges (every saved reward function, its lowest seed, as 08 scores them) into
``tables/cross_rewards.csv``: mean ± sd over seeds, paired test vs base over (seed, context).

``--rl KEY=VALUE`` tries another setting of the profile's ``rl`` block (e.g. ``--rl steps=15``); such a
run writes under ``adhoc/rl_seeds/<the changed settings>/`` instead, beside the profile's own.

Run: ``python benchmarks/rl_seeds.py [--profile cpu] [--reward-fn rrd_k32 geli] [--seeds 0 1 2] [--rl steps=15]``
(2 cores of a Xeon with AMX: ~2.7 min per reward function and seed on the cpu profile, one after the other;
``rl.workers`` of them train at once, as in 07).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GELI_PROGRESS", "0")

import pandas as pd  # noqa: E402

from geli_lib.alignment import generation_eval, rl  # noqa: E402
from geli_lib.core import load_params, results_dir, write_csv  # noqa: E402
from geli_lib.core.io import content_key  # noqa: E402
from geli_lib.core.params import ParamError, StudyParams, key_value, to_dict  # noqa: E402
from geli_lib.core.runs import machine  # noqa: E402
from geli_lib.corpus import data  # noqa: E402
from geli_lib.reward import experiments  # noqa: E402

COLUMNS = ["seed", "reward function", "base r̂", "base sd", "adapted r̂", "adapted sd", "gain", "p"]
COLUMNS += ["slope (r̂/update)", "slope 95% CI low", "slope 95% CI high"]
COLUMNS += [
    "kept update",
    "KL weight (start)",
    "KL (nats)",
    "distinct-2 adapted",
    "top response share",
    "collapsed",
    "learned",
]
#: From :func:`geli_lib.alignment.rl.collapse_onsets`: how early each run's curve replies collapsed.
ONSET_COLUMNS = ["evaluations", "collapsed evaluations", "first collapse (update)", "KL at first collapse"]
COLUMNS += [*ONSET_COLUMNS, "s / update"]


def one_seed(params: StudyParams, reward_ids: list[str], seed: int, out_key: str) -> pd.DataFrame:
    """07's adaptation and 07's summary (base vs adapted under its own reward) for one seed."""
    profile = params.profile
    key = f"{out_key}/seed_{seed}"
    corpus = data.load_corpus(params)
    split = data.split_conversations(corpus.conversations, params.splits)
    train, held_out, curve = rl.rl_contexts(corpus, split, params.rl, seed)
    saved = experiments.train_missing(params, reward_ids, seed)
    chosen = rl.select_reward_functions(saved, reward_ids, params.rl)
    rl.adapt_on_cluster(
        chosen, train, params.rl, profile, params.compute, params.corpus, seed, params.device,
        curve=curve, data=params.data, results_key=key,
    )  # fmt: skip
    runs = {
        name: rl.train_rl(
            name, folder, train, params.rl, profile, params.corpus, seed, params.device,
            curve=curve, data=params.data, results_key=key,
        )
        for name, folder in chosen.items()
    }  # fmt: skip
    gens = rl.generations(held_out, {n: r.adapter for n, r in runs.items()}, params.rl, seed, params.device)
    rl.write_generations(key, gens)
    per = generation_eval.per_response(gens, params.eval, params.data, chosen, params.device)
    stats = generation_eval.cross_reward_stats(gens, per, params.eval.base_model, params.eval.permutations)
    evals = pd.concat([r.evals for r in runs.values()], ignore_index=True)
    onsets = rl.collapse_onsets(rl.diversity_path(evals)).rename(columns={"reward_fn": "reward function"})
    summary = rl.rl_summary(stats, runs, params.eval.base_model, gens)
    summary = summary.merge(onsets[["reward function", *ONSET_COLUMNS]], on="reward function", how="left")
    return summary.assign(seed=seed)


def cross_rewards(params: StudyParams, table: pd.DataFrame, folder: str) -> pd.DataFrame:
    """08's cross-reward statistics over the seeds of ``table`` (rl_seeds.csv): base, ground truth and each
    seed's adapted models in it, scored under 08's judges."""
    gens = []
    for seed, part in table.groupby("seed"):
        g = generation_eval.read_generations(results_dir(f"{folder}/seed_{seed}", "tables") / "generations.csv")
        keep = {params.eval.base_model, "ground truth", *part["reward function"]}
        gens.append(g[g["model"].isin(keep)])
    gens = pd.concat(gens, ignore_index=True)
    judges = experiments.by_display_name(experiments.saved_reward_functions(params.profile, params.corpus))
    per = generation_eval.per_response(gens, params.eval, params.data, judges, params.device)
    return generation_eval.cross_reward_stats(gens, per, params.eval.base_model, params.eval.permutations)


def merge_rows(old: pd.DataFrame | None, new: pd.DataFrame, path: object) -> pd.DataFrame:
    """``new`` rows with the earlier rows of ``path`` that ran the same rl settings: other reward functions or
    seeds stay, the same ones are replaced; rows of other settings are dropped, never mixed with these."""
    if old is None:
        return new
    mine = old["rl settings"].eq(new["rl settings"].iloc[0]) if "rl settings" in old else old["seed"].isna()
    if not mine.all():
        print(f"{path}: {int((~mine).sum())} rows of other rl settings dropped", flush=True)
    old = old[mine]
    same = old.set_index(["seed", "reward function"]).index.isin(new.set_index(["seed", "reward function"]).index)
    return pd.concat([old[~same], new], ignore_index=True).sort_values(["reward function", "seed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--reward-fn", nargs="+", default=["rrd_k32"], help="reward-function ids (rl.reward_fns)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--rl", action="append", default=[], metavar="KEY=VALUE", help="an rl parameter to try (repeatable)"
    )
    args = parser.parse_args()
    try:
        params = load_params(args.profile, rl=dict(key_value(kv, "--rl") for kv in args.rl))
    except ParamError as e:
        raise SystemExit(f"error: {e}") from None
    # under the study's key, not results_key's adhoc/<changes>: these runs are ad hoc by construction
    folder = "/".join(filter(None, (f"{params.study_key}/adhoc/rl_seeds", params.adhoc)))
    print(f"rl settings changed: {params.adhoc or 'none'}; results under results/{folder}", flush=True)
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(params, args.reward_fn, seed, folder)[COLUMNS])
        print(rows[-1].round(4).to_string(index=False), flush=True)
    settings = content_key(to_dict(params.rl))  # the profile's rl block can change between runs of one folder
    # sampled runs and their speed depend on the CPU's bf16 kernels (AMX, AVX512-bf16): each row names its CPU
    where = machine()
    table = pd.concat(rows, ignore_index=True).assign(
        **{"rl settings": settings, "cpu": where["cpu"], "torch cpu kernels": where["torch_cpu_kernels"]}
    )
    path = results_dir(folder, "tables") / "rl_seeds.csv"
    write_csv(path, merge_rows(pd.read_csv(path) if path.exists() else None, table, path))
    table = pd.read_csv(path)
    for name, part in table.groupby("reward function"):
        print(
            f"{name}: learned at {int(part['learned'].sum())} of {len(part)} seeds; gain {part['gain'].mean():+.3f} "
            f"(sd {part['gain'].std():.3f}), p < 0.05 at {int((part['p'] < 0.05).sum())}, slope CI above 0 at "
            f"{int((part['slope 95% CI low'] > 0).sum())}; curve replies collapsed at "
            f"{int(part['collapsed evaluations'].sum())} of {int(part['evaluations'].sum())} evaluations after the base"
        )
    stats = cross_rewards(params, table, folder)
    write_csv(results_dir(folder, "tables") / "cross_rewards.csv", stats)
    cross = generation_eval.cross_reward_table(stats, order=[params.eval.base_model])
    print(f"cross-reward table, seeds {sorted(table['seed'].unique())} ({cross.attrs['note']}):")
    print(cross.to_string())
    print(f"written to {path} and {path.parent / 'cross_rewards.csv'}")


if __name__ == "__main__":
    main()
