"""Automatic evaluation of the adapted agents' generations (``tables/auto_eval.csv``).

Human evaluation (GELI Table 2, LLM-GELI Tables 1-3) is the papers' verdict, but
it costs money; these cheap signals come first. Input: ``tables/generations.csv``
written by notebook 07 (:data:`GENERATION_COLUMNS`, one row per corpus, seed,
context and model; ``history`` holds one utterance per line, ``User: …`` /
``AI: …``). Per (corpus, seed, model), over that model's responses:

- ``reward: <name>``: mean r̂ under every trained reward function
  (cross-scoring: a model adapted to one reward function is scored by all the
  others, so reward hacking shows as a high score only on its own row). The
  history is converted to r_θ's input format by :func:`reward_pairs`.
  Constant reward functions (Mean, Mode) score every response alike and are left out.
- ``vader_compound``, ``vader_positive``: VADER's compound score (mean) and the
  share of responses with compound ≥ 0.05 (VADER's "positive" cut-off): positivity.
- ``distinct_<n>``: unique word n-grams / all word n-grams over the model's
  responses (Li et al. 2016): diversity.
- ``length``: words per response.
- ``context_overlap``: share of a response's content words (lower-cased, minus
  :data:`STOPWORDS`) that occur in its dialogue history: a specificity proxy
  ("That's nice" scores 0; a reply that picks up the user's topic scores high).
- ``repetition``: share of a response's word n-grams that repeat an earlier
  n-gram of the same response (degenerate loops of RL-tuned policies).
- ``same_as_base``: share of responses identical to the base model's response
  to the same context and seed: how much adaptation changed the policy at all.

The table holds one row per (corpus, seed, model, metric); :func:`auto_eval_table`
gives mean ± sd over seeds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from geli_lib.features import vader_compound
from geli_lib.params import DataParams, EvalParams

#: The generations contract (issue 6 writes it, notebooks 08/09 read it).
GENERATION_COLUMNS: tuple[str, ...] = (
    "corpus", "seed", "context_id", "convo_id", "turn_idx", "history", "model", "response")
#: Columns of ``tables/auto_eval.csv``.
AUTO_EVAL_COLUMNS: tuple[str, ...] = ("corpus", "seed", "model", "metric", "value", "n")
#: Prefix of the cross-scoring metrics.
REWARD_PREFIX = "reward: "
#: Function words left out of :func:`context_overlap` (a small English list: the proxy needs topic words).
STOPWORDS = frozenset("""
a about above after again all am an and any are as at be because been being both but by can could
did do does doing don't for from had has have having he her here hers him his how i i'm if in into is
it it's its just me more most my no nor not now of off oh ok okay on once only or other our ours out
over own really same she so some such than that that's the their them then there these they this those
to too um uh very was we were what when where which while who why will with would yeah yes you you're
your yours
""".split())

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
        raise GenerationsError(f"{path}: no generations yet; run notebook 07_ppo of this profile first "
                               "(it writes tables/generations.csv)")
    gens = pd.read_csv(path, dtype={"context_id": str, "convo_id": str, "model": str, "corpus": str},
                       keep_default_na=False, na_values={"seed": [""], "turn_idx": [""]})
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
        raise GenerationsError(f"{path}: rows {[int(i) + 2 for i in gens.index[dup][:4]]}: duplicate "
                               f"(corpus, seed, context_id, model) = ({r['corpus']}, {r['seed']}, "
                               f"{r['context_id']}, {r['model']}); expected one row each")
    gens["history"] = gens["history"].astype(str)
    gens["response"] = gens["response"].astype(str)
    return gens[list(GENERATION_COLUMNS)]


def reward_history(history: str, data: DataParams | None = None) -> str:
    """A generations history (one ``User: …`` / ``AI: …`` line per utterance) in r_θ's format.

    The format of :func:`geli_lib.data.build_pairs`: each utterance as
    ``" User: <text>"`` / ``" AI: <text>"`` concatenated; with ``data``, only the last
    ``data.history_turns`` of them, cut from the left to ``data.history_chars``.
    A line without a role prefix (a history left-truncated mid-utterance) is kept as it is.
    """
    lines = [" " + " ".join(line.split()) for line in str(history).splitlines() if line.strip()]
    if data is None:
        return "".join(lines)
    return "".join(lines[-data.history_turns:])[-data.history_chars:]


def reward_pairs(gens: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """The generations as reward-model pairs (``history``, ``response``) for ``predict_pairs``."""
    return pd.DataFrame({"history": [reward_history(h, data) for h in gens["history"]],
                         "response": gens["response"].astype(str).to_numpy()}, index=gens.index)


# --------------------------------------------------------------------------- text scores


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, apostrophes)."""
    return _WORD.findall(str(text).lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The word n-grams of ``tokens`` in order."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


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
    return pd.DataFrame({
        "length": [len(words(r)) for r in resp],
        "vader_compound": vader_compound(resp.tolist()),
        "context_overlap": [context_overlap(h, r) for h, r in zip(gens["history"], resp)],
        "repetition": [repetition(r, params.repetition_n) for r in resp],
    }, index=gens.index)


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


def cross_scores(gens: pd.DataFrame, reward_functions: Mapping[str, str | Path], data: DataParams,
                 device: str = "cpu") -> pd.DataFrame:
    """r̂ of every response under every (non-constant) reward function: one ``reward: <name>`` column each.

    ``reward_functions``: name -> saved folder (``experiments.saved_reward_functions``).
    """
    from geli_lib.reward_model import TrainedReward, predict_pairs

    pairs = reward_pairs(gens, data)
    out = pd.DataFrame(index=gens.index)
    for name, folder in reward_functions.items():
        trained = TrainedReward.load(folder)
        if trained.constant is not None:
            continue
        out[REWARD_PREFIX + name] = predict_pairs(trained, pairs, device=device)
    return out


def auto_eval(gens: pd.DataFrame, params: EvalParams, data: DataParams,
              reward_functions: Mapping[str, str | Path] | None = None,
              device: str = "cpu") -> pd.DataFrame:
    """``tables/auto_eval.csv``: one row per (corpus, seed, model, metric) with the value and its n."""
    per = pd.concat([response_scores(gens, params),
                     cross_scores(gens, reward_functions or {}, data, device)], axis=1)
    per["vader_positive"] = (per["vader_compound"] >= 0.05).astype(float)
    per["same_as_base"] = same_as_base(gens, params.base_model)
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


def auto_eval_table(rows: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Models × metrics, ``mean ± sd`` over seeds (sd with ddof 1; 0 for a single seed), per corpus."""
    g = rows.groupby(["corpus", "model", "metric"], sort=False)["value"]
    stats = g.agg(["mean", "std"]).fillna({"std": 0.0})
    cells = stats.apply(lambda s: "–" if math.isnan(s["mean"]) else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}",
                        axis=1)
    table = cells.unstack("metric")
    order = list(dict.fromkeys(rows["metric"]))
    return table[[m for m in order if m in table.columns]]
