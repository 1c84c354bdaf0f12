"""Generations of the adapted agents, the RL summary, the command line."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from geli_lib.alignment.generation_eval import GENERATION_COLUMNS, distinct_n, p_text
from geli_lib.alignment.rl.cluster import adapt_on_cluster, adaptations_compute
from geli_lib.alignment.rl.curve import collapsed, curve_slope, top_share
from geli_lib.alignment.rl.ppo import RunInfo, _quiet, train_rl
from geli_lib.alignment.rl.prompt import RLError, encode_prompt, rl_contexts, scoring_histories, strip_role
from geli_lib.alignment.rl.reward import check_adapter
from geli_lib.alignment.rl.runs import launched_processes, merge_rows
from geli_lib.core.models import autocast, bf16_in_effect, load_policy, offline_env, smollm2_path
from geli_lib.core.params import REWARD_FUNCTION_IDS, RLParams, key_value, load_params
from geli_lib.core.runs import results_dir
from geli_lib.corpus import data
from geli_lib.reward import experiments

# --------------------------------------------------------------------------- generations


@torch.no_grad()
def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    do_sample: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    temperature: float = 1.0,
) -> list[str]:
    """Responses of ``model`` to token-id prompts (left-padded batches), decoded without special tokens.

    ``do_sample``: pure sampling (no top-k / top-p cut) at ``temperature``, seeded by ``seed``; greedy otherwise.

    Batches of 32, not 8: a decode step's fixed cost (PEFT's LoRA hooks, generate's own) dominates on CPU;
    64 held-out contexts of the cpu profile, 12 tokens: 17.4 -> 8.7 s per adapted model, 7.2 -> 4.5 s for the base.
    """
    model.eval()
    out: list[str] = []
    torch.manual_seed(seed)
    for i in range(0, len(prompts), batch_size):
        batch = tok.pad({"input_ids": [list(p) for p in prompts[i : i + batch_size]]}, return_tensors="pt")
        batch = {k: v.to(model.device) for k, v in batch.items()}
        kw = (
            {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": temperature}
            if do_sample
            else {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
        )
        seq = model.generate(
            **batch, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw
        )
        out += [
            strip_role(t) for t in tok.batch_decode(seq[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        ]
    return out


def load_adapted(adapter: str | Path, device: str = "cpu", rl: RLParams | None = None) -> Any:
    """The policy with a saved LoRA adapter (a fresh base underneath), eval mode.

    With ``rl``, an adapter of another base model or LoRA rank is refused (:func:`check_adapter`).
    """
    offline_env()
    # lazy: transformers only when a model is used, after offline_env()
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise RLError(f"{adapter}: no saved adapter (adapter_config.json missing); run the adaptation first")
    if rl is not None:
        check_adapter(adapter, rl, smollm2_path())
    base, _ = load_policy(device)
    return PeftModel.from_pretrained(base, adapter).eval()


@_quiet()
def generations(
    contexts: pd.DataFrame, adapters: dict[str, Path], rl: RLParams, seed: int = 0, device: str = "cpu"
) -> pd.DataFrame:
    """Side-by-side responses (GELI App. H): ``base``, every adapted model, and the ``ground truth``.

    ``contexts``: rows of :func:`dialogue_contexts` (any corpus). One row per
    (context, model) in the :data:`GENERATION_COLUMNS` contract; the history is
    the context's ``reward_history`` (the dialogue state r_θ scores in, as in
    training), of which the models were shown the last ``rl.history_turns`` turns
    left-truncated to ``max_prompt_tokens`` (``history`` without it). With
    ``rl.bf16`` the models generate under bf16 autocast, as they were trained.
    """
    base, tok = load_policy(device)
    prompts = [encode_prompt(tok, h, rl.max_prompt_tokens)[0] for h in contexts["history"]]
    models: dict[str, list[str]] = {"ground truth": contexts["response"].astype(str).tolist()}
    with autocast(bf16_in_effect(rl.bf16, device), device):
        models["base"] = generate(base, tok, prompts, rl.gen_tokens, rl.gen_do_sample, seed)
        for name, folder in adapters.items():
            adapted = load_adapted(folder, device, rl)
            models[name] = generate(adapted, tok, prompts, rl.gen_tokens, rl.gen_do_sample, seed)
    states = scoring_histories(contexts).to_numpy()
    meta = contexts[["corpus", "context_id", "convo_id", "turn_idx"]].assign(seed=seed, history=states)
    rows = [meta.assign(model=m, response=r) for m, r in models.items()]
    return pd.concat(rows, ignore_index=True)[list(GENERATION_COLUMNS)]


def write_generations(profile: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Merge ``rows`` into ``results/<profile>/tables/generations.csv`` (same corpus, seed, context, model replaced)."""
    return merge_rows(
        results_dir(profile, "tables") / "generations.csv",
        rows,
        ["corpus", "seed", "context_id", "model"],
        GENERATION_COLUMNS,
    )


def rl_summary(
    stats: pd.DataFrame, runs: dict[str, RunInfo], base: str = "base", gens: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per adapted model: base vs adapted under its **own** reward on the held-out contexts, KL, slope, collapse.

    ``stats``: :func:`geli_lib.alignment.generation_eval.cross_reward_stats` of the
    generations (models named by their reward function). Columns: reward
    function, algorithm, updates, the update whose adapter the run kept
    (:func:`kept_step`), base / adapted mean and sd over contexts, the
    gain, its p and the test's name, n contexts, the KL weight the run started
    from (before the adaptive controller moved it), the KL to the reference at
    the kept update (mean over the curve's contexts; nats per greedy response),
    the slope of the evaluation curve (r̂ per update) up to the kept update with its
    95% bootstrap CI over contexts (:func:`curve_slope`), seconds per update. With ``gens`` (the
    generations the stats were scored on: ``model``, ``response``): distinct-2 of
    the base's and the adapted model's responses, the share of the adapted model's
    responses equal to its most frequent one, ``collapsed`` (:func:`collapsed`
    against the base's responses), and ``learned``: p < 0.05, the slope's CI above 0
    and not collapsed.
    """
    by_model = (
        {} if gens is None else {m: r.fillna("").astype(str).tolist() for m, r in gens.groupby("model")["response"]}
    )
    rows = []
    for name, info in runs.items():
        own = stats[(stats["model"] == name) & (stats["reward_fn"] == name)]
        ref = stats[(stats["model"] == base) & (stats["reward_fn"] == name)]
        last_update = int(info.curves["step"].max()) if len(info.curves) else 0
        kept = last_update if info.kept_step is None else info.kept_step
        ev = info.evals[info.evals["step"] <= kept] if not info.evals.empty else info.evals
        slope, lo, hi = curve_slope(ev) if not ev.empty else (math.nan,) * 3
        last = ev[ev["step"] == ev["step"].max()] if not ev.empty else ev
        o = own.iloc[0] if len(own) else None
        b = ref.iloc[0] if len(ref) else None
        rows.append(
            {
                "reward function": name,
                "algorithm": str(info.curves["algorithm"].iloc[0]) if len(info.curves) else "",
                "updates": last_update,
                "kept update": kept,
                "base r̂": b["mean"] if b is not None else math.nan,
                "base sd": b["sd_contexts"] if b is not None else math.nan,
                "adapted r̂": o["mean"] if o is not None else math.nan,
                "adapted sd": o["sd_contexts"] if o is not None else math.nan,
                "gain": o["diff"] if o is not None else math.nan,
                "p": o["p"] if o is not None else math.nan,
                "test": o["test"] if o is not None else "",
                "n contexts": int(o["n"]) if o is not None else 0,
                "KL weight (start)": float(info.curves["kl_coef"].iloc[0]) if len(info.curves) else math.nan,
                "KL (nats)": float(last["kl"].mean()) if len(last) else math.nan,
                "slope (r̂/update)": slope,
                "slope 95% CI low": lo,
                "slope 95% CI high": hi,
                "s / update": info.seconds_per_step,
            }
        )
        if gens is not None:
            row = rows[-1]
            mine, theirs = by_model.get(name, []), by_model.get(base, [])
            row["distinct-2 base"], row["distinct-2 adapted"] = distinct_n(theirs, 2), distinct_n(mine, 2)
            row["top response share"] = top_share(mine)
            row["collapsed"] = collapsed(mine, theirs)
            row["learned"] = not unmet_for_learning(row["p"], lo, row["collapsed"])
    return pd.DataFrame(rows)


def unmet_for_learning(p: float, slope_ci_low: float, collapsed: bool) -> list[str]:
    """Which of the three conditions of "learned" a run fails: a significant gain under its own reward
    (p < 0.05), a curve rising beyond noise (slope CI above 0), no collapse. None: it learned."""
    checks = (
        ("gain not significant (p ≥ 0.05)", not p < 0.05),
        ("slope CI not above 0", not slope_ci_low > 0),
        ("collapsed", bool(collapsed)),
    )
    return [reason for reason, failed in checks if failed]


def summary_reading(summary: pd.DataFrame) -> str:
    """What :func:`rl_summary` says, in numbers (markdown): one line per reward function, base → adapted under its
    own reward with the gain's p, the slope with its CI, the KL, diversity against the base's, and the verdict
    with its reasons (each of ``learned``'s three conditions that failed); then how many learned."""
    lines = []
    for r in summary.to_dict("records"):
        kept = f"kept update {r['kept update']} of {r['updates']}"
        slope = (
            "no slope (it kept the base model)"
            if r["kept update"] == 0
            else f"slope {r['slope (r̂/update)']:.3f} r̂ per update "
            f"[{r['slope 95% CI low']:.3f}, {r['slope 95% CI high']:.3f}]"
        )
        text = (
            f"- **{r['reward function']}** ({str(r['algorithm']).upper()}, {kept}): {r['base r̂']:.2f} → "
            f"{r['adapted r̂']:.2f} under its own reward, {r['gain']:+.2f} (p {p_text(r['p'])}, paired over "
            f"{r['n contexts']} contexts); {slope}; KL {r['KL (nats)']:.1f} nats"
        )
        if "learned" not in r:
            lines.append(text + ".")
            continue
        text += (
            f"; distinct-2 {r['distinct-2 adapted']:.2f} (base {r['distinct-2 base']:.2f}), its most frequent reply "
            f"for {r['top response share']:.0%} of the contexts"
        )
        why = unmet_for_learning(r["p"], r["slope 95% CI low"], r["collapsed"])
        lines.append(text + (f": not learned ({'; '.join(why)})." if why else ": **learned**."))
    tests = ", ".join(name for name in dict.fromkeys(summary["test"].fillna("").astype(str)) if name)
    learned = int(summary["learned"].sum()) if "learned" in summary else None
    tally = "" if learned is None else f"{learned} of {len(summary)} reward functions learned. "
    lines.append(f"\n{tally}p: {tests or 'no test'}; the slope's CI is a 95% bootstrap over the curve's contexts.")
    return "\n".join(lines)


def select_reward_functions(available: dict[str, Path], wanted: str | Sequence[str], rl: RLParams) -> dict[str, Path]:
    """The reward functions a notebook asks for, by display name: an id, a list of ids, or ``all``
    (the profile's ``rl.reward_fns``).

    ``available`` is :func:`geli_lib.reward.experiments.saved_reward_functions` (id -> folder). With
    ``all``, a function the corpus could not train (VA and GELI need video) is skipped with a
    message; an id asked for explicitly must be saved, else :class:`RLError` lists what is.
    """
    ids = list(rl.reward_fns) if wanted == "all" else [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [i for i in ids if i not in REWARD_FUNCTION_IDS]
    if unknown:
        raise RLError(f"{unknown} not reward-function ids; valid: {', '.join(REWARD_FUNCTION_IDS)}")
    missing = [i for i in ids if i not in available]
    if wanted == "all" and missing and len(missing) < len(ids):
        print(f"skipped (not trained on this corpus): {missing}")
        ids = [i for i in ids if i in available]
    elif missing:
        saved = ", ".join(f"{i} ({n})" for i, n in zip(available, experiments.by_display_name(available)))
        raise RLError(
            f"reward function(s) {missing} not saved; saved: {saved or 'none'} "
            "(run notebooks 02-05 of this profile and corpus first)"
        )
    return experiments.by_display_name({i: available[i] for i in ids})


def main(argv: list[str] | None = None) -> int:
    """``python -m geli_lib.alignment.rl`` / ``accelerate launch -m geli_lib.alignment.rl``: notebook 07's
    adaptations and generations.

    Every process runs the rollouts of its share of each batch (TRL); only the
    main process writes checkpoints, curves and generations.
    """
    offline_env()
    ap = argparse.ArgumentParser(prog="python -m geli_lib.alignment.rl", description=main.__doc__)
    ap.add_argument("--profile", default="gpu", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--reward-fn", nargs="+", default=["all"], help="reward-function ids (e.g. geli rrd_k32), or all")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--algorithm", choices=["ppo", "rloo", "grpo"])
    ap.add_argument(
        "--rl", action="append", default=[], metavar="KEY=VALUE", help="another value of an rl parameter (repeatable)"
    )
    ap.add_argument("--corpus")
    ap.add_argument("--data-path")
    ap.add_argument(
        "--scheduler",
        help="run the adaptations on a Dask cluster first: local, tcp://HOST:PORT or "
        "slurm (compute.scheduler; not with accelerate launch)",
    )
    args = ap.parse_args(argv)
    given = {"steps": args.steps, "algorithm": args.algorithm}
    overrides = dict(key_value(kv, "--rl") for kv in args.rl) | {k: v for k, v in given.items() if v is not None}
    params = load_params(
        args.profile, corpus=args.corpus, data_path=args.data_path, rl=overrides, compute={"scheduler": args.scheduler}
    )
    seed = params.seed if args.seed is None else args.seed
    if params.device == "cuda" and launched_processes() > 1:
        # r̂, the policy and the curve are put on "cuda" before accelerate picks this process's GPU: make it that one
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dialogues = data.load_corpus(params)
    split = data.split_conversations(dialogues.conversations, params.splits)
    train, held_out, curve = rl_contexts(dialogues, split, params.rl, seed)
    wanted = "all" if args.reward_fn == ["all"] else args.reward_fn
    chosen = select_reward_functions(
        experiments.saved_reward_functions(args.profile, params.corpus, seed), wanted, params.rl
    )
    if adaptations_compute(params.compute, params.rl).scheduler != "serial" and launched_processes() > 1:
        raise RLError(
            "compute.scheduler (--scheduler) or rl.workers > 1 and accelerate launch exclude each other: "
            "every process would submit the same runs"
        )
    adapt_on_cluster(
        chosen,
        train,
        params.rl,
        args.profile,
        params.compute,
        params.corpus,
        seed,
        params.device,
        curve=curve,
        data=params.data,
    )
    runs = {
        n: train_rl(
            n, f, train, params.rl, args.profile, params.corpus, seed, params.device, curve=curve, data=params.data
        )
        for n, f in chosen.items()
    }
    if int(os.environ.get("RANK", "0")) > 0:  # under `accelerate launch`, the main process reports and writes
        return 0
    for n, r in runs.items():
        print(
            f"{n}: {len(r.curves)} updates, {r.seconds_per_step:.1f} s/update, r̂ "
            f"{r.curves['reward_mean'].iloc[0]:.3f} -> {r.curves['reward_mean'].iloc[-1]:.3f}"
            + (
                f" ({launched_processes()} processes x {params.rl.batch_size} responses)"
                if launched_processes() > 1
                else ""
            )
        )
    write_generations(
        args.profile, generations(held_out, {n: r.adapter for n, r in runs.items()}, params.rl, seed, params.device)
    )
    return 0
