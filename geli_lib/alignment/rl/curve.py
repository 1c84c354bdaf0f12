"""The evaluation curve: r̂ and KL on held-out contexts during training, its slope, and the update kept."""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from geli_lib.alignment.generation_eval import distinct_n
from geli_lib.alignment.rl.prompt import strip_role
from geli_lib.alignment.rl.reward import TextReward
from geli_lib.core.models import autocast

# --------------------------------------------------------------------------- collapse

#: An adapted model whose distinct-2 falls below this share of the base model's has collapsed onto a few phrases:
#: its reward gain is not learning (issue: "a policy that gains reward by collapsing does not count").
COLLAPSE_DISTINCT2 = 0.5
#: ... or whose most frequent response is more than this share of its responses: one sentence whatever was said.
#: distinct-2 alone missed it (cpu, seed 0: GELI gave one sentence to 51 of 64 contexts at distinct-2 0.18,
#: above half the base's 0.34, because the other 13 responses were varied); the base's own share is 0.39.
COLLAPSE_TOP_SHARE = 0.5


def top_share(responses: Sequence[str]) -> float:
    """The share of ``responses`` equal to the most frequent one (NaN when there are none)."""
    return float(pd.Series(list(responses)).value_counts(normalize=True).iloc[0]) if len(responses) else math.nan


def collapsed(responses: Sequence[str], base_responses: Sequence[str]) -> bool:
    """Whether a model's responses have collapsed, against the base model's to the same contexts: distinct-2
    below :data:`COLLAPSE_DISTINCT2` × the base's, or one response over :data:`COLLAPSE_TOP_SHARE` of them."""
    return bool(
        distinct_n(list(responses), 2) < COLLAPSE_DISTINCT2 * distinct_n(list(base_responses), 2)
        or top_share(responses) > COLLAPSE_TOP_SHARE
    )


# --------------------------------------------------------------------------- the evaluation curve

#: Columns of ``tables/rl_eval_curves.csv``: one row per (run, evaluation step, held-out context).
EVAL_COLUMNS = ("reward_fn", "seed", "corpus", "algorithm", "step", "context_id", "reward", "kl", "words", "response")

#: Curve contexts per generation batch. Greedy responses under bf16 depend on which prompts share a batch (their
#: padding: 14% of 64 responses changed between batches of 16 and 64), so it is part of a run's key.
CURVE_BATCH = 64

#: What every run of this thread computes alike on one set of prompts (:class:`PolicyEvaluator`): the reference's
#: prompt states and the base's greedy responses (KL 0) at each run's first evaluation. Per thread, as a Dask worker
#: with several threads runs several adaptations at once; the latest set of prompts only (~190 MB on the cpu profile).
_SHARED = threading.local()


def _base_id(model: Any) -> str:
    """The base weights under a policy: its checkpoint, the dtypes its frozen weights are stored in (the group
    trainers store them in bf16) and its device; a memo of its outputs is valid for another policy with the same id."""
    dtypes = sorted({str(p.dtype) for n, p in model.named_parameters() if "lora_" not in n})
    return f"{getattr(model.config, '_name_or_path', '')}|{','.join(dtypes)}|{model.device}"


def at_base(model: Any) -> bool:
    """Whether a LoRA policy is its base model exactly: every ``lora_B`` is 0, as before the first update (the
    adapter then adds exact zeros)."""
    bs = [p for n, p in model.named_parameters() if "lora_B" in n]
    return bool(bs) and all(not p.any() for p in bs)


class PolicyEvaluator:
    """Greedy responses of a LoRA policy to fixed prompts, their r̂ and their KL to the reference, at every
    evaluation of one run (call it with the policy as it is now).

    ``kl``: Σ over the response's tokens (up to and including EOS) of the exact
    KL(π_φ(·|s, a_<k) ‖ π_η(·|s, a_<k)) over the vocabulary, π_η being the same
    model with the adapter off: nats per response, ≥ 0, comparable across
    algorithms (TRL's own logs estimate it from samples, per token or per response).

    The reference's states of the prompts do not change during a run (the adapter is off), so they are computed at
    the first call and kept (~3 MB per context at 128 prompt tokens in bf16), for the next runs of the thread on the
    same prompts too, as are the base's responses at a run's first evaluation (:func:`at_base`): 07's four runs
    evaluate the base once (the base on the cpu profile's 64 curve contexts, reference states included: 18 s; from
    the memo 40 ms, r̂ aside). The policy's states are the ones its generation left. Each call then runs both models
    only over the response's tokens, where the first implementation ran both over prompt + response after
    generating: 64 contexts of the cpu profile took ~16 s a call, now ~7 s. Policy and reference compute their
    logits the same way, so with the adapter's B = 0 (before the first update) the KL is exactly 0. The model's
    train/eval mode is restored.

    ``bf16``: the policy runs under bf16 autocast, as it was trained (``rl.bf16``); r̂ stays float32.
    ``batch_size``: prompts per generation (:data:`CURVE_BATCH`); a re-evaluation of a run's adapters must use the
    run's. For one evaluation: ``PolicyEvaluator(...)(model)``.
    """

    def __init__(
        self,
        tok: Any,
        prompts: Sequence[Sequence[int]],
        histories: Sequence[str],
        reward: TextReward,
        max_new_tokens: int,
        batch_size: int = CURVE_BATCH,
        bf16: bool = False,
    ) -> None:
        self.tok, self.reward, self.max_new_tokens, self.bf16 = tok, reward, max_new_tokens, bf16
        self.batches = [
            (tok.pad({"input_ids": [list(p) for p in prompts[i : i + batch_size]]}, return_tensors="pt"),
             list(histories[i : i + batch_size]))
            for i in range(0, len(prompts), batch_size)
        ]  # fmt: skip
        blob = repr((list(map(list, prompts)), max_new_tokens, batch_size, bf16)).encode()
        self.key = hashlib.sha1(blob).hexdigest()

    def _shared(self, model: Any) -> tuple[dict[int, Any], dict[int, tuple[list[str], np.ndarray]]]:
        """This thread's memo for these prompts under ``model``'s base: (reference states, base responses) by batch."""
        key = (self.key, _base_id(model), torch.get_num_threads())  # another thread count: other last bits
        if getattr(_SHARED, "key", None) != key:
            _SHARED.key, _SHARED.reference, _SHARED.base = key, {}, {}
        return _SHARED.reference, _SHARED.base

    @torch.no_grad()
    def __call__(self, model: Any) -> pd.DataFrame:
        """Columns ``reward, kl, words, response``, one row per prompt."""
        was_training = model.training
        model.eval()
        rows: list[dict[str, Any]] = []
        reference, base = self._shared(model)
        is_base = at_base(model)
        try:
            with autocast(self.bf16, str(model.device)):
                for b, (batch, histories) in enumerate(self.batches):
                    if is_base and b in base:
                        texts, kl = base[b]
                    else:
                        on_device = {k: v.to(model.device) for k, v in batch.items()}
                        texts, kl = self._respond(model, b, on_device, reference)
                        if is_base:
                            base[b] = texts, kl
                    r = self.reward.raw(histories, texts).numpy()
                    rows += [
                        {"reward": float(a), "kl": float(c), "words": len(t.split()), "response": t}
                        for a, c, t in zip(r, kl, texts)
                    ]
        finally:
            model.train(was_training)
        return pd.DataFrame(rows, columns=["reward", "kl", "words", "response"])

    def _respond(
        self, model: Any, b: int, batch: dict[str, torch.Tensor], reference: dict[int, Any]
    ) -> tuple[list[str], np.ndarray]:
        """Batch ``b``'s greedy responses and their KL to the reference (whose prompt states ``reference`` keeps)."""
        tok = self.tok
        out = model.generate(
            **batch,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            top_k=None,
            top_p=None,
            temperature=None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            return_dict_in_generate=True,
        )
        n = batch["input_ids"].shape[1]
        resp = out.sequences[:, n:]
        texts = [strip_role(t) for t in tok.batch_decode(resp, skip_special_tokens=True)]
        if not hasattr(model, "disable_adapter"):
            return texts, np.full(len(texts), np.nan)
        length = resp.shape[1]
        eos = (resp == tok.eos_token_id).long()
        keep = (eos.cumsum(1) - eos) == 0  # tokens up to and including the first EOS
        # the logits predicting the response's tokens are those at the last prompt token and at all but the last
        # response token: run them over the states of the prompt's first n - 1 tokens (left padding: positions
        # from the mask, as generate counts them)
        attn = torch.cat([batch["attention_mask"], keep.long()], 1)[:, : n - 1 + length]
        pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, n - 1 :]
        step = dict(input_ids=out.sequences[:, n - 1 : n - 1 + length], attention_mask=attn, position_ids=pos)
        policy_states = out.past_key_values  # prompt + response but its last token
        policy_states.crop(-(policy_states.get_seq_length() - (n - 1)))
        lp = model(**step, past_key_values=policy_states, use_cache=True).logits
        with model.disable_adapter():
            if b not in reference:
                prompt_pos = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                states = model(**batch, position_ids=prompt_pos, use_cache=True, logits_to_keep=1).past_key_values
                states.crop(-1)
                reference[b] = states
            reference_states = reference[b]
            lq = model(**step, past_key_values=reference_states, use_cache=True).logits
            reference_states.crop(-length)  # back to the prompt's states for the next call
        lp, lq = lp.float().log_softmax(-1), lq.float().log_softmax(-1)
        return texts, ((lp.exp() * (lp - lq)).sum(-1) * keep).sum(1).cpu().numpy()


def curve_slope(
    evals: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Least-squares slope of the mean evaluation reward over steps (r̂ per update), with a bootstrap CI.

    ``evals``: rows of one run (``step``, ``context_id``, ``reward``). The
    contexts are the independent units: the CI is the percentile interval of
    the slope over ``n_boot`` resamples of contexts (seeded). NaN with fewer
    than two steps.
    """
    wide = evals.pivot_table(index="context_id", columns="step", values="reward", aggfunc="mean")
    steps = wide.columns.to_numpy(dtype=float)
    if len(steps) < 2:
        return math.nan, math.nan, math.nan
    x = steps - steps.mean()
    w = x / (x**2).sum()  # slope = Σ w_k · mean_reward(step_k)
    y = wide.to_numpy(dtype=float)
    per_context = np.nansum(y * w, axis=1)  # each context's own slope; the mean of them is the slope of the mean
    slope = float(per_context.mean())
    rng = np.random.default_rng(seed)
    boots = per_context[rng.integers(0, len(per_context), size=(n_boot, len(per_context)))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return slope, float(lo), float(hi)


def kept_step(evals: pd.DataFrame) -> int:
    """The update whose adapter a run keeps: the last evaluation step at which the policy's greedy responses to the
    curve contexts have not :func:`collapsed` against its responses at the first step (the base's, before any
    update). A reward function whose maximiser is one sentence pulls the policy there (08's modal probe); the
    updates after it has collapsed buy reward by collapse, which does not count, so the run keeps the adapter from
    before. ``evals``: rows of one run (``step``, ``response``)."""
    by_step = {int(s): g["response"].astype(str).tolist() for s, g in evals.groupby("step")}
    first = min(by_step)
    return max(s for s, responses in by_step.items() if s == first or not collapsed(responses, by_step[first]))


# --------------------------------------------------------------------------- diversity against distance

#: A run's identity in ``rl_eval_curves.csv``.
RUN_KEYS = ["reward_fn", "seed", "corpus", "algorithm"]


def diversity_path(evals: pd.DataFrame) -> pd.DataFrame:
    """How each run's greedy responses to the curve contexts lose (or keep) their variety as the policy moves away
    from the reference: one row per run (:data:`RUN_KEYS`) and evaluation step, with the mean KL to the reference
    (nats per response), the mean r̂, distinct-2 as a share of the run's first evaluation (the base's), the top
    response share and whether the responses have :func:`collapsed` against the first evaluation's.

    Every reward function's run starts from the same base, so the rows put their rewards side by side: one
    whose maximiser is a single sentence loses distinct-2 at a small KL, one with gains in varied replies does not.
    """
    rows = []
    for key, run in evals.groupby(RUN_KEYS, sort=False):
        by_step = {int(s): g for s, g in run.groupby("step")}
        first = by_step[min(by_step)]["response"].fillna("").astype(str).tolist()
        base_d2 = distinct_n(first, 2)
        for step, g in sorted(by_step.items()):
            responses = g["response"].fillna("").astype(str).tolist()
            rows.append(
                dict(zip(RUN_KEYS, key))
                | {
                    "step": step,
                    "KL (nats)": float(g["kl"].mean()),
                    "mean r̂": float(g["reward"].mean()),
                    "distinct-2 / base": distinct_n(responses, 2) / base_d2 if base_d2 else math.nan,
                    "top response share": top_share(responses),
                    "collapsed": collapsed(responses, first),
                }
            )
    return pd.DataFrame(rows)


def collapse_onsets(path: pd.DataFrame) -> pd.DataFrame:
    """Per run of :func:`diversity_path`: how many of its evaluations after the first collapsed, the first update
    whose responses collapsed with the KL it had reached (NaN: none did), and the largest KL among its evaluations
    that did not collapse (how far the policy moved while its replies stayed varied)."""
    rows = []
    for key, run in path.groupby(RUN_KEYS, sort=False):
        moved = run[run["step"] > run["step"].min()]
        bad = moved[moved["collapsed"]]
        fine = run[~run["collapsed"]]
        rows.append(
            dict(zip(RUN_KEYS, key))
            | {
                "evaluations": len(moved),
                "collapsed evaluations": len(bad),
                "first collapse (update)": int(bad["step"].iloc[0]) if len(bad) else math.nan,
                "KL at first collapse": float(bad["KL (nats)"].iloc[0]) if len(bad) else math.nan,
                "largest KL not collapsed": float(fine["KL (nats)"].max()),
            }
        )
    return pd.DataFrame(rows)


def collapse_reading(onsets: pd.DataFrame) -> str:
    """The sentences 07 prints under its diversity figure, from :func:`collapse_onsets` of the runs it shows."""
    lines = []
    for name, part in onsets.groupby("reward_fn", sort=False):
        hit = part.dropna(subset=["first collapse (update)"])
        runs = f"{len(part)} run{'s' * (len(part) > 1)}"
        if hit.empty:
            lines.append(f"- **{name}**: no evaluation collapsed ({runs}), up to "
                         f"{part['largest KL not collapsed'].max():.1f} nats.")  # fmt: skip
            continue
        updates = ", ".join(str(int(u)) for u in hit["first collapse (update)"])
        kls = ", ".join(f"{k:.1f}" for k in hit["KL at first collapse"])
        counts = f"{int(part['collapsed evaluations'].sum())} of {int(part['evaluations'].sum())}"
        lines.append(
            f"- **{name}**: collapsed in {len(hit)} of {runs}, first at update {updates} ({kls} nats); "
            f"{counts} evaluations after the base collapsed."
        )
    return "\n".join(lines)
