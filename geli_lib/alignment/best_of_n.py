"""Best-of-n: what selection alone buys under a reward function, the training-free control for RL.

Draw n responses per context from the base policy at the RL rollouts' temperature and keep the one r̂
scores highest (best-of-n, Stiennon et al. 2020; Nakano et al. 2021). No weight moves, and the picked
responses' distribution is at most log n − (n−1)/n nats from the base's (:func:`kl_bound`). Two readings:

- **Are there gains without collapse?** If best-of-n raises a reward while its picks stay varied
  (distinct-2, the share of the most frequent pick) and RL on the same reward collapses onto one
  sentence, the reward has non-degenerate gains and the optimiser missed them; if best-of-n's gains
  come with collapse too, the reward pays for it.
- **Are the gains the truth's?** The picks are scored under every judge, the oracle (trained on the
  simulation's planted truth) among them: a reward whose picks do not raise the oracle is optimised
  against itself (GELI Sec. 5.3's question, asked without RL's noise).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from geli_lib.alignment.generation_eval import PAIRED_TEST, PairScorer, distinct_n, p_text, paired_p
from geli_lib.alignment.rl.curve import collapsed, top_share
from geli_lib.alignment.rl.generations import generate
from geli_lib.alignment.rl.prompt import encode_prompt, scoring_histories
from geli_lib.core.params import DataParams, RLParams

#: Prompts per sampling call of :func:`control`: with weights in bf16, 64 took 48 s for 8 × 64 draws where 32
#: took 68 (2 cores of a Xeon with AMX); 128 gained nothing more.
SAMPLING_BATCH = 64

#: A scorer: r̂ of (histories, responses) pairs (:class:`~geli_lib.alignment.generation_eval.PairScorer`).
Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def kl_bound(n: int) -> float:
    """KL(best-of-n ‖ base) ≤ log n − (n−1)/n nats: the value used for best-of-n since Stiennon et al. 2020,
    which Beirami et al. 2024 show bounds the actual KL from above."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def sample_groups(
    model: Any, tok: Any, histories: Sequence[str], n: int, max_new_tokens: int, temperature: float,
    max_prompt_tokens: int, seed: int = 0, batch_size: int = 32,
) -> list[list[str]]:  # fmt: skip
    """``n`` sampled responses of ``model`` to each history (the policy's prompt), context-major: ``out[c][k]``.

    Draw k of every context comes from one seeded generation pass (seed ``seed`` · 10⁴ + k), so the first k draws
    are the same whatever ``n`` (best-of-2 picks among best-of-8's first two). ``batch_size``: prompts per
    ``generate`` call (the batch changes a sample's last bits, so it is part of what the draws are).
    """
    tok.padding_side = "left"
    prompts = [encode_prompt(tok, h, max_prompt_tokens)[0] for h in histories]
    draws = [
        generate(model, tok, prompts, max_new_tokens, True, seed * 10_000 + k, batch_size, temperature)
        for k in range(n)
    ]
    return [list(group) for group in zip(*draws)]


def pick_best(scores: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``scores`` (contexts × draws), the index of the highest of the first ``n`` (the first on ties)."""
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"best-of-{n} needs 1 <= n <= {scores.shape[1]} draws")
    return np.argmax(scores[:, :n], axis=1)


def best_of_n(
    states: Sequence[str],
    samples: Sequence[Sequence[str]],
    scorers: Mapping[str, Scorer],
    selectors: Sequence[str],
    ns: Sequence[int],
    greedy: Sequence[str] | None = None,
    permutations: int = 20000,
    tested: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per (selector, n): best-of-n under ``selector``, scored by every scorer.

    ``states``: r_θ's dialogue state per context; ``samples[c]``: the draws for context c
    (:func:`sample_groups`); ``scorers``: name -> r̂ (every judge, the selectors among them). Columns:
    ``selected by``, ``n``, ``KL bound (nats)`` (:func:`kl_bound`), ``r̂: <judge>`` (mean over contexts of the
    picks' scores), ``gain`` and ``p`` (the selector's own r̂, picks vs each context's first draw, i.e.
    best-of-1; :data:`PAIRED_TEST`), ``distinct-2``, ``top response share`` and ``collapsed``
    (:func:`~geli_lib.alignment.rl.curve.collapsed` against the first draws). With ``greedy`` (the base's
    greedy responses to the same contexts, as 07 and 08 test the adapted policies): ``gain vs greedy`` and
    ``p vs greedy`` (the picks against them, the comparison RL's verdict makes), and a last row,
    ``selected by`` = ``greedy base``, n 0. For each judge of ``tested`` (the oracle): ``gain: <judge>`` and
    ``p: <judge>``, its r̂ of the picks against the first draws, tested as the selector's own.
    """
    unknown = [s for s in [*selectors, *tested] if s not in scorers]
    if unknown:
        raise ValueError(f"selectors or tested judges {unknown} are not among the scorers: {list(scorers)}")
    width = {len(g) for g in samples}
    if len(width) != 1:
        raise ValueError(f"every context needs the same number of draws; got {sorted(width)}")
    draws = np.array([list(g) for g in samples], dtype=object)  # contexts × draws
    n_ctx, n_draws = draws.shape
    flat_states = np.repeat(np.asarray(states, dtype=object), n_draws).tolist()
    scores = {
        name: np.asarray(f(flat_states, draws.ravel().tolist())).reshape(n_ctx, n_draws) for name, f in scorers.items()
    }
    at_greedy = (
        {} if greedy is None else {name: np.asarray(f(list(states), list(greedy))) for name, f in scorers.items()}
    )
    rows = []
    rows_idx = np.arange(n_ctx)
    first = draws[:, 0].tolist()
    for selector in selectors:
        for n in ns:
            picked = pick_best(scores[selector], n)
            responses = draws[rows_idx, picked].tolist()
            own = scores[selector][rows_idx, picked]
            row: dict[str, Any] = {"selected by": selector, "n": n, "KL bound (nats)": kl_bound(n)}
            row |= {f"r̂: {name}": float(s[rows_idx, picked].mean()) for name, s in scores.items()}
            row["gain"] = float((own - scores[selector][:, 0]).mean())
            row["p"] = paired_p(own, scores[selector][:, 0], permutations) if n > 1 else 1.0
            if greedy is not None:
                row["gain vs greedy"] = float((own - at_greedy[selector]).mean())
                row["p vs greedy"] = paired_p(own, at_greedy[selector], permutations)
            for judge in tested:
                picked_scores = scores[judge][rows_idx, picked]
                row[f"gain: {judge}"] = float((picked_scores - scores[judge][:, 0]).mean())
                row[f"p: {judge}"] = paired_p(picked_scores, scores[judge][:, 0], permutations) if n > 1 else 1.0
            row["test"] = PAIRED_TEST
            row |= _diversity(responses, first)
            rows.append(row)
    if greedy is not None:
        row = {"selected by": "greedy base", "n": 0, "KL bound (nats)": math.nan}
        row |= {f"r̂: {name}": float(s.mean()) for name, s in at_greedy.items()}
        row |= {"gain": math.nan, "p": math.nan, "gain vs greedy": 0.0, "p vs greedy": math.nan, "test": ""}
        row |= _diversity(list(greedy), first)
        rows.append(row)
    return pd.DataFrame(rows)


def _diversity(responses: list[str], reference: list[str]) -> dict[str, Any]:
    """distinct-2, the most frequent response's share, and whether they collapsed against ``reference``."""
    return {
        "distinct-2": distinct_n(responses, 2),
        "top response share": top_share(responses),
        "collapsed": collapsed(responses, reference),
    }


def control(
    contexts: pd.DataFrame,
    selectors: Mapping[str, str | Path],
    judges: Mapping[str, str | Path],
    rl: RLParams,
    data: DataParams,
    n: int,
    seed: int = 0,
    device: str = "cpu",
    permutations: int = 20000,
) -> pd.DataFrame:
    """The best-of-n table of held-out ``contexts`` (rows of :func:`~geli_lib.alignment.rl.rl_contexts`).

    ``n`` draws per context at ``rl.temperature``, ``rl.gen_tokens`` tokens, from the base policy as RL's
    rollouts sample it (weights stored in bf16 where ``rl.bf16`` applies: 48 s for 8 × 64 draws on 2 cores of
    a Xeon with AMX in batches of :data:`SAMPLING_BATCH`, against 84 s in float32 in batches of 32), and its
    greedy responses as 07's generations give them (float32 weights under bf16 autocast); best-of-1, 2, 4, …
    ≤ ``n`` under each reward function of ``selectors`` (name -> saved folder), scored by them and by
    ``judges`` (more folders; a judge that is not a selector, the oracle, gets its gain and p reported).
    :func:`best_of_n` gives the columns; ``seed`` and ``n contexts`` are added.
    """
    from geli_lib.core.models import autocast, bf16_in_effect, load_policy  # lazy: transformers after offline_env
    from geli_lib.reward.reward_model import TrainedReward

    folders = {**selectors, **judges}
    scorers = {name: PairScorer(TrainedReward.load(folder), data, device) for name, folder in folders.items()}
    bf16 = bf16_in_effect(rl.bf16, device)
    histories = contexts["history"].tolist()
    with autocast(bf16, device):
        sampler, tok = load_policy(device, torch.bfloat16 if bf16 else None)
        samples = sample_groups(
            sampler, tok, histories, n, rl.gen_tokens, rl.temperature, rl.max_prompt_tokens, seed, SAMPLING_BATCH
        )
        del sampler
        model, tok = load_policy(device)
        tok.padding_side = "left"
        prompts = [encode_prompt(tok, h, rl.max_prompt_tokens)[0] for h in histories]
        greedy = generate(model, tok, prompts, rl.gen_tokens)
    ns = [2**i for i in range(n.bit_length())]  # 1, 2, 4, … ≤ n
    truth = [name for name in judges if name not in selectors]
    states = scoring_histories(contexts).tolist()
    table = best_of_n(states, samples, scorers, list(selectors), ns, greedy, permutations, truth)
    return table.assign(seed=seed, **{"n contexts": len(contexts)})


def reading(table: pd.DataFrame, rl_summary: pd.DataFrame | None = None) -> str:
    """What one seed's table says, in numbers (markdown): per reward function, its best-of-n at the largest n
    against a base draw and the greedy base, the judges of ``tested`` (``gain: <judge>``) and the picks'
    diversity, beside RL's gain from 07's ``rl_summary`` (base vs adapted, greedy) where given."""
    if table["seed"].nunique() != 1:
        raise ValueError(f"reading() describes one seed's table; got seeds {sorted(table['seed'].unique())}")
    picks = table[table["n"] > 0]
    top = picks[picks["n"] == picks["n"].max()]
    greedy = table[table["selected by"] == "greedy base"]
    rl = {} if rl_summary is None else rl_summary.set_index("reward function").to_dict("index")
    truths = [c.removeprefix("gain: ") for c in table if c.startswith("gain: ")]
    lines = []
    for _, row in top.iterrows():
        name = row["selected by"]
        text = (
            f"- **{name}**, best-of-{row['n']} (KL ≤ {row['KL bound (nats)']:.2f} nats): {row['gain']:+.2f} over a "
            f"base draw (p {p_text(row['p'])}), {row['gain vs greedy']:+.2f} over the greedy base "
            f"(p {p_text(row['p vs greedy'])})"
        )
        text += "".join(f"; {t} {row[f'gain: {t}']:+.2f} (p {p_text(row[f'p: {t}'])})" for t in truths)
        text += f"; distinct-2 {row['distinct-2']:.2f}, top response share {row['top response share']:.2f}"
        text += ", collapsed" if row["collapsed"] else ", not collapsed"
        if name in rl:
            r = rl[name]
            verdict = "learned" if r.get("learned") else "did not learn"
            kept = r.get("kept update")
            where = "" if kept is None or pd.isna(kept) else f", kept update {int(kept)}"
            text += f". RL{where}: {r['gain']:+.2f} (p {p_text(r['p'])}, KL {r['KL (nats)']:.1f} nats), {verdict}"
        lines.append(text + ".")
    if len(greedy):
        g = greedy.iloc[0]
        lines.append(
            f"- The greedy base: distinct-2 {g['distinct-2']:.2f} against the draws' "
            f"{picks.loc[picks['n'] == 1, 'distinct-2'].iloc[0]:.2f}."
        )
    return "\n".join(lines)
