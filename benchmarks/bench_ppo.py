"""Benchmark: seconds per RL update and peak memory at a profile's RL settings (default: cpu).

Targets: the cpu profile runs every reward function of ``rl.reward_fns``
(4 × ``rl.steps`` updates, the evaluation curve) plus generations and their
scoring (notebooks 07 + 08) in under 15 minutes on 2 idle cores; on one H100
the gpu profile does 200 PPO updates of batch 24 in under 20 minutes (6 s/update).
Runs ``--steps`` real updates of the profile's algorithm (``rl.algorithm``, or
``--algorithm``; TRL + LoRA on SmolLM2, a saved reward function) in a temporary
folder, with the profile's evaluation curve, and prints seconds per update
(first update apart: it includes TRL's warm-up), seconds per evaluation point,
peak RSS (CPU) or peak CUDA memory, and the projected time of the profile's
whole RL stage.

Run: ``python benchmarks/bench_ppo.py [--profile cpu] [--steps 3] [--reward-profile smoke]
[--rl batch_size=12 ...]`` (``--rl``: try another setting of the profile's ``rl`` block);
on a GPU: ``python benchmarks/bench_ppo.py --profile gpu --device cuda``. The reward
function comes from ``--reward-profile`` (default: the profile itself; its
notebooks 02-04 must have run); its architecture, not its quality, sets the cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GELI_PROGRESS", "0")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from geli_lib.alignment import rl  # noqa: E402
from geli_lib.core.compute import close_grid_clients, grid_results  # noqa: E402
from geli_lib.core.models import bf16_in_effect  # noqa: E402
from geli_lib.core.params import ParamError, RLParams, StudyParams, key_value, load_params  # noqa: E402
from geli_lib.corpus import data  # noqa: E402
from geli_lib.reward import experiments  # noqa: E402


def side_by_side(
    name: str,
    folder: Path,
    train: pd.DataFrame,
    curve: pd.DataFrame,
    rlp: RLParams,
    params: StudyParams,
    device: str,
    tmp: Path,
) -> tuple[rl.RunInfo, float]:
    """``rlp.workers`` copies of the adaptation at once on the local cluster 07 trains on (:func:`rl.adapt_task`
    tasks); the first copy's run, and the wall time of all of them, the cluster's start included."""
    calls = [
        (name, rl.folder_files(folder), rlp, params.profile, params.corpus, params.seed, device, curve, params.data)
    ]
    t0 = time.perf_counter()
    try:
        where = rl.adaptations_compute(params.compute, rlp)
        outs = dict(grid_results(rl.adapt_task, train, calls * rlp.workers, where, device))
    finally:
        close_grid_clients()
    t_run = time.perf_counter() - t0
    done = json.loads(outs[0]["done.json"])
    curves = pd.DataFrame(done["curves"])
    evals = pd.DataFrame(done["evals"], columns=list(rl.EVAL_COLUMNS))
    run = tmp / "run"
    rl.unpack({k: v for k, v in outs[0].items() if k.startswith("adapter/")}, run)
    info = rl.RunInfo(
        name, params.seed, run / "adapter", curves, done["seconds_per_step"], 0, False, done["peak_rss_gb"], evals,
        done["kept_step"],
    )  # fmt: skip
    return info, t_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="updates to time (>= 2)")
    parser.add_argument("--reward-profile", help="profile whose saved reward function is used (default: --profile)")
    parser.add_argument("--reward-fn", default="geli", help="a reward-function id (rl.reward_fns)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the profile's)")
    parser.add_argument("--algorithm", default=None, help="ppo, rloo or grpo (default: the profile's)")
    parser.add_argument(
        "--rl", action="append", default=[], metavar="KEY=VALUE", help="an rl parameter to try (repeatable)"
    )
    args = parser.parse_args()
    try:
        overrides = dict(key_value(kv, "--rl") for kv in args.rl) | (
            {"algorithm": args.algorithm} if args.algorithm else {}
        )
        params = load_params(args.profile, rl=overrides)
    except ParamError as e:
        raise SystemExit(f"error: {e}") from None
    device = args.device or params.device
    rlp = dataclasses.replace(params.rl, steps=args.steps, save_every=args.steps, eval_every=args.steps)
    t0 = time.perf_counter()
    corpus = data.load_corpus(params, progress=False)
    split = data.split_conversations(corpus.conversations, params.splits)
    train, held_out, curve = rl.rl_contexts(corpus, split, rlp, params.seed)
    saved = experiments.saved_reward_functions(args.reward_profile or args.profile, params.corpus, params.seed)
    [(name, folder)] = rl.select_reward_functions(saved, [args.reward_fn], rlp).items()
    t_setup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="geli-bench-ppo-") as tmp:
        os.environ["GELI_RESULTS"] = str(Path(tmp) / "results")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        if rlp.workers > 1:
            info, t_run = side_by_side(name, folder, train, curve, rlp, params, device, Path(tmp))
        else:
            info = rl.train_rl(
                name,
                folder,
                train,
                rlp,
                args.profile,
                params.corpus,
                params.seed,
                device,
                out_dir=Path(tmp) / "run",
                curve=curve,
                data=params.data,
            )
            t_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = rl.generations(held_out, {name: info.adapter}, rlp, params.seed, device)
        t_gen = time.perf_counter() - t0
    secs = info.curves["seconds"].to_numpy()
    steady = float(secs[1:].mean()) if len(secs) > 1 else float(secs[0])
    n_fns = len(params.rl.reward_fns)
    n_eval = len(info.evals["step"].unique()) if len(info.evals) else 0  # before the first update and at the end
    overhead = t_run - secs.sum()  # model loading, trainer construction, evaluation points, saving
    t_point = overhead / max(n_eval, 1) if n_eval else 0.0  # an upper bound: loading counts in
    points = params.rl.steps // params.rl.eval_every + 1 + (params.rl.steps % params.rl.eval_every > 0)
    rounds = -(-n_fns // rlp.workers)  # rl.workers adaptations train at once
    projected = (
        rounds * (params.rl.steps * steady + overhead + max(points - n_eval, 0) * t_point) + t_gen * (n_fns + 1) / 2
    )
    mem = (
        f"peak CUDA memory {torch.cuda.max_memory_allocated() / 1024**3:.2f} GiB"
        if device == "cuda"
        else f"peak RSS {info.peak_rss_gb:.2f} GiB"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"profile {args.profile} on {device} ({torch.get_num_threads()} torch threads, load average {load:.1f}): "
        f"{rlp.algorithm.upper()}, batch {rlp.batch_size} responses"
        f"{f' ({rlp.batch_size // rlp.group_size} prompts x {rlp.group_size})' if rlp.algorithm != 'ppo' else ''}, "
        f"mini-batch {rlp.mini_batch_size}, {rlp.ppo_epochs} PPO epoch(s), {rlp.response_length} response "
        f"tokens, prompts <= {rlp.max_prompt_tokens} tokens ({rlp.history_turns} turns), lr {rlp.lr:g}, "
        f"policy in {'bf16 autocast' if bf16_in_effect(rlp.bf16, device) else 'float32'}"
    )
    if rlp.workers > 1:
        print(
            f"{rlp.workers} copies of the adaptation side by side, each in a worker process with {rlp.threads} torch "
            f"thread(s) (rl.workers, rl.threads), as 07 trains them; per update of one copy, and the copies' "
            f"wall time from the cluster's start"
        )
    print(
        f"setup {t_setup:.1f} s; first update {secs[0]:.1f} s; steady {steady:.1f} s / update "
        f"(updates: {', '.join(f'{s:.1f}' for s in secs)}); load/build/evaluate/save overhead {overhead:.1f} s "
        f"({n_eval} evaluation points of {rlp.curve_contexts} contexts); {mem}"
    )
    print(f"generations: {len(rows)} rows ({len(held_out)} contexts × base, adapted, truth) in {t_gen:.1f} s")
    print(
        f"projected RL stage of the {args.profile} profile (07 training + generations): {n_fns} reward functions "
        f"× {params.rl.steps} updates + {points} evaluation points, {rlp.workers} at once = {projected / 60:.1f} min"
    )
    print(
        f"reward r̂ per update: {', '.join(f'{r:.3f}' for r in info.curves['reward_mean'])}; "
        f"KL: {', '.join(f'{k:.4f}' for k in info.curves['kl'])}"
    )


if __name__ == "__main__":
    main()
