"""Answers from the reference decomposer, the local SmolLM2 (constrained decoding) or an OpenAI-style endpoint."""

from __future__ import annotations

import json
import math
import os
import re
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import numpy as np
import torch

from geli_lib.core.io import content_key, progress_enabled
from geli_lib.core.models import MARKER, load_policy, offline_env, smollm2_path
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
        # lazy: transformers only when a model is used, after offline_env()
        offline_env()
        from transformers.utils import logging as hf_logging

        if not progress_enabled():  # no weight-loading bar in executed notebooks (GELI_PROGRESS=0)
            hf_logging.disable_progress_bar()
        self._lm, self._tok = load_policy(self.device)
        if self.constrained:
            self._lmfe = lmfe_tokenizer_data(self._tok)

    def complete(self, chunk: Chunk, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        if self._lm is None:
            self._load()
        kw: dict[str, Any]
        if self.constrained:
            # lazy: transformers only when a model is used, after offline_env()
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
        return LocalBackend(device, params.threads, params.constrained, params.score_range[1] - params.score_range[0])
    return OpenAIBackend(params)
