"""Reading the LLM's answer: JSON repair, the scores, their validation against the chunk."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from geli_lib.core.params import LLMParams
from geli_lib.reward.llm.prompt import Chunk


class MalformedOutput(ValueError):
    """An answer that holds no readable id → score mapping."""


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
