"""Benchmark: RRD head training on cached features vs re-encoding the sampled turns at every step.

The authors' code passes the K sampled (history, utterance) texts of a
conversation through the encoder at every optimisation step. With a frozen
encoder that work is the same every time, so :mod:`geli_lib.reward.reward_model`
encodes each pair once and trains the head on cached tensors. This script
trains the same RRD head both ways — same data, seed, batches, RRD samples and
dropout masks (the naive path fills the sampled turns of the batch with fresh
encodings; nothing else changes) — and prints seconds per step, the speed
ratio (target ≥ 100×) and the held-out L_GE of both (equal up to float noise).
It also prints the encoder's throughput (pairs/s) on pairs it has not cached.

Run: ``python benchmarks/bench_reward.py [--profile smoke] [--epochs 3] [--K 32]``.
The corpus and features go to ``$GELI_CACHE`` as usual; the throughput
measurement uses a temporary cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geli_lib.core.params import load_params
from geli_lib.corpus.data import build_pairs, load_corpus, split_conversations
from geli_lib.reward import reward_model as rm
from geli_lib.reward.evaluation import evaluate_reward
from geli_lib.reward.reward_model import encoder as rm_encoder


def naive_features(train: rm.TrainData, encoder: str, max_tokens: int, batch_size: int) -> rm.FeatureFn:
    """Encode the sampled turns' texts through the encoder at every call (the authors' scheme)."""
    tok, model = rm_encoder._load_encoder(encoder, "cpu")

    def fn(conv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(conv), train.X.shape[1], train.d)
        where = [(i, int(t)) for i in range(len(conv)) for t in idx[i][valid[i]].unique().tolist()]
        texts = [train.texts[int(train.rows[conv[i], t])] for i, t in where]
        flat = [t for pair in texts for t in pair]  # history, response, history, response, ...
        emb = np.concatenate(
            [
                rm_encoder._embed(flat[k : k + batch_size], tok, model, encoder, max_tokens, "cpu")
                for k in range(0, len(flat), batch_size)
            ]
        )
        emb = emb.reshape(len(texts), -1)  # [history | response] per pair, as encode_pairs
        for (i, t), e in zip(where, emb):
            x[i, t] = torch.from_numpy(e)
        return x

    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of BOTH runs (the naive one is slow)")
    parser.add_argument("--K", type=int, default=None, help="RRD sample size (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--throughput-pairs", type=int, default=256)
    args = parser.parse_args()

    params = load_params(args.profile)
    # Both schemes train the head of a frozen encoder (the gpu profile's fine-tuning is another matter).
    rp = dataclasses.replace(params.reward, epochs=args.epochs, K=args.K or params.reward.K, finetune_encoder=False)
    corpus = load_corpus(params, progress=False)
    split = split_conversations(corpus.conversations, params.splits)
    train_ids = split.index[split == "reward_train"]
    test_ids = split.index[split == "reward_test"]
    pairs = build_pairs(corpus, params.data, list(train_ids) + list(test_ids))
    n_conv = len(pairs["convo_id"].unique())
    print(
        f"profile {args.profile}: {n_conv} conversations, {len(pairs)} pairs "
        f"({len(train_ids)} train / {len(test_ids)} test conversations), encoder {rp.encoder}, "
        f"{torch.get_num_threads()} torch threads"
    )

    # encoding throughput on pairs not in any cache
    tmp = Path(tempfile.mkdtemp(prefix="geli-bench-enc-"))
    try:
        sample = pairs.iloc[: args.throughput_pairs]

        def encode_sample() -> None:
            rm.encode_pairs(
                sample,
                encoder=rp.encoder,
                batch_size=rp.encode_batch_size,
                progress=False,
                max_tokens=rp.max_tokens,
                cache=tmp,
            )

        encode_sample()  # warm-up: model load, first batches
        shutil.rmtree(tmp)
        t0 = time.perf_counter()
        encode_sample()
        dt = time.perf_counter() - t0
        print(
            f"encoding: {len(sample)} pairs in {dt:.1f} s = {len(sample) / dt:.1f} pairs/s "
            f"(mean history {sample['history'].str.len().mean():.0f} chars, max {rp.max_tokens} tokens)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    feats = rm.encode_pairs(
        pairs, encoder=rp.encoder, batch_size=rp.encode_batch_size, max_tokens=rp.max_tokens, progress=True
    )
    va = rm.visual_affect_labels(corpus, pairs)
    train = rm.make_train_data(corpus, pairs, feats, train_ids, {"va": va, "ls": np.zeros(len(pairs))})
    test = pairs["convo_id"].isin(set(test_ids)).to_numpy()
    steps = args.epochs * -(-len(train) // rp.batch_conversations)

    res = {}
    for name, fn in (
        ("cached", None),
        ("naive", naive_features(train, rp.encoder, rp.max_tokens, rp.encode_batch_size)),
    ):
        t0 = time.perf_counter()
        tr = rm.train_reward_function("rrd", train, rp, seed=args.seed, feature_fn=fn)
        dt = time.perf_counter() - t0
        m = evaluate_reward(rm.predict(tr, feats[test]), pairs[test], va[test], corpus, tr.T_bar)
        res[name] = (dt, m["l_ge_mse"], m["l_ge_mae"])
        print(
            f"{name:6s}: {steps} steps ({args.epochs} epochs, K={rp.K}, batch {rp.batch_conversations} "
            f"conversations) in {dt:8.2f} s = {1000 * dt / steps:9.2f} ms/step; held-out L_GE "
            f"MSE {m['l_ge_mse']:.2f}, MAE {m['l_ge_mae']:.2f}"
        )
    ratio = res["naive"][0] / res["cached"][0]
    print(
        f"speed ratio naive / cached: {ratio:.0f}x (target >= 100x: {'met' if ratio >= 100 else 'NOT met'}); "
        f"L_GE difference {abs(res['naive'][1] - res['cached'][1]):.3g}"
    )
    full = dataclasses.replace(params.reward, K=rp.K, finetune_encoder=False)
    t0 = time.perf_counter()
    rm.train_reward_function("rrd", train, full, seed=args.seed)
    dt = time.perf_counter() - t0
    full_steps = full.epochs * -(-len(train) // full.batch_conversations)
    print(
        f"profile's full RRD training ({full.epochs} epochs) on cached features: {dt:.2f} s; "
        f"the naive scheme would take ≈ {res['naive'][0] / steps * full_steps:.0f} s"
    )


if __name__ == "__main__":
    main()
