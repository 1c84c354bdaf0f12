"""LLM-GELI's prompt: its errors, the transcript in chunks, the listener's cues, the messages."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from geli_lib.core.params import LLMParams
from geli_lib.corpus.schema import Corpus
from geli_lib.listener.features import describe_listener, turn_listener_summary, vader_compound

VARIANTS = ("text", "multimodal")


PROMPT_MULTIMODAL = (
    "You are given a final scalar score for Speaker A, indicating how much Speaker B experienced "
    "positive feelings (e.g., good, pleasant, happy) or negative feelings (e.g., bad, unpleasant, "
    "unhappy) during the conversation.\n\n"
    "Final score: {score}\n\n"
    "Below, you are given the full conversation with aligned multimodal conversational features. "
    "Consider the utterances and the features, focusing on the utterances of Speaker A and the "
    "reactions of Speaker B. Redistribute the score across each of Speaker A's utterances. Whenever "
    "you identify a salient, important utterance that contributed positively or negatively to the "
    "final reward score, assign a numerical value (which may be positive, negative, or zero) "
    "representing its contribution. All of the assigned scores must sum up to: {score}."
)


PROMPT_TEXT = PROMPT_MULTIMODAL.replace(" with aligned multimodal conversational features", "").replace(
    "Consider the utterances and the features,", "Consider the utterances,"
)


FORMAT_INSTRUCTION = (
    "Answer with one JSON object only, mapping the id in brackets of each of Speaker A's utterances "
    "you score to its number, for example {example}. Utterances you leave out get 0."
)


PART_NOTE = "This is part {k} of {n} of the conversation; the final score above is this part's share."


CUE_PREFIX = "    (Speaker B's reaction: "


class LLMError(RuntimeError):
    """A decomposition could not run; the message says why and what to do."""


class LLMInputError(LLMError, ValueError):
    """Bad input to the prompt builder (empty conversation, score outside the declared range)."""


# --------------------------------------------------------------------------- prompt


@dataclass(frozen=True)
class Chunk:
    """One request: a run of consecutive turns of one conversation and its share of the score."""

    convo_id: str
    index: int
    """0-based position of the chunk in its conversation."""
    n_chunks: int
    score: float
    """R_GE of the whole conversation (0-100)."""
    share: float
    """This chunk's part of R_GE: score × (its AI turns) / (all AI turns)."""
    turn_ids: tuple[str, ...]
    """Ids ``A<turn_idx>`` of the AI turns in the chunk, in order."""
    turn_idx: tuple[int, ...]
    transcript: str
    variant: str
    """``text`` or ``multimodal``."""
    affect: tuple[float, ...] = ()
    """The listener's affect per AI turn (NaN = none): the reference decomposer's only input."""


def turn_id(turn_idx: int) -> str:
    """The stable id of an AI turn in a prompt: ``A<turn_idx>``."""
    return f"A{int(turn_idx)}"


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: max(limit - 4, 0)].rstrip() + " […]"


def transcript_lines(
    turns: pd.DataFrame, cues: dict[int, str] | None, max_utterance_chars: int
) -> list[tuple[int | None, str]]:
    """(AI turn_idx or None, text) per turn: ``[A5] Speaker A: …`` / ``Speaker B: …``.

    With ``cues`` (turn_idx → descriptor), the listener's cue follows each AI
    line it describes, on the same entry (a turn and its cue are never split).
    """
    out: list[tuple[int | None, str]] = []
    for t in turns.itertuples(index=False):
        text = _clip(t.utterance, max_utterance_chars)
        if t.is_ai:
            line = f"[{turn_id(t.turn_idx)}] Speaker A: {text}"
            cue = (cues or {}).get(int(t.turn_idx), "")
            if cue:
                line += f"\n{CUE_PREFIX}{cue})"
            out.append((int(t.turn_idx), line))
        else:
            out.append((None, f"Speaker B: {text}"))
    return out


def _pack(lines: list[tuple[int | None, str]], budget: int) -> list[list[tuple[int | None, str]]]:
    """Consecutive groups of lines of at most ``budget`` characters (a longer line stands alone)."""
    groups: list[list[tuple[int | None, str]]] = [[]]
    size = 0
    for item in lines:
        n = len(item[1]) + 1
        if groups[-1] and size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += n
    return groups


def conversation_chunks(
    convo_id: str,
    turns: pd.DataFrame,
    score: float,
    params: LLMParams,
    variant: str = "text",
    cues: dict[int, str] | None = None,
    affect: dict[int, float] | None = None,
) -> list[Chunk]:
    """The chunks of one conversation (see the module docstring for the rule and the shares).

    Raises :class:`LLMInputError` for a conversation without an AI turn, a
    missing score, or a score outside ``params.score_range``.
    """
    if variant not in VARIANTS:
        raise LLMInputError(f"variant {variant!r} unknown: choose one of {VARIANTS}")
    lo, hi = params.score_range
    if not (isinstance(score, (int, float)) and math.isfinite(score)) or not lo <= score <= hi:
        raise LLMInputError(
            f"conversation {convo_id}: session score {score!r} is outside the declared "
            f"range [{lo:g}, {hi:g}] (llm.score_range)"
        )
    n_ai = int(turns["is_ai"].sum()) if len(turns) else 0
    if n_ai == 0:
        raise LLMInputError(f"conversation {convo_id}: {len(turns)} turn(s) and no AI turn: nothing to score")
    turns = turns.sort_values("turn_idx", kind="stable")
    lines = transcript_lines(turns, cues if variant == "multimodal" else None, params.max_utterance_chars)
    groups = [g for g in _pack(lines, params.chunk_chars) if any(i is not None for i, _ in g)]
    # A group of listener lines only (at the end of a long conversation) has nothing to score.
    chunks = []
    for k, g in enumerate(groups):
        idx = tuple(i for i, _ in g if i is not None)
        chunks.append(
            Chunk(
                convo_id=str(convo_id),
                index=k,
                n_chunks=len(groups),
                score=float(score),
                share=float(score) * len(idx) / n_ai,
                turn_ids=tuple(turn_id(i) for i in idx),
                turn_idx=idx,
                transcript="\n".join(text for _, text in g),
                variant=variant,
                affect=tuple(float((affect or {}).get(i, math.nan)) for i in idx),
            )
        )
    return chunks


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def prompt_messages(chunk: Chunk) -> list[dict[str, str]]:
    """The chat messages of one chunk: the Sec. 4.1 prompt, the format instruction, the transcript."""
    head = (PROMPT_MULTIMODAL if chunk.variant == "multimodal" else PROMPT_TEXT).format(score=_fmt(chunk.share))
    ex = chunk.turn_ids[:2]
    example = json.dumps({i: v for i, v in zip(ex, (5, -2))})
    parts = [head, FORMAT_INSTRUCTION.format(example=example)]
    if chunk.n_chunks > 1:
        parts.append(PART_NOTE.format(k=chunk.index + 1, n=chunk.n_chunks))
    parts.append(chunk.transcript)
    return [{"role": "user", "content": "\n\n".join(parts)}]


def listener_cues(corpus: Corpus) -> dict[str, dict[int, str]]:
    """convo_id → {AI turn_idx → the listener's cues as text} (issue 4's descriptors; empty without video)."""
    if corpus.frames.empty:
        return {}
    summary = turn_listener_summary(corpus)
    text = describe_listener(summary)
    out: dict[str, dict[int, str]] = {}
    for c, t, d in zip(summary["convo_id"], summary["turn_idx"], text):
        out.setdefault(str(c), {})[int(t)] = str(d)
    return out


def listener_affect(corpus: Corpus) -> dict[str, dict[int, float]]:
    """convo_id → {AI turn_idx → affect in [0, 1]}: the reference decomposer's input.

    The listener's mean happiness probability during the turn when the corpus
    has video; otherwise (ESConv, SODA) VADER's compound score of the AI
    utterance mapped to [0, 1], a text-only stand-in.
    """
    out: dict[str, dict[int, float]] = {}
    if not corpus.frames.empty:
        s = turn_listener_summary(corpus)
        vals = s["happiness_mean"].to_numpy(float)
        keys = zip(s["convo_id"].astype(str), s["turn_idx"].astype(int))
    else:
        ai = corpus.turns[corpus.turns["is_ai"]]
        vals = (vader_compound(ai["utterance"].tolist()) + 1) / 2
        keys = zip(ai["convo_id"].astype(str), ai["turn_idx"].astype(int))
    for (c, t), v in zip(keys, vals):
        out.setdefault(c, {})[t] = float(v)
    return out


def build_chunks(
    corpus: Corpus,
    convo_ids: Sequence[str],
    params: LLMParams,
    variant: str = "text",
    cues: dict[str, dict[int, str]] | None = None,
) -> list[Chunk]:
    """The chunks of ``convo_ids`` (in the given order) for one variant.

    The multimodal variant needs ``cues`` (:func:`listener_cues`); a corpus
    without video has none and is refused with a message naming it.
    """
    if variant == "multimodal" and not cues:
        raise LLMInputError(f"corpus {corpus.name!r} has no listener video: no multimodal variant")
    conv = corpus.conversations.set_index("convo_id")
    by_conv = {str(c): g for c, g in corpus.turns.groupby("convo_id", sort=False)}
    affect = listener_affect(corpus)
    out: list[Chunk] = []
    for c in map(str, convo_ids):
        if c not in conv.index:
            raise LLMInputError(f"conversation {c} is not in corpus {corpus.name!r}")
        turns = by_conv.get(c, corpus.turns.iloc[:0])
        out += conversation_chunks(
            c, turns, float(conv.at[c, "score"]), params, variant, (cues or {}).get(c), affect.get(c)
        )
    return out
