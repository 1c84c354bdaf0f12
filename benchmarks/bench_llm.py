"""Benchmark: LLM-GELI decomposition speed of the local backend on CPU, and the cache's hit path.

Decomposes ``--conversations`` reward-training conversations of a profile's
corpus with the local SmolLM2-135M-Instruct (text-only prompt, the profile's
sampling) into a fresh temporary cache, then decomposes them again from that
cache. Prints conversations per minute and generated tokens per second of the
model path, seconds per conversation of the hit path (which must not load the
model or call it), the speed-up, and the quality of the labels against the
planted truth (coverage, within-conversation Spearman) next to the reference
decomposer's on the same conversations.

Run: ``python benchmarks/bench_llm.py [--profile smoke] [--conversations 3] [--threads N]``.
Compare ``--threads 1`` and ``--threads 2`` while another process is busy: 2 threads
fighting a second process for 2 cores decode several times slower.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from geli_lib import llm
from geli_lib.data import load_corpus, split_conversations
from geli_lib.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads while generating "
                        "(default: the profile's llm.threads; 0 = torch's default)")
    args = parser.parse_args()

    params = load_params(args.profile)
    threads = params.llm.threads if args.threads is None else args.threads
    corpus = load_corpus(params, progress=False)
    split = split_conversations(corpus.conversations, params.splits)
    ids = sorted(split[split == "reward_train"].index)[: args.conversations]
    chunks = llm.build_chunks(corpus, ids, params.llm, "text")
    n_ai = sum(len(c.turn_ids) for c in chunks)
    print(f"{len(ids)} conversations, {len(chunks)} chunks, {n_ai} AI turns; torch threads while generating: "
          f"{threads or torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        cache = llm.ResponseCache(tmp)
        backend = llm.LocalBackend(params.device, threads)
        t0 = time.perf_counter()
        backend._load()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = llm.decompose(chunks, backend, params.llm, cache, progress=False)
        model_s = time.perf_counter() - t0
        answers = [json.loads(p.read_text())["response"] for p in cache.folder.rglob("*.json")]
        tokens = sum(len(backend._tok(a)["input_ids"]) for a in answers)  # incl. the few prefill tokens

        hit_backend = llm.LocalBackend(params.device, threads)  # a fresh process's view: nothing loaded
        t0 = time.perf_counter()
        again = llm.decompose(chunks, hit_backend, params.llm, llm.ResponseCache(tmp), progress=False)
        hit_s = time.perf_counter() - t0
    assert hit_backend.calls == 0 and hit_backend._lm is None, "the hit path called the model"
    assert again.labels.equals(first.labels)

    print(f"model load: {load_s:.1f} s (once per process)")
    print(f"local SmolLM2 path: {model_s:.1f} s for {len(ids)} conversations = "
          f"{60 * len(ids) / model_s:.2f} conversations/min; {backend.calls} calls, "
          f"{tokens} generated tokens = {tokens / model_s:.1f} tokens/s")
    print(f"cache hit path: {hit_s * 1000:.1f} ms for {len(ids)} conversations = {hit_s / len(ids) * 1000:.2f} ms per "
          f"conversation; {model_s / max(hit_s, 1e-9):.0f}x faster; model loaded: no, calls: 0")

    ref = llm.decompose(chunks, llm.ReferenceDecomposer(), params.llm, progress=False)
    table = llm.decomposition_table({"local SmolLM2": first, "reference (not an LLM)": ref}, corpus)
    print(table[["decomposition", "chunks", "failed", "coverage", "mean_abs_deviation", "gt_spearman",
                 "gt_spearman_within"]].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
