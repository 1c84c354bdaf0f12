"""Diagnostic: how much of r̂ a response can move, per reward function.

RLOO's leave-one-out advantage compares responses to the same context, so what the policy can learn from is
r̂'s spread *within* a context, not its spread over contexts (the dialogue state sets most of it). This
samples ``--group`` base-policy responses (``rl.temperature``, ``rl.response_length`` tokens) to each of
``--contexts`` training contexts of ``--seed``, scores them with that seed's reward functions in each
context's own s_t (the one scoring of training and evaluation, ``PairScorer``), and prints the total SD of
r̂, the within-context SD (root mean of the per-context variances) and their ratio. With ``score_norm``
the score is divided by the total SD, so the KL weight β weighs ``β / ratio`` in units of what a response
can move.

Run: ``python benchmarks/response_spread.py [--profile cpu] [--seed 0] [--contexts 48] [--group 4]``
(2 cores of an AMD EPYC, cpu profile: ~30 s).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GELI_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from geli_lib.alignment import rl  # noqa: E402
from geli_lib.alignment.best_of_n import sample_groups  # noqa: E402
from geli_lib.alignment.rl.prompt import scoring_histories  # noqa: E402
from geli_lib.alignment.rl.reward import TextReward, load_trained_reward  # noqa: E402
from geli_lib.core import load_params  # noqa: E402
from geli_lib.core.models import load_policy  # noqa: E402
from geli_lib.corpus import data  # noqa: E402
from geli_lib.reward import experiments  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contexts", type=int, default=48, help="training contexts sampled")
    parser.add_argument("--group", type=int, default=4, help="sampled responses per context")
    args = parser.parse_args()
    params = load_params(args.profile)
    corpus = data.load_corpus(params)
    split = data.split_conversations(corpus.conversations, params.splits)
    train, _, _ = rl.rl_contexts(corpus, split, params.rl, args.seed)
    contexts = train.sample(min(args.contexts, len(train)), random_state=args.seed)
    model, tok = load_policy(params.device, torch.bfloat16 if params.rl.bf16 else None)
    groups = sample_groups(
        model, tok, contexts["history"].tolist(), args.group, params.rl.response_length, params.rl.temperature,
        params.rl.max_prompt_tokens, args.seed,
    )  # fmt: skip
    responses = [r for group in groups for r in group]  # a context's group is consecutive
    states = np.repeat(scoring_histories(contexts).to_numpy(), args.group).tolist()
    saved = experiments.saved_reward_functions(params.profile, params.corpus, args.seed)
    chosen = rl.select_reward_functions(saved, params.rl.reward_fns, params.rl)
    print(f"{len(contexts)} contexts x {args.group} sampled responses, seed {args.seed}")
    print(f"{'reward function':28s} {'total SD':>9s} {'within SD':>10s} {'ratio':>6s}")
    for name, folder in chosen.items():
        reward = TextReward(load_trained_reward(folder), name, data=params.data, device=params.device)
        r = reward.raw(states, responses).numpy().reshape(-1, args.group)
        total, within = r.std(ddof=1), float(np.sqrt(r.var(axis=1, ddof=1).mean()))
        print(f"{name:28s} {total:9.3f} {within:10.3f} {within / total:6.2f}", flush=True)


if __name__ == "__main__":
    main()
