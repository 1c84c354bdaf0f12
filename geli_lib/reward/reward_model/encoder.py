"""The frozen text encoder of r_θ: the texts of a pair, their features and the feature cache."""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from geli_lib.core.io import atomic_write, cache_dir, file_key, progress_bar, write_json
from geli_lib.core.models import minilm_path, offline_env, smollm2_path

#: Bump when the text of a pair or the pooling changes: it is part of the encoder id.
TEXT_FORMAT_VERSION = 2


#: How the response is joined to the history (the response is the next AI turn).
RESPONSE_PREFIX = " AI: "


#: Pairs encoded between two cache writes (an interrupted encode keeps finished chunks).
CHUNK_PAIRS = 1024


#: More chunk files than this are merged into one on the next encode.
MAX_CHUNKS = 32


class RewardModelError(ValueError):
    """Bad input to the reward model or its training; the message says what and where."""


class EncoderMismatchError(RewardModelError):
    """A feature cache or a saved reward function was built with another encoder."""


# --------------------------------------------------------------------------- encoder


def pair_texts(pairs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The two encoder inputs of each pair: the history s_t and ``" AI: " + response`` a_t.

    They are encoded separately and their embeddings concatenated (see the
    module docstring: one mean-pooled embedding of history + response lets the
    ~20-turn history drown the one utterance being scored).
    """
    for col in ("history", "response"):
        if col not in pairs:
            raise RewardModelError(f"pairs: missing column {col!r} (build them with data.build_pairs)")
    hist = pairs["history"].fillna("").astype(str).tolist()
    resp = [RESPONSE_PREFIX + r for r in pairs["response"].fillna("").astype(str)]
    return hist, resp


def text_key(text: str) -> str:
    """Content key of one encoder input (sha1 of its UTF-8 bytes)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _encoder_dir(name: str) -> Path:
    if name == "minilm":
        return minilm_path()
    if name == "smollm2":
        return smollm2_path()
    raise RewardModelError(f"encoder {name!r} unknown: choose minilm or smollm2")


@lru_cache(maxsize=8)
def _weights_key(folder: str) -> str:
    files = [Path(folder) / n for n in ("config.json", "model.safetensors", "tokenizer.json")]
    return file_key([f for f in files if f.exists()], length=12)


def encoder_id(encoder: str = "minilm", max_tokens: int = 256) -> str:
    """Identity of an encoder's features: name, weights (content key), input length, text format.

    Two feature sets are interchangeable exactly when their ids are equal; the
    cache folder and every saved reward function record it.
    """
    folder = _encoder_dir(encoder)
    return f"{encoder}-{_weights_key(str(folder))}-t{max_tokens}-f{TEXT_FORMAT_VERSION}"


def _load_encoder(encoder: str, device: str) -> tuple[Any, Any]:
    """(tokenizer, model) of the encoder, offline, eval mode, tokenizer cutting from the left."""
    offline_env()
    # lazy: transformers only when a model is used, after offline_env()
    from transformers import AutoModel, AutoTokenizer

    folder = _encoder_dir(encoder)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tok.truncation_side = "left"
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    model.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor, encoder: str) -> torch.Tensor:
    """Mean of the last hidden states over the mask (MiniLM: then L2-normalised); differentiable."""
    h = hidden.float()
    m = attention_mask.unsqueeze(-1).to(h.dtype)
    emb = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    if encoder == "minilm":
        emb = nn.functional.normalize(emb, p=2, dim=1)
    return emb


def _embed_tensor(
    texts: Sequence[str], tok: Any, model: Any, encoder: str, max_tokens: int, device: str
) -> torch.Tensor:
    """Embeddings (n, d) of one batch of texts on ``device``, with gradients when enabled."""
    enc = tok(list(texts), truncation=True, max_length=max_tokens, padding=True, return_tensors="pt").to(device)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return _pool(out.last_hidden_state, enc["attention_mask"], encoder)


@torch.no_grad()
def _embed(texts: Sequence[str], tok: Any, model: Any, encoder: str, max_tokens: int, device: str) -> np.ndarray:
    """Mean-pooled (and for MiniLM L2-normalised) embeddings of one batch of texts, as numpy."""
    return _embed_tensor(texts, tok, model, encoder, max_tokens, device).cpu().numpy().astype(np.float32)


def pair_features(
    hist: Sequence[str],
    resp: Sequence[str],
    tok: Any,
    model: Any,
    encoder: str,
    max_tokens: int,
    device: str,
    batch_size: int = 64,
    memo: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """[enc(history) | enc(response)] (N, 2d) of each pair, encoded now (no cache): texts a
    fine-tuned encoder must re-read, or responses that are new at every PPO step.

    Each distinct text is encoded once, in batches of similar lengths: a history shared by a
    group of responses, and, through ``memo`` (text -> embedding, filled here; only for one
    encoder), texts already encoded by an earlier call, e.g. by another reward function on the
    same frozen encoder.
    """
    memo = {} if memo is None else memo
    todo = sorted((t for t in dict.fromkeys([*hist, *resp]) if t not in memo), key=len)
    for i in range(0, len(todo), batch_size):
        batch = todo[i : i + batch_size]
        memo.update(zip(batch, _embed(batch, tok, model, encoder, max_tokens, device)))
    return np.hstack([np.stack([memo[t] for t in hist]), np.stack([memo[t] for t in resp])])


class FeatureCache:
    """Encoded pairs of one encoder: a folder of chunk files, each a key → row map.

    Each chunk (``chunk-<n>.npz``) holds ``keys`` (sha1 of the encoder input),
    ``emb`` (float32 rows) and ``encoder_id``; ``encoder.json`` names the
    folder's encoder. Chunks are written atomically, one per
    :data:`CHUNK_PAIRS` encoded pairs, so an interrupted encode keeps what it
    finished. A folder or chunk with another encoder id is refused
    (:class:`EncoderMismatchError`), never mixed in.
    """

    def __init__(self, folder: str | Path, enc_id: str):
        self.folder = Path(folder)
        self.enc_id = enc_id
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "encoder.json"
        if meta.exists():
            got = json.loads(meta.read_text()).get("encoder_id")
            if got != enc_id:
                raise EncoderMismatchError(
                    f"{self.folder}: feature cache built with encoder {got!r}, not {enc_id!r}; "
                    "use the default cache folder (one per encoder) or delete this one"
                )
        else:
            write_json(meta, {"encoder_id": enc_id})
        self.rows: dict[str, int] = {}
        self.emb = np.zeros((0, 0), np.float32)
        self._load()

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.npz"))

    def _load(self) -> None:
        keys: list[np.ndarray] = []
        embs: list[np.ndarray] = []
        for path in self.chunks():
            with np.load(path, allow_pickle=False) as z:
                got = str(z["encoder_id"])
                if got != self.enc_id:
                    raise EncoderMismatchError(
                        f"{path}: chunk encoded with {got!r}, but this cache is for {self.enc_id!r}; delete the chunk"
                    )
                keys.append(z["keys"])
                embs.append(z["emb"])
        if keys:
            all_keys = np.concatenate(keys)
            self.emb = np.concatenate(embs)
            self.rows = {str(k): i for i, k in enumerate(all_keys)}  # later duplicates win (same value)

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        idx = np.fromiter((self.rows[k] for k in keys), dtype=np.int64, count=len(keys))
        return self.emb[idx]

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.rows]

    def add(self, keys: Sequence[str], emb: np.ndarray) -> None:
        """Write one chunk atomically and add it to the in-memory map."""
        n = len(self.chunks())
        name = f"chunk-{time.time_ns():020d}-{n:05d}.npz"
        with atomic_write(self.folder / name) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh, keys=np.asarray(keys, dtype="<U40"), emb=emb.astype(np.float32), encoder_id=np.asarray(self.enc_id)
            )
        base = len(self.emb)
        self.emb = emb.astype(np.float32) if base == 0 else np.concatenate([self.emb, emb])
        for i, k in enumerate(keys):
            self.rows[k] = base + i

    def compact(self) -> None:
        """Merge all chunks into one (atomic write first, then the old chunks are removed)."""
        old = self.chunks()
        if len(old) <= MAX_CHUNKS:
            return
        keys = sorted(self.rows, key=self.rows.__getitem__)
        name = f"chunk-{time.time_ns():020d}-merged.npz"
        with atomic_write(self.folder / name) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=np.asarray(keys, dtype="<U40"), emb=self.lookup(keys), encoder_id=np.asarray(self.enc_id))
        for p in old:
            p.unlink(missing_ok=True)


def encode_pairs(
    pairs: pd.DataFrame,
    encoder: str = "minilm",
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
    max_tokens: int = 256,
    cache: str | Path | None = None,
) -> np.ndarray:
    """Features (N, 2d) float32 of the pairs: [embedding(history), embedding(response)].

    Both texts go through :func:`encode_texts`, so they are encoded once and
    cached by content.
    """
    hist, resp = pair_texts(pairs)
    emb = encode_texts(hist + resp, encoder, batch_size, device, progress, max_tokens, cache)
    return np.hstack([emb[: len(hist)], emb[len(hist) :]])


def encode_texts(
    texts: list[str],
    encoder: str = "minilm",
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
    max_tokens: int = 256,
    cache: str | Path | None = None,
) -> np.ndarray:
    """Embeddings (N, d) float32 of texts, each encoded once and cached by content.

    The cache is ``cache_dir('features')/<encoder_id>/`` (or ``cache``), a key
    → row map keyed by the sha1 of each text, so any subset or reordering
    reuses earlier encodings and only new texts reach the model (the model is
    not even loaded when everything is cached). Prints the throughput (texts/s).
    """
    keys = [text_key(t) for t in texts]
    enc_id = encoder_id(encoder, max_tokens)
    store = FeatureCache(Path(cache) if cache else cache_dir("features") / enc_id, enc_id)
    todo = store.missing(keys)
    if todo:
        by_key = dict(zip(keys, texts))
        todo.sort(key=lambda k: len(by_key[k]))  # similar lengths per batch: less padding
        tok, model = _load_encoder(encoder, device)
        t0 = time.perf_counter()
        bar = progress_bar(len(todo), f"encoding ({encoder})", progress, unit="pair")
        try:
            for c0 in range(0, len(todo), CHUNK_PAIRS):
                ck = todo[c0 : c0 + CHUNK_PAIRS]
                parts = []
                for b0 in range(0, len(ck), batch_size):
                    bk = ck[b0 : b0 + batch_size]
                    parts.append(_embed([by_key[k] for k in bk], tok, model, encoder, max_tokens, device))
                    bar.update(len(bk))
                store.add(ck, np.concatenate(parts))
        finally:
            bar.close()
        dt = time.perf_counter() - t0
        if progress:
            print(
                f"encoded {len(todo)} texts with {encoder} in {dt:.1f} s "
                f"({len(todo) / max(dt, 1e-9):.0f} texts/s); {len(keys) - len(todo)} from cache",
                flush=True,
            )
        store.compact()
    elif progress:
        print(f"features: all {len(keys)} texts from cache ({store.folder.name})", flush=True)
    if not keys:
        return np.zeros((0, store.emb.shape[1] if store.emb.size else 0), np.float32)
    return store.lookup(keys)
