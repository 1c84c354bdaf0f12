"""Automatic evaluation of the adapted agents' generations (``tables/auto_eval.csv``).

Human evaluation (GELI Table 2, LLM-GELI Tables 1-3) is the papers' verdict, but
it costs money; these cheap signals come first. Input: ``tables/generations.csv``
written by notebook 07 (:data:`GENERATION_COLUMNS`, one row per corpus, seed,
context and model; ``history`` holds the dialogue before the turn, one
utterance per line, ``User: …`` / ``AI: …``: r_θ's s_t, of which the policy was
shown only the last ``rl.history_turns`` turns). Per (corpus, seed, model), over that model's responses:

- ``reward: <name>``: mean r̂ under every trained reward function
  (cross-scoring: a model adapted to one reward function is scored by all the
  others, so reward hacking shows as a high score only on its own row).
  Scored by :class:`PairScorer`, **the same function RL training calls** on
  (dialogue before the turn, response): the history goes through
  :func:`reward_history` (r_θ's input format, its ``history_turns`` /
  ``history_chars`` cut), both texts through r_θ's encoder (its 256-token cut
  from the left), then the head. Constant reward functions (Mean, Mode) score
  every response alike and are left out.
- ``vader_compound``, ``vader_positive``: VADER's compound score (mean) and the
  share of responses with compound ≥ 0.05 (VADER's "positive" cut-off): positivity.
- ``distinct_<n>``: unique word n-grams / all word n-grams over the model's
  responses (Li et al. 2016): diversity.
- ``length``: words per response.
- ``context_overlap``: share of a response's content words (lower-cased, minus
  :data:`STOPWORDS`) that occur in the dialogue before it: a specificity proxy
  ("That's nice" scores 0; a reply that picks up the user's topic scores high).
- ``repetition``: share of a response's word n-grams that repeat an earlier
  n-gram of the same response (degenerate loops of RL-tuned policies).
- ``same_as_base``: share of responses identical to the base model's response
  to the same context and seed: how much adaptation changed the policy at all.

The table holds one row per (corpus, seed, model, metric); :func:`auto_eval_table`
gives mean ± sd over seeds. :func:`cross_reward_table` answers GELI's question
"does optimising one reward also raise the others?": models × reward functions,
mean ± sd over seeds, each cell tested against the base model by
:data:`PAIRED_TEST` over (seed, context) pairs (:func:`paired_p`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from geli_lib.alignment.human_eval import mean_sd_cell, sign_flip_test, stars
from geli_lib.core.params import DataParams, EvalParams
from geli_lib.listener.features import vader_compound
from geli_lib.reward.reward_model import RESPONSE_PREFIX, TrainedReward, pair_features
from geli_lib.reward.reward_model.encoder import _load_encoder

#: The generations contract (issue 6 writes it, notebooks 08/09 read it).
GENERATION_COLUMNS: tuple[str, ...] = (
    "corpus",
    "seed",
    "context_id",
    "convo_id",
    "turn_idx",
    "history",
    "model",
    "response",
)
#: Columns of ``tables/auto_eval.csv``.
AUTO_EVAL_COLUMNS: tuple[str, ...] = ("corpus", "seed", "model", "metric", "value", "n")
#: Prefix of the cross-scoring metrics.
REWARD_PREFIX = "reward: "
#: Function words left out of :func:`context_overlap` (a small English list: the proxy needs topic words).
STOPWORDS = frozenset(
    """
a about above after again all am an and any are as at be because been being both but by can could
did do does doing don't for from had has have having he her here hers him his how i i'm if in into is
it it's its just me more most my no nor not now of off oh ok okay on once only or other our ours out
over own really same she so some such than that that's the their them then there these they this those
to too um uh very was we were what when where which while who why will with would yeah yes you you're
your yours
""".split()
)

_WORD = re.compile(r"[a-z0-9']+")


class GenerationsError(ValueError):
    """generations.csv is missing or does not follow the contract; the message says where."""


def read_generations(path: str | Path) -> pd.DataFrame:
    """Read and check ``generations.csv``: the contract's columns, no empty keys, no duplicate rows.

    A missing file raises :class:`GenerationsError` pointing to notebook 07_ppo,
    which writes it. Responses may be empty (a policy can emit EOS at once);
    they are kept as empty strings.
    """
    path = Path(path)
    if not path.is_file():
        raise GenerationsError(
            f"{path}: no generations yet; run notebook 07_ppo of this profile first (it writes tables/generations.csv)"
        )
    gens = pd.read_csv(
        path,
        dtype={"context_id": str, "convo_id": str, "model": str, "corpus": str},
        keep_default_na=False,
        na_values={"seed": [""], "turn_idx": [""]},
    )
    missing = [c for c in GENERATION_COLUMNS if c not in gens]
    if missing:
        raise GenerationsError(f"{path}: missing column(s) {missing}; expected {list(GENERATION_COLUMNS)}")
    for col in ("corpus", "context_id", "model"):
        bad = gens.index[gens[col].astype(str).str.strip() == ""]
        if len(bad):
            raise GenerationsError(f"{path}: row {int(bad[0]) + 2}: empty {col!r}")
    if gens["seed"].isna().any():
        raise GenerationsError(f"{path}: row {int(gens.index[gens['seed'].isna()][0]) + 2}: empty 'seed'")
    gens["seed"] = gens["seed"].astype(int)
    dup = gens.duplicated(["corpus", "seed", "context_id", "model"], keep=False)
    if dup.any():
        r = gens[dup].iloc[0]
        raise GenerationsError(
            f"{path}: rows {[int(i) + 2 for i in gens.index[dup][:4]]}: duplicate "
            f"(corpus, seed, context_id, model) = ({r['corpus']}, {r['seed']}, "
            f"{r['context_id']}, {r['model']}); expected one row each"
        )
    gens["history"] = gens["history"].astype(str)
    gens["response"] = gens["response"].astype(str)
    return gens[list(GENERATION_COLUMNS)]


def reward_history(history: str, data: DataParams | None = None) -> str:
    """A generations history (one ``User: …`` / ``AI: …`` line per utterance) in r_θ's format.

    The format of :func:`geli_lib.corpus.data.build_pairs`: each utterance as
    ``" User: <text>"`` / ``" AI: <text>"`` concatenated; with ``data``, only the last
    ``data.history_turns`` of them, cut from the left to ``data.history_chars``.
    A line without a role prefix (a history left-truncated mid-utterance) is kept as it is.
    """
    lines = [" " + " ".join(line.split()) for line in str(history).splitlines() if line.strip()]
    if data is None:
        return "".join(lines)
    return "".join(lines[-data.history_turns :])[-data.history_chars :]


def reward_pairs(gens: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """The generations as reward-model pairs (``history``, ``response``) for ``predict_pairs``."""
    return pd.DataFrame(
        {
            "history": [reward_history(h, data) for h in gens["history"]],
            "response": gens["response"].astype(str).to_numpy(),
        },
        index=gens.index,
    )


#: Frozen text encoders loaded by :class:`PairScorer`, by (name, device): never trained, so shared.
_FROZEN_ENCODERS: dict[tuple[str, str], tuple[object, object]] = {}
#: Their embeddings of texts already scored, by (name, device, max_tokens, torch threads): 08 scores the same texts
#: under every reward function, RL scores a history once per sampled response. By thread count too: matrix
#: products may sum in another order on another count, and a 1-thread RL run (rl.threads) that reused
#: embeddings of its process's earlier 2-thread work trained another adapter than the same run in a fresh
#: process. Emptied past :data:`MEMO_TEXTS`.
_FROZEN_MEMO: dict[tuple[str, str, int, int], dict[str, np.ndarray]] = {}
#: Most texts :data:`_FROZEN_MEMO` keeps per encoder (384 floats each for MiniLM: ~150 MB at most).
MEMO_TEXTS = 100_000
#: Texts per encoder call when scoring: one. A text's embedding then depends on the text alone. In a batch it
#: moves in its last bits (~2e-7) with the batch's shape, and through the shared memo a run's rewards followed
#: what the process had scored before: at 64 texts per call, LI: Visual Affect (cpu, seed 0) run alone and run
#: after GELI in one process sampled the same first two updates and then parted (batch reward 1.74 vs 1.67 at
#: update 3); notebook 07, which runs four reward functions in one process, and ``python -m
#: geli_lib.alignment.rl --reward-fn va`` gave two different Visual Affect runs. One text per call: the same
#: run either way. MiniLM encoded 64 held-out histories in 2.1 s alone (2.5 s in batches: no padding) and 64
#: responses in 0.5 s (0.2 s).
SCORING_BATCH = 1


class PairScorer:
    """r̂ = r_θ(s_t, a_t) of (history lines, response) texts: the one scoring of RL and evaluation.

    RL training (:class:`geli_lib.alignment.rl.TextReward`), notebook 07's evaluation
    curves and notebook 08's cross-scores all call this. ``histories`` are in the
    policy's line format (``User: …`` / ``AI: …``, one per line: the dialogue before
    the turn, :func:`geli_lib.alignment.rl.scoring_histories`); they become r_θ's input
    by :func:`reward_history` with ``data`` (its ``history_turns`` / ``history_chars``
    cut), responses get r_θ's ``" AI: "`` prefix, both are embedded by r_θ's encoder
    (frozen MiniLM, or its own fine-tuned encoder; cut from the left at ``max_tokens``)
    and the head scores their concatenation. Texts are encoded now, each on its
    own (:data:`SCORING_BATCH`), never read from the feature cache, so the score
    of a pair does not depend on where it is called from, nor on what the
    process scored before.
    """

    def __init__(self, trained: TrainedReward, data: DataParams | None = None, device: str = "cpu"):
        self.trained, self.data = trained, data or DataParams()
        self.device = device
        self._memo_key: tuple[str, str, int] | None = None  # a frozen encoder's: shared (_FROZEN_MEMO)
        self._own_memo: dict[int, dict[str, np.ndarray]] = {}  # a fine-tuned encoder's: this scorer's own
        if trained.constant is not None:
            self.tok, self.encoder = None, None
        elif trained.finetuned:
            self.tok, self.encoder = trained.tokenizer, trained.text_encoder.to(device).eval()
        else:  # frozen encoders are shared by every scorer of the process (loaded once)
            key = (trained.encoder_name, device)
            if key not in _FROZEN_ENCODERS:
                _FROZEN_ENCODERS[key] = _load_encoder(trained.encoder_name, device)
            self.tok, self.encoder = _FROZEN_ENCODERS[key]
            self._memo_key = (*key, trained.params.max_tokens)
        if self.encoder is not None:
            self.encoder.requires_grad_(False)
        if trained.head is not None:
            trained.head.to(device).eval()

    @property
    def memo(self) -> dict[str, np.ndarray]:
        """Embeddings of the texts this encoder has scored at the present torch thread count."""
        threads = torch.get_num_threads()
        if self._memo_key is None:
            return self._own_memo.setdefault(threads, {})
        return _FROZEN_MEMO.setdefault((*self._memo_key, threads), {})

    def __call__(self, histories: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """r̂ (N,) float64 of each pair (NaN passes through: callers decide what a non-finite score means)."""
        if len(histories) != len(responses):
            raise ValueError(f"{len(histories)} histories but {len(responses)} responses")
        if self.trained.constant is not None:
            return np.full(len(responses), float(self.trained.constant))
        if not len(responses):
            return np.zeros(0)
        # fp32 whatever the caller's autocast (a bf16 RL trainer): training and reporting score alike
        with torch.no_grad(), torch.autocast(torch.device(self.device).type, enabled=False):
            feats = pair_features(
                [reward_history(h, self.data) for h in histories],
                [RESPONSE_PREFIX + str(r) for r in responses],
                self.tok,
                self.encoder,
                self.trained.encoder_name,
                self.trained.params.max_tokens,
                self.device,
                SCORING_BATCH,
                memo := self.memo,
            )
            if len(memo) > MEMO_TEXTS:
                memo.clear()
            out = self.trained.head(torch.from_numpy(feats).to(self.device))
        return out.float().cpu().numpy().astype(np.float64).reshape(-1)


# --------------------------------------------------------------------------- text scores


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, apostrophes)."""
    return _WORD.findall(str(text).lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The word n-grams of ``tokens`` in order."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(responses: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over ``responses`` (Li et al. 2016); NaN when there are none."""
    grams = [g for r in responses for g in ngrams(words(r), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition(response: str, n: int = 2) -> float:
    """Share of the response's n-grams equal to an earlier n-gram of it (0 with fewer than 2 n-grams)."""
    grams = ngrams(words(response), n)
    return (len(grams) - len(set(grams))) / len(grams) if len(grams) >= 2 else 0.0


def context_overlap(history: str, response: str) -> float:
    """Share of the response's content words that occur in the history; NaN without content words."""
    content = [w for w in words(response) if w not in STOPWORDS]
    if not content:
        return math.nan
    seen = set(words(history))
    return sum(w in seen for w in content) / len(content)


def response_scores(gens: pd.DataFrame, params: EvalParams) -> pd.DataFrame:
    """Per-response scores: length, VADER compound, context overlap, repetition (same index as ``gens``)."""
    resp = gens["response"].astype(str)
    return pd.DataFrame(
        {
            "length": [len(words(r)) for r in resp],
            "vader_compound": vader_compound(resp.tolist()),
            "context_overlap": [context_overlap(h, r) for h, r in zip(gens["history"], resp)],
            "repetition": [repetition(r, params.repetition_n) for r in resp],
        },
        index=gens.index,
    )


def same_as_base(gens: pd.DataFrame, base: str) -> pd.Series:
    """1.0 where a response equals (after whitespace normalisation) the base model's one to the same
    context and seed, else 0.0; NaN where the base model has no response there."""
    norm = gens["response"].astype(str).str.split().str.join(" ")
    keys = ["corpus", "seed", "context_id"]
    is_base = gens["model"] == base
    ref = pd.Series(norm[is_base].to_numpy(), index=pd.MultiIndex.from_frame(gens.loc[is_base, keys]))
    theirs = ref.reindex(pd.MultiIndex.from_frame(gens[keys])).to_numpy()
    same = (norm.to_numpy() == theirs).astype(float)
    return pd.Series(np.where(pd.isna(theirs), np.nan, same), index=gens.index)


def cross_scores(
    gens: pd.DataFrame, reward_functions: Mapping[str, str | Path], data: DataParams, device: str = "cpu"
) -> pd.DataFrame:
    """r̂ of every response under every (non-constant) reward function: one ``reward: <name>`` column each.

    ``reward_functions``: name -> saved folder (``experiments.saved_reward_functions``).
    Scored by :class:`PairScorer` on the dialogue before the turn: the score RL optimised.
    """
    out = pd.DataFrame(index=gens.index)
    hist, resp = gens["history"].astype(str).tolist(), gens["response"].astype(str).tolist()
    for name, folder in reward_functions.items():
        trained = TrainedReward.load(folder)
        if trained.constant is not None:
            continue
        out[REWARD_PREFIX + name] = PairScorer(trained, data, device)(hist, resp)
    return out


def per_response(
    gens: pd.DataFrame,
    params: EvalParams,
    data: DataParams,
    reward_functions: Mapping[str, str | Path] | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Every per-response score (text scores, ``reward: <name>`` columns, positivity, same-as-base, empty),
    same index as ``gens``: the input of :func:`auto_eval` and :func:`cross_reward_table`."""
    per = pd.concat([response_scores(gens, params), cross_scores(gens, reward_functions or {}, data, device)], axis=1)
    per["vader_positive"] = (per["vader_compound"] >= 0.05).astype(float)
    per["same_as_base"] = same_as_base(gens, params.base_model)
    per["empty"] = (gens["response"].astype(str).str.strip() == "").astype(float)
    return per


def auto_eval(
    gens: pd.DataFrame,
    params: EvalParams,
    data: DataParams,
    reward_functions: Mapping[str, str | Path] | None = None,
    device: str = "cpu",
    per: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``tables/auto_eval.csv``: one row per (corpus, seed, model, metric) with the value and its n.

    ``per``: the scores of :func:`per_response` when already computed (else computed here).
    """
    if per is None:
        per = per_response(gens, params, data, reward_functions, device)
    keys = gens[["corpus", "seed", "model"]]
    rows = []
    for (corpus, seed, model), idx in keys.groupby(["corpus", "seed", "model"], sort=False).groups.items():
        sub = per.loc[idx]
        for metric in per.columns:
            v = sub[metric].dropna()
            rows.append((corpus, int(seed), model, metric, float(v.mean()) if len(v) else math.nan, len(v)))
        resp = gens.loc[idx, "response"].tolist()
        for n in params.distinct_n:
            rows.append((corpus, int(seed), model, f"distinct_{n}", distinct_n(resp, n), len(resp)))
    return pd.DataFrame(rows, columns=list(AUTO_EVAL_COLUMNS))


#: What a table's ``mean ± sd`` cells span, and what a cell without ``±`` means.
SEEDS_NOTE = "mean ± sd over RL seeds; a mean without ± comes from one seed (07 with `-p seed N` adds seeds)"


def auto_eval_table(rows: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Models × metrics, ``mean ± sd`` over seeds (sd with ddof 1; the mean alone from one seed), per corpus."""
    g = rows.groupby(["corpus", "model", "metric"], sort=False)["value"]
    stats = g.agg(["mean", "std", "count"])
    cells = stats.apply(lambda s: mean_sd_cell(s["mean"], s["std"], s["count"], digits), axis=1)
    table = cells.unstack("metric")
    order = list(dict.fromkeys(rows["metric"]))
    table = table[[m for m in order if m in table.columns]]
    table.attrs["note"] = SEEDS_NOTE
    return table


# --------------------------------------------------------------------------- significance, cross-reward table

#: The paired test of every model against the base model (named in every table that reports its p).
PAIRED_TEST = "two-sided paired sign-flip permutation test over contexts"


def p_text(p: float) -> str:
    """A p-value as the tables print it: three decimals, below 1e-3 one significant digit (1e-4)."""
    return "n/a" if pd.isna(p) else f"{p:.0e}".replace("e-0", "e-") if p < 1e-3 else f"{p:.3f}"


def paired_p(a: Sequence[float], b: Sequence[float], permutations: int = 20000, seed: int = 0) -> float:
    """p of :data:`PAIRED_TEST` for mean(a − b) = 0, ``a`` and ``b`` paired by position (NaN pairs dropped).

    Exact (enumeration by convolution) when the differences lie on a grid 1/L, else
    ``permutations`` seeded Monte-Carlo sign flips (:func:`geli_lib.alignment.human_eval.sign_flip_test`).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples of different sizes: {a.shape} vs {b.shape}")
    d = a - b
    d = d[np.isfinite(d)]
    return sign_flip_test(d, permutations, seed) if len(d) else math.nan


def vs_base(
    gens: pd.DataFrame, per: pd.DataFrame, metric: str, base: str = "base", permutations: int = 20000
) -> pd.DataFrame:
    """Per (corpus, model): ``metric`` mean ± sd over seeds, and the paired test against ``base``.

    Columns: ``corpus, model, mean, sd`` (of the per-seed means; 0 with one seed),
    ``sd_contexts`` (over all responses), ``n_seeds``, ``n`` (paired (seed, context)
    items), ``diff`` (mean model − base over them), ``p`` (:func:`paired_p`; NaN for
    the base itself) and ``test``.
    """
    keys = ["corpus", "seed", "context_id"]
    frame = gens[keys + ["model"]].assign(value=per[metric].to_numpy())
    wide = frame.pivot_table(index=keys, columns="model", values="value", aggfunc="first")
    rows = []
    for (corpus, model), g in frame.groupby(["corpus", "model"], sort=False):
        seed_means = g.groupby("seed")["value"].mean()
        w = wide.loc[corpus] if corpus in wide.index.get_level_values(0) else wide.iloc[:0]
        paired = model != base and base in w and model in w
        a = w[model].to_numpy() if paired else np.zeros(0)
        b = w[base].to_numpy() if paired else np.zeros(0)
        ok = np.isfinite(a) & np.isfinite(b)
        rows.append(
            {
                "corpus": corpus,
                "model": model,
                "mean": float(seed_means.mean()),
                "sd": float(seed_means.std(ddof=1)) if len(seed_means) > 1 else 0.0,
                "sd_contexts": float(g["value"].std(ddof=1)) if g["value"].notna().sum() > 1 else 0.0,
                "n_seeds": int(seed_means.notna().sum()),
                "n": int(ok.sum()),
                "diff": float((a[ok] - b[ok]).mean()) if ok.any() else math.nan,
                "p": paired_p(a[ok], b[ok], permutations) if paired else math.nan,
                "test": PAIRED_TEST if paired else "",
            }
        )
    return pd.DataFrame(
        rows, columns=["corpus", "model", "mean", "sd", "sd_contexts", "n_seeds", "n", "diff", "p", "test"]
    )


#: Columns of :func:`modal_response_probe`.
PROBE_COLUMNS: tuple[str, ...] = (
    "corpus",
    "seed",
    "model",
    "modal response",
    "share of its responses",
    "reward_fn",
    "modal r̂",
    "ground truth r̂",
    "modal beats ground truth",
    "n",
)


def modal_response_probe(
    gens: pd.DataFrame,
    per: pd.DataFrame,
    reward_functions: Mapping[str, str | Path],
    data: DataParams,
    models: Sequence[str],
    truth_model: str = "ground truth",
    device: str = "cpu",
) -> pd.DataFrame:
    """A collapse control: each model's most frequent response, given in *every* context, against the real reply.

    Per (corpus, seed) and model of ``models``: the response it gives most often, scored in each
    context of the ``truth_model`` rows under every reward function of ``reward_functions`` (same
    :class:`PairScorer` as RL), beside the real reply's score from ``per`` (:func:`per_response`).
    A reward function under which one fixed sentence beats the speaker's own reply in most contexts
    rewards that sentence whatever was said: its maximiser is a single reply, a collapse that no KL
    weight prevents when the sentence is one the reference model already likes. Rows: :data:`PROBE_COLUMNS`.
    """
    truth = gens[gens["model"] == truth_model]
    rows = []
    for (corpus, seed, model), g in gens[gens["model"].isin(models)].groupby(["corpus", "seed", "model"]):
        counts = g["response"].value_counts()
        modal = str(counts.index[0])
        ctx = truth[(truth["corpus"] == corpus) & (truth["seed"] == seed)]
        probe = cross_scores(ctx.assign(response=modal), reward_functions, data, device)
        for col in probe.columns:
            real = per.loc[ctx.index, col].to_numpy(float)
            mine = probe[col].to_numpy(float)
            rows.append(
                (corpus, seed, model, modal, counts.iloc[0] / len(g), col.removeprefix(REWARD_PREFIX))
                + (float(mine.mean()), float(real.mean()), float((mine > real).mean()), len(ctx))
            )
    return pd.DataFrame(rows, columns=list(PROBE_COLUMNS))


def cross_reward_stats(
    gens: pd.DataFrame, per: pd.DataFrame, base: str = "base", permutations: int = 20000
) -> pd.DataFrame:
    """:func:`vs_base` for every ``reward: <name>`` column of ``per``, with a ``reward_fn`` column (long form)."""
    cols = [c for c in per.columns if c.startswith(REWARD_PREFIX)]
    parts = [vs_base(gens, per, c, base, permutations).assign(reward_fn=c[len(REWARD_PREFIX) :]) for c in cols]
    if not parts:
        return pd.DataFrame(
            columns=["corpus", "model", "reward_fn", "mean", "sd", "sd_contexts", "n_seeds", "n", "diff", "p", "test"]
        )
    out = pd.concat(parts, ignore_index=True)
    return out[["corpus", "model", "reward_fn"] + [c for c in out.columns if c not in ("corpus", "model", "reward_fn")]]


def cross_reward_table(stats: pd.DataFrame, digits: int = 2, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Models (rows) × reward functions (columns): ``mean ± sd`` over seeds (the mean alone from one seed), ``*``
    p < 0.05 and ``**`` p < 0.01 vs base (:data:`PAIRED_TEST`), per corpus. ``order``: models first in this order."""
    cells = stats.apply(lambda r: mean_sd_cell(r["mean"], r["sd"], r["n_seeds"], digits) + stars(r["p"]), axis=1)
    table = stats.assign(cell=cells).pivot_table(
        index=["corpus", "model"], columns="reward_fn", values="cell", aggfunc="first"
    )
    table = table[list(dict.fromkeys(stats["reward_fn"]))]
    models = list(dict.fromkeys([*(order or []), *stats["model"]]))
    idx = [(c, m) for c in dict.fromkeys(stats["corpus"]) for m in models if (c, m) in table.index]
    table = table.loc[idx]
    table.columns.name = "r̂ under"
    table.attrs["note"] = f"{SEEDS_NOTE}; * p < 0.05, ** p < 0.01 vs base ({PAIRED_TEST})"
    return table


def cross_reward_reading(stats: pd.DataFrame, truth: str | None = None, alpha: float = 0.05, top: int = 3) -> str:
    """What :func:`cross_reward_stats` says, in numbers (markdown): one line per model compared with the base
    (each adapted model, named as its reward function, and the ground truth): its difference from the base under
    its own reward, how many of the other reward functions it raises and lowers at p < ``alpha`` (the ``top``
    largest named) and leaves within noise, and apart its difference under ``truth`` (the oracle of the planted
    truth), the reward the others were meant to recover. Per corpus when there are several."""
    corpora = list(dict.fromkeys(stats["corpus"]))
    lines = []
    for corpus in corpora:
        here = stats[(stats["corpus"] == corpus) & stats["p"].notna()]
        for model in dict.fromkeys(here["model"]):
            rows = here[here["model"] == model].set_index("reward_fn")
            parts = []
            if model in rows.index:
                parts.append(f"{rows.loc[model, 'diff']:+.2f} under its own reward (p {p_text(rows.loc[model, 'p'])})")
            others = rows.drop(index=[f for f in (model, truth) if f in rows.index])
            sig = others[others["p"] < alpha]
            up = sig[sig["diff"] > 0].sort_values("diff", ascending=False)
            down = sig[sig["diff"] < 0].sort_values("diff")
            text = f"of the {len(others)} other reward functions it raises {len(up)}{_largest(up, top)}"
            text += f", lowers {len(down)}{_largest(down, top)} and leaves {len(others) - len(sig)} within noise"
            parts.append(text + f" (p ≥ {alpha})")
            if truth in rows.index:
                parts.append(f"under {truth}: {rows.loc[truth, 'diff']:+.2f} (p {p_text(rows.loc[truth, 'p'])})")
            where = f", {corpus}" if len(corpora) > 1 else ""
            seeds = int(rows["n_seeds"].iloc[0])
            n = f"{seeds} seed{'s' * (seeds > 1)}, {int(rows['n'].iloc[0])} paired contexts{where}"
            lines.append(f"- **{model}** ({n}): " + "; ".join(parts) + ".")
    return "\n".join(lines)


def _largest(rows: pd.DataFrame, top: int) -> str:
    """`` (A +0.30, B +0.20)``: the first ``top`` of ``rows`` (indexed by reward function) with their ``diff``."""
    if rows.empty:
        return ""
    named = ", ".join(f"{f} {d:+.2f}" for f, d in rows["diff"].head(top).items())
    return f" ({'largest: ' if len(rows) > top else ''}{named})"
