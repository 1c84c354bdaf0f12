"""The decomposition: a session's score split into per-turn labels that sum to it (LLM-GELI Sec. 4.1)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from geli_lib.core.io import progress_bar
from geli_lib.core.params import LLMParams
from geli_lib.reward.llm.backends import Backend
from geli_lib.reward.llm.cache import ResponseCache
from geli_lib.reward.llm.parsing import MalformedOutput, parse_scores, validate_scores
from geli_lib.reward.llm.prompt import Chunk, prompt_messages

#: Bump when the prompt text or the chunking changes (part of every cache key via the messages).
PROMPT_VERSION = 2


# --------------------------------------------------------------------------- decomposition


def sampling_params(chunk: Chunk, params: LLMParams, sample: int, attempt: int) -> dict[str, Any]:
    """Sampling of one request; the seed differs per sample (App. J) and per re-sampled attempt."""
    return {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": min(params.max_new_tokens, params.tokens_per_turn * len(chunk.turn_ids) + 32),
        "seed": params.seed + 1000 * sample + attempt,
        "prompt_version": PROMPT_VERSION,
    }


def decompose_chunk(
    chunk: Chunk, backend: Backend, params: LLMParams, cache: ResponseCache, sample: int = 0
) -> dict[str, Any]:
    """Decompose one chunk: cached or fresh answer, parse, validate; re-sample malformed answers.

    Returns the chunk's record (status ``ok`` or ``failed``, the labels of
    every turn, the annotated ids, the checks) — never raises for a bad
    answer; endpoint errors propagate. An answer is usable when it parses and
    gives at least one of the chunk's ids a valid value.
    """
    messages = prompt_messages(chunk)
    rec: dict[str, Any] = {
        "convo_id": chunk.convo_id,
        "chunk": chunk.index,
        "variant": chunk.variant,
        "sample": sample,
        "n_ai_turns": len(chunk.turn_ids),
        "share": chunk.share,
        "status": "failed",
        "attempts": 0,
        "from_cache": 0,
        "reason": "",
        "labels": {},
        "annotated": [],
        "n_annotated": 0,
        "unknown_ids": "",
        "n_invalid": 0,
        "raw_sum": math.nan,
        "deviation": math.nan,
        "rescaled": "none",
    }
    for attempt in range(params.output_retries + 1):
        sampling = sampling_params(chunk, params, sample, attempt)
        key = ResponseCache.key(backend.name, backend.model, messages, sampling)
        raw = cache.get(key) if backend.cacheable else None
        if raw is None:
            raw = backend.complete(chunk, messages, sampling)
            if backend.cacheable:
                cache.put(
                    key,
                    {
                        "backend": backend.name,
                        "model": backend.model,
                        "sampling": sampling,
                        "messages": messages,
                        "response": raw,
                        "created": time.time(),
                    },
                )
        else:
            rec["from_cache"] += 1
        rec["attempts"] = attempt + 1
        try:
            v = validate_scores(parse_scores(raw), chunk, params)
        except MalformedOutput as e:
            rec["reason"] = str(e)
            continue
        if not v.annotated:
            rec["reason"] = f"no valid AI-turn id (unknown: {v.unknown[:5]}, invalid: {v.invalid[:5]})"
            continue
        rec.update(
            status="ok",
            reason="",
            labels=v.labels,
            annotated=v.annotated,
            n_annotated=len(v.annotated),
            unknown_ids=" ".join(v.unknown),
            n_invalid=len(v.invalid),
            raw_sum=v.raw_sum,
            deviation=v.deviation,
            rescaled=v.rescaled,
        )
        break
    return rec


@dataclass
class Decomposition:
    """Labels per AI turn and one record per chunk, for one backend, variant and sample."""

    backend: str
    model: str
    labels: pd.DataFrame
    """convo_id, turn_idx, turn_id, chunk, label (0 = left out by the LLM; NaN only in a failed chunk),
    annotated (the LLM gave the turn a valid value)."""
    chunks: pd.DataFrame
    """Per chunk: status, attempts, from_cache, reason, n_annotated, unknown_ids, n_invalid, raw_sum, deviation, …"""

    def summary(self) -> dict[str, Any]:
        """Coverage, annotation, failures and the sum constraint, in one row.

        ``coverage``: turns with a usable label (those of parsed chunks);
        ``annotated``: turns the LLM gave a valid value; ``mean_abs_deviation``:
        mean |Σ answer − share| of the parsed chunks (the answer's own, before
        the rescaling); ``mean_abs_deviation_labels``: the same of the labels
        after it (≈ 0 under ``rescale: shift``).
        """
        c, lab = self.chunks, self.labels
        ok = c["status"] == "ok"
        dev_labels = math.nan
        if ok.any() and len(lab):
            sums = lab.groupby(["convo_id", "chunk"], sort=False)["label"].sum(min_count=1).rename("sum").reset_index()
            m = c.loc[ok, ["convo_id", "chunk", "share"]].merge(sums, on=["convo_id", "chunk"], how="left")
            dev_labels = float((m["sum"] - m["share"]).abs().mean())
        return {
            "backend": self.backend,
            "model": self.model,
            "chunks": len(c),
            "failed": int((~ok).sum()),
            "coverage": float(lab["label"].notna().mean()) if len(lab) else math.nan,
            "annotated": float(lab["annotated"].mean()) if len(lab) else math.nan,
            "mean_abs_deviation": float(c.loc[ok, "deviation"].abs().mean()) if ok.any() else math.nan,
            "mean_abs_deviation_labels": dev_labels,
            "unknown_ids": int(c["unknown_ids"].str.split().str.len().fillna(0).sum()),
            "from_cache": int(c["from_cache"].sum()),
        }


def decompose(
    chunks: Sequence[Chunk],
    backend: Backend,
    params: LLMParams,
    cache: ResponseCache | None = None,
    sample: int = 0,
    progress: bool = True,
) -> Decomposition:
    """Decompose every chunk (``params.concurrency`` at once for the ``openai`` backend)."""
    cache = cache or ResponseCache()
    workers = params.concurrency if backend.name == "openai" else 1
    bar = progress_bar(len(chunks), f"decompose ({backend.name})", progress, unit="chunk")

    def one(ch: Chunk) -> dict[str, Any]:
        rec = decompose_chunk(ch, backend, params, cache, sample)
        bar.update(1)
        return rec

    try:
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                recs = list(pool.map(one, chunks))
        else:
            recs = [one(ch) for ch in chunks]
    finally:
        bar.close()
    rows = []
    for ch, rec in zip(chunks, recs):
        ok, annotated = rec["status"] == "ok", set(rec["annotated"])
        rows += [
            {
                "convo_id": ch.convo_id,
                "turn_idx": t,
                "turn_id": i,
                "chunk": ch.index,
                "label": rec["labels"].get(i, 0.0) if ok else math.nan,
                "annotated": ok and i in annotated,
            }
            for t, i in zip(ch.turn_idx, ch.turn_ids)
        ]
    labels = pd.DataFrame(rows, columns=["convo_id", "turn_idx", "turn_id", "chunk", "label", "annotated"])
    labels["annotated"] = labels["annotated"].astype(bool)
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("labels", "annotated")} for r in recs])
    return Decomposition(backend.name, backend.model, labels, table)


def labels_for_pairs(pairs: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """The labels aligned with ``pairs`` rows: each chunk's sum to its share of R (with ``rescale``), 0 for
    a turn the LLM left out, NaN where a turn was not decomposed or its chunk failed."""
    m = (
        pairs[["convo_id", "turn_idx"]]
        .astype({"convo_id": str})
        .merge(
            labels[["convo_id", "turn_idx", "label"]].astype({"convo_id": str}), on=["convo_id", "turn_idx"], how="left"
        )
    )
    return m["label"].to_numpy(dtype=float)
