"""Benchmark: simulate a corpus of the gpu profile's size (1,656 conversations × ~160 turns).

Target: well under 35 s on 2 cores with 2 workers (the loader then reads the
corpus; simulate + load must stay under one minute). Prints seconds,
conversations/s, files and MB written, and the time of a skipped re-run.
Run: ``python benchmarks/bench_simulation.py [--n 1656] [--turns 160] [--workers 2] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from geli_lib.params import SimulationParams
from geli_lib.simulation import simulate_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1656, help="conversations")
    parser.add_argument("--turns", type=int, default=160, help="mean turns per conversation")
    parser.add_argument("--min-turns", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the corpus here (default: a temp dir, removed)")
    args = parser.parse_args()
    params = SimulationParams(n_conversations=args.n, mean_turns=args.turns,
                              min_turns=min(args.min_turns, args.turns), seed=args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="geli-bench-sim-"))
    try:
        if args.out is not None:
            (out / "_COMPLETE.json").unlink(missing_ok=True)  # always measure a full run
        t0 = time.perf_counter()
        simulate_corpus(params, out, workers=args.workers, progress=False)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        simulate_corpus(params, out, workers=args.workers, progress=False)
        skipped = time.perf_counter() - t0
        files = [f for f in out.rglob("*") if f.is_file()]
        mb = sum(f.stat().st_size for f in files) / 1e6
        av_mb = sum(f.stat().st_size for f in out.rglob("audio_video_features.csv")) / 1e6
        print(f"simulated {args.n} conversations (mean {args.turns} turns) with {args.workers} workers")
        print(f"  {seconds:6.1f} s   {args.n / seconds:7.1f} conversations/s")
        print(f"  {len(files):,} files, {mb:,.0f} MB written ({av_mb:,.0f} MB audio_video_features, "
              f"{mb / seconds:,.0f} MB/s)")
        print(f"  re-run with the same knobs (skipped): {skipped * 1000:.1f} ms")
        print(f"  target < 35 s: {'met' if seconds < 35 else 'NOT met'}")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
