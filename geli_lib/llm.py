"""LLM-GELI (seed 003, Sec. 4): an LLM redistributes the session score over the AI's utterances.

The LLM reads the transcript (and, in the multimodal variant, the listener's
cues as text after each AI utterance) and the session score R_GE, and returns
a score per AI utterance (Sec. 4.1, eqs. 2-4); a text-only r_θ is then
distilled from those labels by MSE (eq. 5, method ``llm`` of
:mod:`geli_lib.reward_model`). This module is the decomposition half:

**Prompt** (:func:`prompt_messages`). The paper's Sec. 4.1 prompt, word for
word, with the session score, then the transcript. Speaker A is the AI (the
utterances to score), Speaker B the listener whose survey is R_GE. Every AI
line carries a stable id ``A<turn_idx>`` (its index in the conversation), so an
answer can be checked turn by turn; the listener's lines carry no id. We add
one instruction the paper leaves implicit: answer with a JSON object mapping
ids to numbers, an utterance left out counting as 0. The text-only variant drops the paper's words about the
features ("with aligned multimodal conversational features", "and the
features"), nothing else.

**Chunks** (:func:`build_chunks`). A conversation whose transcript exceeds
``chunk_chars`` characters is cut, between turns and never inside one, into
consecutive chunks that each fit. Each chunk is one request and gets its
*share* of the score, R · (its AI turns) / (all AI turns): the share an even
split would give it, so the parts add up to R and no chunk is told the whole
conversation's score for a fraction of it. The LLM redistributes the share
within the chunk; the prompt says "part k of n". A single utterance longer than
``max_utterance_chars`` is cut (marked ``[…]``).

**Backends** (one interface, :class:`Backend`): ``openai`` (any
OpenAI-compatible chat-completions endpoint through the ``openai`` client;
base URL and model from parameters or ``GELI_LLM_BASE_URL`` /
``GELI_LLM_MODEL``, the key only from the environment variable named by
``api_key_env``, never stored), ``local`` (SmolLM2-135M-Instruct through
transformers, offline; its decoding is constrained by lm-format-enforcer to
the JSON object ``{"A1": <number>, "A3": <number>, …}`` with exactly the
chunk's ids in order and bounded numbers, :func:`answer_pattern`, so every
answer parses and scores every turn) and ``reference`` (:class:`ReferenceDecomposer`, a
deterministic split of the score by the listener's affect: **not an LLM**, a
yardstick for the LLMs).

**Answers** (:func:`parse_scores`, :func:`validate_scores`). Parsed tolerantly
(code fences, text around the object, single quotes, trailing commas,
unquoted ids, ``id: value`` lines); ids must be AI turns of the chunk (others
are reported as unknown); values outside ±(score range width) are reported
and dropped. The prompt asks for the *salient* utterances, so in a chunk
whose answer parsed an AI turn without a (valid) value gets the label **0**
and ``annotated = False``: "no annotation" is App. J's third consistency
class, not a training mask. Only the turns of a **failed** chunk (no usable
answer after ``output_retries`` re-samples, each with a new seed) are NaN,
masked out of eq. 5; a failed chunk never stops a run. The sum constraint
(eq. 4): each chunk records the answer's deviation Σ values − share, and
``rescale`` (default ``shift``: the same amount added to each annotated turn;
or ``scale``; or ``none``) makes the chunk's labels sum to its share.

**Cache** (:class:`ResponseCache`). Every raw answer is stored under
``cache_dir('llm')`` keyed by (backend, model, messages, sampling
parameters incl. the seed), before it is parsed; the local backend's model id
names its decoding (free after a prefill, or constrained with the grammar's
version and number pattern), so an unconstrained answer is never reused as a
constrained one: a re-run, or a run resumed
after a crash, never pays for a call twice. Endpoint errors are retried with
exponential backoff, then raised with what to do (finished chunks stay
cached); at most ``concurrency`` requests run at once.

**Consistency** (:func:`consistency`, App. J): two samples at temperature 1;
agreement over the classes positive / zero-or-negative / no annotation, the
last from the ``annotated`` flag (what the LLM actually scored), not from the
label.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

from geli_lib.io import atomic_write, cache_dir, content_key, progress_bar
from geli_lib.params import LLMParams
from geli_lib.schema import Corpus

#: Bump when the prompt text or the chunking changes (part of every cache key via the messages).
PROMPT_VERSION = 2
VARIANTS = ("text", "multimodal")
#: The classes of App. J.
CLASSES = ("positive", "zero_or_negative", "no_annotation")

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


class LLMEndpointError(LLMError):
    """The endpoint refused, timed out or returned garbage after the retries."""


class MalformedOutput(ValueError):
    """An answer that holds no readable id → score mapping."""


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
    from geli_lib.features import describe_listener, turn_listener_summary

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
        from geli_lib.features import turn_listener_summary

        s = turn_listener_summary(corpus)
        vals = s["happiness_mean"].to_numpy(float)
        keys = zip(s["convo_id"].astype(str), s["turn_idx"].astype(int))
    else:
        from geli_lib.features import vader_compound

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


# --------------------------------------------------------------------------- parsing


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.S)
#: Longest answer the parser reads. Far above what any request allows (``max_new_tokens``
#: tokens), so a longer one is garbage or runaway output, rejected before any work.
MAX_ANSWER_CHARS = 100_000
#: ``{`` / ``[`` positions the parser tries to decode JSON from: decoding from every one of
#: them is quadratic in the answer's length (minutes for 1 MB of brackets).
MAX_DECODE_STARTS = 64
_PAIR = re.compile(r"[\"']?\[?\b([Aa]\d+)\]?[\"']?\s*[:=]\s*[\"']?(-?\d+(?:\.\d+)?)")


def _repair(text: str) -> str:
    """Common near-JSON slips: single quotes, unquoted ids, trailing commas, Python literals."""
    t = re.sub(r"'([^'\n]*)'", r'"\1"', text)
    t = re.sub(r"([{,]\s*)\[?([Aa]\d+)\]?(\s*:)", r'\1"\2"\3', t)
    t = re.sub(r",\s*([}\]])", r"\1", t)
    return t.replace("None", "null").replace("True", "true").replace("False", "false")


def _objects(text: str) -> list[Any]:
    """Every JSON value that starts at a ``{`` or ``[`` of ``text`` and decodes (as is or repaired)."""
    dec = json.JSONDecoder()
    found = []
    for src in (text, _repair(text)):
        for m in itertools.islice(re.finditer(r"[{\[]", src), MAX_DECODE_STARTS):
            try:
                obj, _ = dec.raw_decode(src, m.start())
            except (ValueError, RecursionError):  # RecursionError: brackets nested ~1000 deep
                continue
            found.append(obj)
        if found:
            break
    return found


def _number(v: Any) -> Any:
    """A value as given, unwrapping ``{"score": v}``-like objects."""
    if isinstance(v, dict):
        for k in ("score", "value", "reward", "contribution"):
            if k in v:
                return v[k]
    return v


def _mapping(obj: Any) -> dict[str, Any] | None:
    """An id → value mapping from a decoded object (a dict, or a list of {id, score} records)."""
    if isinstance(obj, dict):
        if any(re.fullmatch(r"\[?[Aa]?\d+\]?", str(k).strip()) for k in obj):
            return {str(k): _number(v) for k, v in obj.items()}
        for v in obj.values():  # {"scores": {...}} and similar wrappers
            inner = _mapping(v)
            if inner:
                return inner
        return None
    if isinstance(obj, list):
        out = {}
        for item in obj:
            if isinstance(item, dict):
                k = item.get("id", item.get("turn", item.get("utterance_id")))
                if k is not None:
                    out[str(k)] = _number(item)
        return out or None
    return None


def parse_scores(text: str) -> dict[str, Any]:
    """The id → value mapping in an LLM answer; :class:`MalformedOutput` when there is none.

    Tolerates code fences, prose around the object, near-JSON (see
    :func:`_repair`), wrappers like ``{"scores": {...}}``, lists of
    ``{"id", "score"}`` records and, as a last resort, ``A5: 3`` pairs. In an
    answer cut off inside its object (``{"A1": 20, "A3": 3``) the last number
    may be cut too (30?), so that pair is dropped. Values are returned as
    given; :func:`validate_scores` judges them. Whatever the answer, the only
    exception is :class:`MalformedOutput`, and the work is bounded
    (:data:`MAX_ANSWER_CHARS`, :data:`MAX_DECODE_STARTS`).
    """
    if not isinstance(text, str) or not text.strip():
        raise MalformedOutput("empty answer")
    if len(text) > MAX_ANSWER_CHARS:
        raise MalformedOutput(
            f"answer of {len(text)} characters, longer than any answer a request "
            f"allows ({MAX_ANSWER_CHARS}): runaway output (starts {text.strip()[:40]!r})"
        )
    blocks = _FENCE.findall(text) + [text]
    try:
        for block in blocks:
            for obj in _objects(block):
                m = _mapping(obj)
                if m:
                    return m
    except RecursionError:  # a decoded object nested too deep for _mapping
        raise MalformedOutput("answer nested too deeply to hold an id → score mapping") from None
    pairs = list(_PAIR.finditer(text))
    if pairs and text.rfind("{") > text.rfind("}") and not text[pairs[-1].end() :].strip():
        pairs = pairs[:-1]  # cut off inside the object, right after this number
    if pairs:
        return {m.group(1): float(m.group(2)) for m in pairs}
    raise MalformedOutput(f"no id → score mapping in the answer (starts {text.strip()[:80]!r})")


@dataclass
class Validated:
    """An answer checked against its chunk."""

    labels: dict[str, float]
    """Every AI-turn id of the chunk → its label: the answer's value (after the rescaling), 0 where the
    answer gave none or an invalid one. Empty when no id of the chunk got a valid value."""
    annotated: list[str] = field(default_factory=list)
    """The ids with a valid value in the answer, in the chunk's order (App. J: the others are "no annotation")."""
    unknown: list[str] = field(default_factory=list)
    """Ids that are not AI turns of the chunk."""
    invalid: list[str] = field(default_factory=list)
    """Known ids whose value is not a finite number (JSON true/false included), or lies outside ±(score range width)."""
    raw_sum: float = 0.0
    """Σ of the valid values before rescaling."""
    deviation: float = 0.0
    """raw_sum − share: how far the answer is from the soft constraint (eq. 4)."""
    rescaled: str = "none"
    """How the annotated labels were made to sum to the share: none, scale or shift."""


def _norm_id(key: str, known: set[str]) -> str:
    k = str(key).strip().strip("[]\"' ").upper()
    if k.isdigit() and f"A{int(k)}" in known:
        k = f"A{int(k)}"
    return k


def validate_scores(scores: dict[str, Any], chunk: Chunk, params: LLMParams) -> Validated:
    """Keep the values of the chunk's AI ids; report unknown ids and bad values; apply ``rescale``.

    Turns of the chunk without a valid value get 0 (and are not ``annotated``);
    ``rescale`` moves only the annotated values, so a left-out turn stays at 0
    and the chunk's labels sum to its share.
    """
    known = set(chunk.turn_ids)
    bound = params.score_range[1] - params.score_range[0]
    labels: dict[str, float] = {}
    unknown: list[str] = []
    invalid: list[str] = []
    for k, v in scores.items():
        i = _norm_id(k, known)
        if i not in known:
            unknown.append(str(k))
            continue
        if isinstance(v, bool):  # JSON true/false: not a score (float() would read 1.0/0.0)
            invalid.append(i)
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            invalid.append(i)
            continue
        if not math.isfinite(x) or abs(x) > bound:
            invalid.append(i)
            continue
        labels[i] = x
    annotated = [i for i in chunk.turn_ids if i in labels]
    invalid = [i for i in invalid if i not in labels]  # a repeated id with one valid value is annotated
    raw = float(sum(labels.values()))
    out = Validated({}, annotated, unknown, invalid, raw, raw - chunk.share)
    if not labels:
        return out
    if params.rescale != "none" and abs(out.deviation) > 1e-9:
        scalable = abs(raw) > 1e-6 * max(1.0, abs(chunk.share)) and raw * chunk.share > 0
        if params.rescale == "scale" and scalable:
            labels = {k: v * chunk.share / raw for k, v in labels.items()}
            out.rescaled = "scale"
        else:  # shift: the only repair when the sum is ~0 or of the wrong sign
            d = out.deviation / len(labels)
            labels = {k: v - d for k, v in labels.items()}
            out.rescaled = "shift"
    out.labels = {i: labels.get(i, 0.0) for i in chunk.turn_ids}
    return out


# --------------------------------------------------------------------------- cache


class ResponseCache:
    """Raw answers on disk, one JSON file per key (atomic writes), with hit / miss counters."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else cache_dir("llm")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(backend: str, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        """The content key of a request: (backend, model, messages, sampling parameters)."""
        return content_key(backend, model, messages, sampling, length=32)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(path.read_text(encoding="utf-8"))["response"]

    def put(self, key: str, record: dict[str, Any]) -> None:
        with atomic_write(self._path(key)) as tmp:
            tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")


# --------------------------------------------------------------------------- backends


class Backend(Protocol):
    """What a decomposer is: a name, a model id (both in the cache key), and one call."""

    name: str
    model: str
    is_llm: bool
    cacheable: bool

    def complete(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        """The raw answer text to ``messages`` for ``chunk`` under ``sampling``."""
        ...


class ReferenceDecomposer:
    """NOT an LLM: splits each chunk's share in proportion to the listener's affect.

    r_t = share · a_t / Σ a (a_t: :func:`listener_affect`, NaN → the chunk's
    mean, all NaN → an even split). Deterministic; answers in the same JSON the
    LLMs are asked for, so it runs through the same parsing and validation.
    It ignores the prompt: a yardstick for what the listener's face alone gives.
    """

    name = "reference"
    model = "listener-affect-split-v1"
    is_llm = False
    cacheable = False

    def complete(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        a = np.array(chunk.affect if chunk.affect else [math.nan] * len(chunk.turn_ids), dtype=float)
        a = np.where(np.isfinite(a), a, np.nanmean(a) if np.isfinite(a).any() else 1.0)
        a = np.clip(a, 0.0, None) + 1e-3  # every turn keeps a little credit
        r = chunk.share * a / a.sum()
        return json.dumps({i: round(float(v), 4) for i, v in zip(chunk.turn_ids, r)})


#: Version of the local backend's answer grammar (:func:`answer_pattern`); part of its model id, so of the cache key.
GRAMMAR_VERSION = 1
#: Decimals a constrained number may carry.
NUMBER_DECIMALS = 2


def _int_below(n: int) -> list[str]:
    """Alternatives of a regular expression for the integers 0 … n − 1 (no leading zeros), n ≥ 1."""
    s, k = str(n), len(str(n))
    alts = ["0|[1-9]" + (r"[0-9]{0,%d}" % (k - 2) if k > 2 else "")] if k > 1 else []
    for i, c in enumerate(s):
        lo, d, rest = (1 if i == 0 and k > 1 else 0), int(c), k - i - 1
        if d > lo:
            alts.append(
                s[:i]
                + (f"[{lo}-{d - 1}]" if d - 1 > lo else str(lo) if d - 1 == lo else "")
                + (r"[0-9]{%d}" % rest if rest else "")
            )
    return alts


def number_pattern(bound: float) -> str:
    """A JSON number x with |x| ≤ ⌊``bound``⌋ (validation keeps |x| ≤ bound, so a constrained value is
    never dropped): an optional minus, an integer part without leading zeros, at most
    :data:`NUMBER_DECIMALS` decimals. Bounded in length, so a constrained answer always ends."""
    n = int(math.floor(abs(bound)))
    frac = r"(\.[0-9]{1,%d})?" % NUMBER_DECIMALS
    below = _int_below(n) if n >= 1 else []
    top = f"{n}" + r"(\.0{1,%d})?" % NUMBER_DECIMALS
    return "-?(" + (f"({'|'.join(below)}){frac}|" if below else "") + top + ")"


def _number_max_chars(bound: float) -> int:
    return 1 + len(str(int(math.floor(abs(bound))))) + 1 + NUMBER_DECIMALS


def answer_pattern(chunk: Chunk, bound: float) -> str:
    """The regular expression of a constrained answer: ``{"A1": <number>, "A3": <number>, …}``.

    Exactly the chunk's ids, in order, each once, with a :func:`number_pattern`
    value; JSON with fixed separators (``", "`` and ``": "``): the fixed JSON
    schema {required properties = the ids, in order; values: numbers}.
    """
    num = number_pattern(bound)
    items = ", ".join(r'"%s": %s' % (re.escape(i), num) for i in chunk.turn_ids)
    return r"\{" + items + r"\}"


def answer_max_chars(chunk: Chunk, bound: float) -> int:
    """The longest string :func:`answer_pattern` admits (a token is at least one character)."""
    num = _number_max_chars(bound)
    return 2 + sum(len(f'"{i}": ') + num for i in chunk.turn_ids) + 2 * (len(chunk.turn_ids) - 1)


def _lmfe_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm-format-enforcer")
    except PackageNotFoundError:
        raise LLMError(
            "the local backend's constrained decoding needs lm-format-enforcer (requirements.txt: "
            "`.venv/bin/pip install -r requirements.txt`), or set llm.constrained: false"
        ) from None


def lmfe_tokenizer_data(tok: Any) -> Any:
    """lm-format-enforcer's per-tokenizer data for a transformers tokenizer (built once per backend, ~1.5 s).

    The same table as ``lmformatenforcer.integrations.transformers.build_token_enforcer_tokenizer_data``,
    whose module cannot be imported under transformers 5 (it imports ``transformers.tokenization_utils``,
    gone in v5): (id, text with its leading space, starts a word) per regular token.
    """
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

    vocab = len(tok)
    zero = tok.encode("0", add_special_tokens=False)[-1]
    special = set(tok.all_special_ids)
    regular = []
    for i in range(vocab):
        if i in special:
            continue
        after_zero = tok.decode([zero, i])[1:]  # decoded after "0" to keep a word's leading space
        regular.append((i, after_zero, len(after_zero) > len(tok.decode([i]))))
    return TokenEnforcerTokenizerData(
        regular, lambda ids: tok.decode(ids).rstrip("\ufffd"), tok.eos_token_id, False, vocab
    )


class LocalBackend:
    """SmolLM2-135M-Instruct through transformers, offline (loaded at the first call, not on cache hits).

    ``constrained`` (default): decoding is masked at every step by
    lm-format-enforcer to :func:`answer_pattern`, so the answer is the JSON
    object of the chunk's ids and numbers, always complete (the budget is
    :func:`answer_max_chars`); it ends with the end-of-sequence token after the
    ``}``. Otherwise (the old path): free decoding after a ``{"<first id>":``
    prefill, stopped at the first ``}``. The model id names the mode, the
    grammar version, lm-format-enforcer's version and the number pattern, so
    cached answers of one mode are never served to the other.
    """

    name = "local"
    is_llm = True
    cacheable = True

    def __init__(self, device: str = "cpu", threads: int = 1, constrained: bool = True, bound: float = 100.0):
        from geli_lib.models import MARKER, smollm2_path

        self.path = smollm2_path()
        marker = json.loads((self.path / MARKER).read_text())
        ident = {k: marker.get(k) for k in ("format_version", "source", "source_bytes", "pad_token")}
        base = f"smollm2-135m-instruct-{content_key(ident, length=8)}"
        self.constrained, self.bound = bool(constrained), float(bound)
        if self.constrained:
            grammar = {"grammar": GRAMMAR_VERSION, "number": number_pattern(self.bound), "lmfe": _lmfe_version()}
            self.model = f"{base}-json-constrained-{content_key(grammar, length=8)}"
        else:
            self.model = f"{base}-json-prefill"
        self.device, self.threads = device, threads
        self._lm: Any = None
        self._tok: Any = None
        self._lmfe: Any = None
        self.calls = 0

    def _load(self) -> None:
        from transformers.utils import logging as hf_logging

        from geli_lib.io import progress_enabled
        from geli_lib.models import load_policy

        if not progress_enabled():  # no weight-loading bar in executed notebooks (GELI_PROGRESS=0)
            hf_logging.disable_progress_bar()
        self._lm, self._tok = load_policy(self.device)
        if self.constrained:
            self._lmfe = lmfe_tokenizer_data(self._tok)

    def complete(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        import torch

        if self._lm is None:
            self._load()
        kw: dict[str, Any]
        if self.constrained:
            from lmformatenforcer import RegexParser, TokenEnforcer

            prefill = ""
            enforcer = TokenEnforcer(self._lmfe, RegexParser(answer_pattern(chunk, self.bound)))
            kw = {
                "prefix_allowed_tokens_fn": lambda _b, ids: enforcer.get_allowed_tokens(ids.tolist()).allowed_tokens,
                "max_new_tokens": answer_max_chars(chunk, self.bound) + 1,
            }
        else:
            # JSON mode for a local model: the answer is pre-filled with '{"<first id>":' and stops at '}'.
            # Without it SmolLM2-135M answers with prose (tests/data/llm_outputs/ holds such answers).
            prefill = '{"%s":' % chunk.turn_ids[0]
            kw = {"max_new_tokens": int(sampling["max_tokens"]), "stop_strings": ["}"], "tokenizer": self._tok}
        text = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefill
        ids = self._tok(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        greedy = sampling["temperature"] <= 0
        torch.manual_seed(int(sampling["seed"]))
        kw.update(
            {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
            if greedy
            else {"do_sample": True, "temperature": sampling["temperature"], "top_p": sampling["top_p"]}
        )
        was = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                out = self._lm.generate(**ids, pad_token_id=self._tok.pad_token_id, **kw)
        finally:
            torch.set_num_threads(was)
        self.calls += 1
        return prefill + self._tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint through the ``openai`` client.

    The key is read from the environment variable ``params.api_key_env`` and
    kept only inside the client. Transient failures (connection refused,
    timeout, HTTP 429 / 5xx, an unreadable body) are retried ``params.retries``
    times with exponential backoff; other HTTP errors (401, 404: e.g. a model
    name that is not the served one) fail at once. Either way the error is
    :class:`LLMEndpointError` naming the endpoint and the cause.
    """

    name = "openai"
    is_llm = True
    cacheable = True

    def __init__(self, params: LLMParams):
        import openai

        self.base_url = params.base_url or os.environ.get("GELI_LLM_BASE_URL", "")
        self.model = params.model or os.environ.get("GELI_LLM_MODEL", "")
        if not self.base_url or not self.model:
            raise LLMError(
                "backend 'openai' needs a base URL and a model: set llm.base_url and llm.model "
                "or the environment variables GELI_LLM_BASE_URL and GELI_LLM_MODEL"
            )
        key = os.environ.get(params.api_key_env, "")
        if not key:
            raise LLMError(
                f"backend 'openai' needs an API key in the environment variable "
                f"{params.api_key_env!r} (llm.api_key_env); keys are never read from parameter files"
            )
        self.retries, self.backoff = params.retries, params.backoff_s
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=params.timeout_s, max_retries=0)
        self.calls = 0

    def complete(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        import openai

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self.calls += 1
                r = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=sampling["temperature"],
                    top_p=sampling["top_p"],
                    max_tokens=int(sampling["max_tokens"]),
                    seed=int(sampling["seed"]),
                )
                if not hasattr(r, "choices") or not r.choices:
                    raise LLMEndpointError(f"unreadable response body: {str(r)[:120]!r}")
                msg = r.choices[0].message
                return msg.content if msg.content is not None else (getattr(msg, "refusal", None) or "")
            except openai.APIStatusError as e:
                if e.status_code != 429 and e.status_code < 500:
                    raise LLMEndpointError(
                        f"{self.base_url}: HTTP {e.status_code} for model {self.model!r}: {_short(e)}"
                    ) from None
                last = e
            except (
                openai.APIConnectionError,
                openai.APIResponseValidationError,
                LLMEndpointError,
                ValueError,
            ) as e:  # APITimeoutError is an APIConnectionError
                last = e
        raise LLMEndpointError(
            f"{self.base_url}: {type(last).__name__}: {_short(last)} after {self.retries + 1} "
            "tries; finished chunks are cached, re-run to resume"
        )


def _short(e: Exception | None) -> str:
    return " ".join(str(e).split())[:200]


def make_backend(params: LLMParams, device: str = "cpu") -> Backend:
    """The backend named by ``params.backend``."""
    if params.backend == "reference":
        return ReferenceDecomposer()
    if params.backend == "local":
        return LocalBackend(device, params.threads, params.constrained, params.score_range[1] - params.score_range[0])
    return OpenAIBackend(params)


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


# --------------------------------------------------------------------------- quality and consistency


def quality(labels: pd.DataFrame, corpus: Corpus, reference: pd.DataFrame | None = None) -> dict[str, float]:
    """How a decomposition compares with the turn truth (planted reward, or ESConv's local feedback).

    Pooled Pearson / Spearman over the turns with a label (those of parsed
    chunks, left-out turns at 0) and the mean within-conversation Spearman
    (:func:`geli_lib.evaluation.within_spearman`), plus coverage (turns with a
    label) and the annotated fraction. With ``reference`` (another
    decomposition's labels, e.g. the reference decomposer's), the same two
    Spearmans against it: ``ref_spearman``, ``ref_spearman_within``.
    """
    from geli_lib.evaluation import pearson, spearman, truth_column, within_spearman

    t = corpus.turns[["convo_id", "turn_idx", "true_reward", "local_feedback"]].astype({"convo_id": str})
    m = labels.astype({"convo_id": str}).merge(t, on=["convo_id", "turn_idx"], how="left")
    out: dict[str, float] = {
        "turns": float(len(m)),
        "coverage": float(m["label"].notna().mean()) if len(m) else math.nan,
        "annotated": float(m["annotated"].mean()) if len(m) and "annotated" in m else math.nan,
    }
    ok = m["label"].notna().to_numpy()
    if reference is not None:
        r = reference[["convo_id", "turn_idx", "label"]].astype({"convo_id": str}).rename(columns={"label": "ref"})
        mr = m[["convo_id", "turn_idx", "label"]].merge(r, on=["convo_id", "turn_idx"], how="left")
        both = (mr["label"].notna() & mr["ref"].notna()).to_numpy()
        p, y = mr["label"].to_numpy(float)[both], mr["ref"].to_numpy(float)[both]
        out["ref_spearman"] = spearman(p, y) if both.any() else math.nan
        out["ref_spearman_within"] = (
            within_spearman(p, y, mr["convo_id"].to_numpy()[both])["gt_spearman_within"] if both.any() else math.nan
        )
    col = truth_column(m)
    if col is None or not ok.any():
        return {**out, "gt_pearson": math.nan, "gt_spearman": math.nan, "gt_spearman_within": math.nan}
    p, y = m["label"].to_numpy(float)[ok], m[col].to_numpy(float)[ok]
    fin = np.isfinite(y)
    w = within_spearman(p, y, m["convo_id"].to_numpy()[ok])
    return {
        **out,
        "gt_pearson": pearson(p[fin], y[fin]),
        "gt_spearman": spearman(p[fin], y[fin]),
        "gt_spearman_within": w["gt_spearman_within"],
    }


def label_classes(labels: pd.Series, annotated: pd.Series | None = None) -> pd.Series:
    """App. J classes: no_annotation (not ``annotated``, or a NaN label), else positive (> 0) or
    zero_or_negative (≤ 0). Without ``annotated``, a NaN label alone marks no annotation."""
    v = labels.to_numpy(float)
    none = np.isnan(v) if annotated is None else ~annotated.to_numpy(bool) | np.isnan(v)
    return pd.Series(np.where(none, CLASSES[2], np.where(v > 0, CLASSES[0], CLASSES[1])), index=labels.index)


def consistency(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per conversation, the share of AI turns whose App. J class agrees between two samples.

    The class comes from what the LLM annotated (the ``annotated`` column,
    when present), so a left-out turn (label 0) is "no annotation", not
    "zero or negative".
    """
    cols = ["convo_id", "turn_idx", "label"] + (["annotated"] if "annotated" in a and "annotated" in b else [])
    m = a[cols].merge(b[cols], on=["convo_id", "turn_idx"], suffixes=("_a", "_b"))
    ann = "annotated" in cols
    m["agree"] = (
        label_classes(m["label_a"], m["annotated_a"] if ann else None).to_numpy()
        == label_classes(m["label_b"], m["annotated_b"] if ann else None).to_numpy()
    )
    return m.groupby("convo_id", sort=True).agg(turns=("agree", "size"), agreement=("agree", "mean")).reset_index()


def decomposition_table(
    decs: dict[str, Decomposition], corpus: Corpus, reference: Decomposition | None = None
) -> pd.DataFrame:
    """One row per named decomposition: :meth:`Decomposition.summary` and :func:`quality` (against
    ``reference``'s labels too, when given)."""
    ref = reference.labels if reference is not None else None
    rows = [{"decomposition": name, **d.summary(), **quality(d.labels, corpus, ref)} for name, d in decs.items()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- distillation (eq. 5)

#: Reward-table row of the r_θ distilled from each variant's labels (LLM-GELI Table 4's names).
DISTILLED = {"text": "LLM GELI: Language Only", "multimodal": "LLM GELI: Multimodal"}


def distilled_name(variant: str, backend: Backend) -> str:
    """The reward-table row of a distilled r_θ; a non-LLM decomposer says so in the name."""
    name = DISTILLED[variant]
    return name if backend.is_llm else f"{name} [{backend.name} decomposer, not an LLM]"


def llm_conversations(convo_ids: Sequence[str], params: LLMParams) -> list[str]:
    """The conversations an LLM backend decomposes: the first ``max_conversations`` (0 = all), sorted."""
    ids = sorted(map(str, convo_ids))
    return ids[: params.max_conversations] if params.max_conversations else ids


def distillation_data(data: Any, labels: pd.DataFrame) -> Any:
    """``data`` (:class:`geli_lib.experiments.RewardData`) with the LLM's labels as training targets.

    The labels join the LI labels under :data:`geli_lib.reward_model.LLM_LABELS`,
    so method ``llm`` regresses r_θ on them (eq. 5); a turn the LLM left out
    counts as 0, only the turns of failed (or not decomposed) chunks are masked.
    """
    from geli_lib.reward_model import LLM_LABELS, make_train_data

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


__all__ = [
    "Backend",
    "CLASSES",
    "Chunk",
    "DISTILLED",
    "Decomposition",
    "GRAMMAR_VERSION",
    "LLMEndpointError",
    "LLMError",
    "LLMInputError",
    "LocalBackend",
    "MalformedOutput",
    "OpenAIBackend",
    "ReferenceDecomposer",
    "ResponseCache",
    "VARIANTS",
    "answer_max_chars",
    "answer_pattern",
    "build_chunks",
    "consistency",
    "conversation_chunks",
    "decompose",
    "decompose_chunk",
    "decomposition_table",
    "distillation_data",
    "distilled_name",
    "label_classes",
    "labels_for_pairs",
    "listener_affect",
    "listener_cues",
    "llm_conversations",
    "lmfe_tokenizer_data",
    "make_backend",
    "number_pattern",
    "parse_scores",
    "prompt_messages",
    "quality",
    "sampling_params",
    "transcript_lines",
    "unroll_table",
    "validate_scores",
]
