"""Distillation (LLM-GELI eq. 5): the LLM's labels as training targets of a reward function."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import pandas as pd

from geli_lib.core.params import LLMParams
from geli_lib.corpus.schema import Corpus
from geli_lib.reward.experiments import MethodSpec
from geli_lib.reward.llm.backends import Backend
from geli_lib.reward.llm.decomposition import Decomposition, labels_for_pairs
from geli_lib.reward.reward_model import LLM_LABELS, make_train_data

# --------------------------------------------------------------------------- distillation (eq. 5)

#: Reward-table row of the r_θ distilled from each variant's labels (LLM-GELI Table 4's names).
DISTILLED = {"text": "LLM GELI: Language Only", "multimodal": "LLM GELI: Multimodal"}


def distilled_name(variant: str, backend: Backend) -> str:
    """The reward-table row of a distilled r_θ; a non-LLM decomposer says so in the name."""
    name = DISTILLED[variant]
    return name if backend.is_llm else f"{name} [{backend.name} decomposer, not an LLM]"


def distilled_spec(variant: str, backend: Backend) -> MethodSpec:
    """The reward function distilled from ``variant``'s labels: id ``llm_<variant>``, :func:`distilled_name`."""
    return MethodSpec(f"llm_{variant}", distilled_name(variant, backend), "llm")


def llm_conversations(convo_ids: Sequence[str], params: LLMParams) -> list[str]:
    """The conversations an LLM backend decomposes: the first ``max_conversations`` (0 = all), sorted."""
    ids = sorted(map(str, convo_ids))
    return ids[: params.max_conversations] if params.max_conversations else ids


def distillation_data(data: Any, labels: pd.DataFrame) -> Any:
    """``data`` (:class:`geli_lib.reward.experiments.RewardData`) with the LLM's labels as training targets.

    The labels join the LI labels under :data:`geli_lib.reward.reward_model.LLM_LABELS`,
    so method ``llm`` regresses r_θ on them (eq. 5); a turn the LLM left out
    counts as 0, only the turns of failed (or not decomposed) chunks are masked.
    """
    lab = {**data.labels, LLM_LABELS: labels_for_pairs(data.pairs, labels)}
    train = make_train_data(data.corpus, data.pairs, data.features, data.train.convo_ids, lab)
    return dataclasses.replace(data, labels=lab, train=train)


def unroll_table(decs: dict[str, Decomposition], corpus: Corpus, convo_id: str) -> pd.DataFrame:
    """Labels of one conversation in :func:`geli_lib.figures.unroll`'s long format (method = decomposition)."""
    t = corpus.turns[(corpus.turns["convo_id"] == convo_id) & corpus.turns["is_ai"]]
    base = t[["convo_id", "turn_idx", "utterance", "true_reward"]].rename(columns={"utterance": "response"})
    parts = []
    for name, d in decs.items():
        lab = d.labels[d.labels["convo_id"] == convo_id][["turn_idx", "label"]]
        parts.append(base.merge(lab, on="turn_idx", how="left").rename(columns={"label": "pred"}).assign(method=name))
    return pd.concat(parts, ignore_index=True)
