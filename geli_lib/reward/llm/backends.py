"""Answers from the reference decomposer, the local SmolLM2 (constrained decoding) or an OpenAI-style endpoint."""

from __future__ import annotations

import json
import math
import os
import re
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Protocol

import numpy as np
import torch

from geli_lib.core.io import content_key, progress_enabled
from geli_lib.core.models import MARKER, bf16_in_effect, load_policy, offline_env, smollm2_path
from geli_lib.core.params import LLMParams
from geli_lib.reward.llm.prompt import Chunk, LLMError


class LLMEndpointError(LLMError):
    """The endpoint refused, timed out or returned garbage after the retries."""


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


#: How the local backend decodes a constrained answer; part of its model id, so of the cache key. 2: jump-forward
#: (:func:`constrained_decode`), sampling over the allowed tokens in id order with a generator per request.
#: 1 was transformers' ``generate`` with ``prefix_allowed_tokens_fn``: one forward pass per token.
DECODER_VERSION = 2


def next_token(
    logits: torch.Tensor, allowed: list[int], temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """One of ``allowed`` (token ids, sorted): the most likely at temperature 0, else sampled from the
    softmax of ``logits / temperature`` over ``allowed`` (what a mask of the others does), cut to the
    nucleus of mass ``top_p`` (the most likely tokens whose mass reaches it, at least one)."""
    sub = logits[torch.tensor(allowed, device=logits.device)].float().cpu()
    if temperature <= 0:
        return allowed[int(sub.argmax())]
    p = torch.softmax(sub / temperature, -1)
    if top_p < 1:
        order = torch.argsort(p, descending=True, stable=True)
        keep = order[: int((torch.cumsum(p[order], 0) < top_p).sum()) + 1]
        p = torch.zeros_like(p).index_copy_(0, keep, p[keep])
    return allowed[int(torch.multinomial(p, 1, generator=generator))]


def constrained_decode(
    model: Any,
    prompt_ids: list[int],
    allowed_fn: Callable[[list[int]], list[int]],
    max_new_tokens: int,
    eos_id: int,
    temperature: float,
    top_p: float,
    seed: int,
) -> tuple[list[int], int]:
    """Decode under a grammar with jump-forward: ``(new token ids, forward passes)``.

    ``allowed_fn(sequence)`` gives the tokens the grammar allows next. Where it
    allows one, that token is appended without asking the model: in a
    constrained answer the ids, quotes and separators are forced (113 of 309
    tokens of a 39-turn chunk), and the tokens that wait enter the model together
    with the next free choice, one forward pass for all of them. Where it allows
    several, :func:`next_token` picks one. The sample depends on the request's
    ``seed`` only (its own generator), not on the allowed set's order or on
    other calls. Stops after ``eos_id`` or ``max_new_tokens`` tokens.
    """
    # lazy: transformers only when a model is used, after offline_env()
    from transformers import DynamicCache

    generator = torch.Generator().manual_seed(int(seed))
    seq, pending, out, forwards = list(prompt_ids), list(prompt_ids), [], 0
    cache = DynamicCache()
    with torch.no_grad():
        while len(out) < max_new_tokens:
            allowed = sorted(allowed_fn(seq))
            if not allowed:
                break
            if len(allowed) == 1:
                token = allowed[0]
            else:
                ids = torch.tensor([pending], device=model.device)
                logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
                forwards, pending = forwards + 1, []
                token = next_token(logits, allowed, temperature, top_p, generator)
            seq.append(token)
            out.append(token)
            pending.append(token)
            if token == eos_id:
                break
    return out, forwards


def _lmfe_version() -> str:
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
    # lazy: transformers only when a model is used, after offline_env()
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

    ``constrained`` (default): lm-format-enforcer restricts every token to
    :func:`answer_pattern`, so the answer is the JSON object of the chunk's ids
    and numbers, always complete (the budget is :func:`answer_max_chars`); it
    ends with the end-of-sequence token after the ``}``; :func:`constrained_decode`
    skips the model where the grammar leaves one choice. Otherwise (the old
    path): free decoding after a ``{"<first id>":`` prefill, stopped at the
    first ``}``. ``bf16``: weights in bf16 where it is fast (``llm.bf16``). The
    model id names the mode, the grammar and decoder versions,
    lm-format-enforcer's version, the number pattern and the dtype, so cached
    answers of one setting are never served to another.
    """

    name = "local"
    is_llm = True
    cacheable = True

    def __init__(
        self, device: str = "cpu", threads: int = 1, constrained: bool = True, bound: float = 100.0, bf16: bool = False
    ):
        self.path = smollm2_path()
        marker = json.loads((self.path / MARKER).read_text())
        ident = {k: marker.get(k) for k in ("format_version", "source", "source_bytes", "pad_token")}
        base = f"smollm2-135m-instruct-{content_key(ident, length=8)}"
        self.constrained, self.bound = bool(constrained), float(bound)
        self.bf16 = bf16_in_effect(bf16, device, "llm.bf16")
        dtype = "-bf16" if self.bf16 else ""
        if self.constrained:
            grammar = {
                "grammar": GRAMMAR_VERSION,
                "decoder": DECODER_VERSION,
                "number": number_pattern(self.bound),
                "lmfe": _lmfe_version(),
            }
            self.model = f"{base}-json-constrained-{content_key(grammar, length=8)}{dtype}"
        else:
            self.model = f"{base}-json-prefill{dtype}"
        self.device, self.threads = device, threads
        self.forwards = 0
        self._lm: Any = None
        self._tok: Any = None
        self._lmfe: Any = None
        self.calls = 0

    def _load(self) -> None:
        # lazy: transformers only when a model is used, after offline_env()
        offline_env()
        from transformers.utils import logging as hf_logging

        if not progress_enabled():  # no weight-loading bar in executed notebooks (GELI_PROGRESS=0)
            hf_logging.disable_progress_bar()
        self._lm, self._tok = load_policy(self.device, dtype=torch.bfloat16 if self.bf16 else None)
        if self.constrained:
            self._lmfe = lmfe_tokenizer_data(self._tok)

    def complete(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        if self._lm is None:
            self._load()
        was = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            answer = (self._constrained if self.constrained else self._free)(chunk, messages, sampling)
        finally:
            torch.set_num_threads(was)
        self.calls += 1
        return answer

    def _prompt_ids(self, messages: list[dict[str, str]], prefill: str = "") -> list[int]:
        text = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefill
        return self._tok(text, add_special_tokens=False)["input_ids"]

    def _constrained(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        # lazy: lm-format-enforcer only when the local model decodes
        from lmformatenforcer import RegexParser, TokenEnforcer

        enforcer = TokenEnforcer(self._lmfe, RegexParser(answer_pattern(chunk, self.bound)))
        out, forwards = constrained_decode(
            self._lm,
            self._prompt_ids(messages),
            lambda seq: enforcer.get_allowed_tokens(seq).allowed_tokens,
            answer_max_chars(chunk, self.bound) + 1,
            self._tok.eos_token_id,
            float(sampling["temperature"]),
            float(sampling["top_p"]),
            int(sampling["seed"]),
        )
        self.forwards += forwards
        return self._tok.decode(out, skip_special_tokens=True)

    def _free(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        # JSON mode for a local model: the answer is pre-filled with '{"<first id>":' and stops at '}'.
        # Without it SmolLM2-135M answers with prose (tests/data/llm_outputs/ holds such answers).
        prefill = '{"%s":' % chunk.turn_ids[0]
        ids = torch.tensor([self._prompt_ids(messages, prefill)], device=self._lm.device)
        kw: dict[str, Any] = {
            "max_new_tokens": int(sampling["max_tokens"]),
            "stop_strings": ["}"],
            "tokenizer": self._tok,
        }
        torch.manual_seed(int(sampling["seed"]))
        kw.update(
            {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
            if sampling["temperature"] <= 0
            else {"do_sample": True, "temperature": sampling["temperature"], "top_p": sampling["top_p"]}
        )
        with torch.no_grad():
            out = self._lm.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=self._tok.pad_token_id, **kw)
        self.forwards += out.shape[1] - ids.shape[1]
        return prefill + self._tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


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
        # lazy: the openai backend only
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
        # lazy: the openai backend only
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
        bound = params.score_range[1] - params.score_range[0]
        return LocalBackend(device, params.threads, params.constrained, bound, params.bf16)
    return OpenAIBackend(params)
