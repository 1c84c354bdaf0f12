"""Benchmark: simulate and load a corpus of the gpu profile's size (1,656 × ~160 turns), then pair and summarise it.

Targets: simulating and loading take under one minute together on 2 cores (foundation
issue); the reward models' (history, response) pairs and the per-turn listener summary
(eq. 7's Γ) of that corpus take under 10 s each. Prints seconds per phase, rows, MB
written and throughput, and the time of a skipped re-simulation. Run: `make benchmark` or
`python benchmarks/bench_data.py [--profile gpu] [--workers 2] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from geli_lib.core.params import load_params
from geli_lib.corpus.data import build_pairs, load_candor
from geli_lib.corpus.simulation import simulate_corpus
from geli_lib.listener.features import turn_listener_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="keep the corpus here (default: a temp dir, removed)")
    args = parser.parse_args()
    params = load_params(args.profile)
    out = args.out or Path(tempfile.mkdtemp(prefix="geli-bench-"))
    try:
        (out / "raw" / "_COMPLETE.json").unlink(missing_ok=True)  # always measure a full simulation
        t0 = time.perf_counter()
        simulate_corpus(params.simulation, out / "raw", workers=args.workers, progress=False)
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        simulate_corpus(params.simulation, out / "raw", workers=args.workers, progress=False)
        t_skip = time.perf_counter() - t0
        t0 = time.perf_counter()
        corpus = load_candor(out / "raw", params.data, progress=False)
        t_load = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in (out / "raw").rglob("*") if f.is_file()) / 1e6
        av_mb = sum(f.stat().st_size for f in (out / "raw").rglob("audio_video_features.csv")) / 1e6
        n = len(corpus.conversations)
        print(
            f"profile {args.profile}: {n} conversations, {len(corpus.turns):,} turns, "
            f"{len(corpus.frames):,} listener frames, {mb:,.0f} MB on disk "
            f"({av_mb:,.0f} MB audio_video_features)"
        )
        print(
            f"simulate: {t_sim:6.1f} s  ({n / t_sim:6.1f} conversations/s, {args.workers} workers); "
            f"skipped re-run {t_skip * 1000:.1f} ms"
        )
        print(f"load:     {t_load:6.1f} s  ({n / t_load:6.1f} conversations/s)")
        total = t_sim + t_load
        print(f"total:    {total:6.1f} s  (target < 60 s: {'met' if total < 60 else 'NOT met'})")
        for name, step in (
            ("pairs", lambda: build_pairs(corpus, params.data)),
            ("listener summary", lambda: turn_listener_summary(corpus)),
        ):
            t0 = time.perf_counter()
            rows = len(step())
            took = time.perf_counter() - t0
            print(f"{name}: {took:6.1f} s  ({rows:,} AI turns; target < 10 s: {'met' if took < 10 else 'NOT met'})")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
