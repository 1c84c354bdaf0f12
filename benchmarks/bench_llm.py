"""Benchmark: LLM-GELI decomposition speed of the local backend on CPU, constrained vs free decoding, and the cache.

Decomposes ``--conversations`` reward-training conversations of a profile's
corpus with the local SmolLM2-135M-Instruct (text-only prompt, the profile's
sampling) twice on the same chunks, each into a fresh temporary cache:

* **constrained** (the default, ``llm.constrained: true``): decoding masked by
  lm-format-enforcer to ``{"A1": <number>, "A3": <number>, …}`` with exactly the
  chunk's ids, so every answer parses at the first attempt; the tokens the grammar
  forces skip the model (jump-forward), so it needs fewer forward passes than tokens;
* **unconstrained** (the old path): free decoding after a ``{"<first id>":``
  prefill, stopped at the first ``}``; an unusable answer is re-sampled
  (``llm.output_retries``) and then the chunk fails.

The two modes alternate conversation by conversation, so a second busy process
on the machine slows both alike. Prints, per mode, conversations per minute,
model calls (incl. re-samples) and generated tokens per second; then the cache
hit path of the constrained answers (a fresh backend: it must neither load the
model nor call it); then the labels' quality against the planted truth and
against the reference decomposer (coverage, annotated fraction, mean |Σ − share|,
pooled and within-conversation Spearman), the reference decomposer's own row
for scale.

Run: ``python benchmarks/bench_llm.py [--profile smoke] [--conversations 3] [--threads N]``.
Compare ``--threads 1`` and ``--threads 2`` while another process is busy: 2 threads
fighting a second process for 2 cores decode several times slower.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from geli_lib.core.params import load_params
from geli_lib.corpus.data import load_corpus, split_conversations
from geli_lib.reward import llm


def _tokens(backend: llm.LocalBackend, folder: Path) -> int:
    """Generated tokens of every answer in a cache folder (the prefill's few tokens included)."""
    answers = [json.loads(p.read_text())["response"] for p in folder.rglob("*.json")]
    return sum(len(backend._tok(a, add_special_tokens=False)["input_ids"]) for a in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads while generating (default: the profile's llm.threads; 0 = torch's default)",
    )
    args = parser.parse_args()

    params = load_params(args.profile)
    threads = params.llm.threads if args.threads is None else args.threads
    bound = params.llm.score_range[1] - params.llm.score_range[0]
    corpus = load_corpus(params, progress=False)
    split = split_conversations(corpus.conversations, params.splits)
    ids = sorted(split[split == "reward_train"].index)[: args.conversations]
    chunks = llm.build_chunks(corpus, ids, params.llm, "text")
    n_ai = sum(len(c.turn_ids) for c in chunks)
    print(
        f"{len(ids)} conversations, {len(chunks)} chunks, {n_ai} AI turns; torch threads while generating: "
        f"{threads or torch.get_num_threads()}; sampling: temperature {params.llm.temperature}, "
        f"output_retries {params.llm.output_retries}, rescale {params.llm.rescale}; bf16 asked: {params.llm.bf16}"
    )

    modes = {"constrained": True, "unconstrained": False}
    with tempfile.TemporaryDirectory() as tmp:
        backends, caches, seconds, decs, load_s = {}, {}, {}, {}, {}
        for mode, constrained in modes.items():
            backends[mode] = llm.LocalBackend(params.device, threads, constrained, bound, params.llm.bf16)
            caches[mode] = llm.ResponseCache(Path(tmp) / mode)
            t0 = time.perf_counter()
            backends[mode]._load()
            load_s[mode] = time.perf_counter() - t0
            seconds[mode], decs[mode] = 0.0, []
        for c in ids:  # alternate the modes conversation by conversation: a busy machine slows both alike
            part = [ch for ch in chunks if ch.convo_id == c]
            for mode in modes:
                t0 = time.perf_counter()
                decs[mode].append(llm.decompose(part, backends[mode], params.llm, caches[mode], progress=False))
                seconds[mode] += time.perf_counter() - t0
        first = {
            m: llm.Decomposition(
                backends[m].name,
                backends[m].model,
                pd.concat([d.labels for d in decs[m]], ignore_index=True),
                pd.concat([d.chunks for d in decs[m]], ignore_index=True),
            )
            for m in modes
        }
        tokens = {m: _tokens(backends[m], caches[m].folder) for m in modes}

        hit_backend = llm.LocalBackend(
            params.device, threads, True, bound, params.llm.bf16
        )  # a fresh process's view: nothing loaded
        t0 = time.perf_counter()
        again = llm.decompose(
            chunks, hit_backend, params.llm, llm.ResponseCache(caches["constrained"].folder), progress=False
        )
        hit_s = time.perf_counter() - t0
    assert hit_backend.calls == 0 and hit_backend._lm is None, "the hit path called the model"
    assert again.labels.equals(first["constrained"].labels)

    for mode in modes:
        s = seconds[mode]
        print(
            f"{mode:>13}: model load {load_s[mode]:.1f} s (once per process); {s:.1f} s for {len(ids)} "
            f"conversations = {60 * len(ids) / s:.2f} conversations/min ({s / len(ids):.1f} s each); "
            f"{backends[mode].calls} calls for {len(chunks)} chunks, {tokens[mode]} generated tokens = "
            f"{tokens[mode] / s:.1f} tokens/s in {backends[mode].forwards} forward passes"
        )
    print(
        f"constrained vs unconstrained: {seconds['unconstrained'] / seconds['constrained']:.2f}x the "
        "conversations per minute"
    )
    print(
        f"cache hit path (constrained answers): {hit_s * 1000:.1f} ms for {len(ids)} conversations = "
        f"{hit_s / len(ids) * 1000:.2f} ms per conversation; {seconds['constrained'] / max(hit_s, 1e-9):.0f}x "
        "faster than the model; model loaded: no, calls: 0"
    )

    ref = llm.decompose(chunks, llm.ReferenceDecomposer(), params.llm, progress=False)
    table = llm.decomposition_table(
        {
            "local SmolLM2, constrained": first["constrained"],
            "local SmolLM2, unconstrained": first["unconstrained"],
            "reference (not an LLM)": ref,
        },
        corpus,
        reference=ref,
    )
    cols = [
        "decomposition",
        "chunks",
        "failed",
        "coverage",
        "annotated",
        "mean_abs_deviation",
        "mean_abs_deviation_labels",
        "gt_spearman",
        "gt_spearman_within",
        "ref_spearman",
        "ref_spearman_within",
    ]
    with pd.option_context("display.width", 200):
        print(table[cols].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
