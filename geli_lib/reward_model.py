"""The reward model r_θ(s_t, a_t) and the training of every reward function (GELI Sec. 4-5).

r_θ is a frozen text encoder plus a small head (the authors' architecture). Because the
encoder is frozen, each (history, response) pair is encoded **once** and its
features are cached by content; every method and every seed then trains only
the head on tensors, which is what makes a three-seed Table 1 cheap
(``benchmarks/bench_reward.py`` times it against re-encoding at every step, as
the authors' code does).

Decisions (all parameters of :class:`~geli_lib.params.RewardParams`):

**Text of a pair.** Two encoder inputs: the history s_t in the authors' format
(the last 20 turns as ``" User: …"`` / ``" AI: …"``, see
:func:`geli_lib.data.build_pairs`) and the response a_t as ``" AI: " + response``;
the features are their two embeddings concatenated (d = 2 × 384). The authors
fine-tuned BART on one concatenated text; with a FROZEN encoder, one
mean-pooled embedding of history + response lets ~20 turns of history drown
the one utterance being scored (measured: the oracle head reached a
within-conversation Spearman of 0.08 with it). Each text sees at most
``max_tokens`` (256, MiniLM's trained length) tokens, cut from the LEFT
(tokenizer ``truncation_side="left"``), so the most recent history is kept.

**Fine-tuning (option).** ``finetune_encoder`` (the gpu profile) trains the
encoder jointly with the head, as the authors fine-tuned BART: every step
re-encodes, with gradients, the turns its loss reads (:class:`EncoderFeatures`),
and the trained reward function carries its encoder (:func:`predict_pairs`).

**Features.** MiniLM: mean of the last hidden states over the attention mask,
then L2-normalised, i.e. exactly the sentence-transformers embedding of
all-MiniLM-L6-v2 (d = 384 per text). SmolLM2 (option): the mean of the backbone's last
hidden state over the mask (d = 576), not normalised.

**How turn rewards add up** (``ge_form``). Eq. 3 as written, R ≈ Σ_t r̂_t, makes a
turn's reward scale with 1/T, a length no per-turn model r_θ(s_t, a_t) sees: it
puts a floor under L_GE and makes pooled correlations with a turn truth
meaningless. The default is the GELI authors' fixed-T mean form R ≈ (T̄/T)·Σ_t r̂_t
(their script: T̄ = 160), in which a turn's reward does not depend on the
conversation's length; T̄ (``T_bar``, default the training conversations' mean
AI-turn count) is only the unit of r̂. Training (L_GE, RRD, IRCR, the constant
baselines, the oracle's and LLM labels' targets, RUDDER's redistribution) and
evaluation (:func:`geli_lib.evaluation.evaluate_reward`) use the same form, and
each trained function carries its T̄ (:func:`turn_unit` is the conversion).

**Output scale.** The head ends in tanh ∈ [-1, 1], the score R is on 0-100. So
r̂_t = ``output_scale`` · tanh(·). The authors kept scale 1 (with T̄ = 160 the
mean per-turn share sat at ≈ 0.46 of the range). Ours is data-driven: by default
(``output_scale: 0``) the scale is ``auto_scale_margin`` (1.25) × the largest
per-turn share R/T̄ (sum form: R/T) among the training conversations, so every
training conversation's score is reachable with |tanh| ≤ 0.8. ``oracle``,
``rudder`` and ``llm`` regress the head on per-turn targets, so their scale
also covers the largest |target|. The scale is stored with the trained head,
so predictions are always in the unit of the score.

**LI labels.** Γ ∈ {0, 1} (eq. 7) becomes r_LI = Γ · ``li_positive`` ·
``output_scale`` (default: Γ = 1 ↦ the top of the head's range, Γ = 0 ↦ 0),
which is the authors' mapping (their tanh output was regressed on Γ directly).
Language sentiment (LS) uses the same mapping with Γ_LS = 1 when VADER's
compound score of the AI utterance is ≥ ``ls_threshold`` (0.05). Turns without
a label (NaN: no timing, so no face window) are left out of L_LI.

**Methods** (:data:`METHOD_FAMILY`): ``mean`` / ``mode`` (constant per-turn
predictions: mean_i(R_i/T̄), and mode_i(R_i)/T̄; sum form: R_i/T_i and
mode_i(R_i)·mean_i(1/T_i)); GE ``sum`` (eq. 4), ``rrd`` (eq. 9), ``ircr`` (per-turn
targets R/T̄, or R/T), ``rudder`` (an LSTM return
predictor is trained on the feature sequences, its differences of consecutive
predictions are the redistributed rewards, and the head is regressed on them,
because r_θ must score one (s_t, a_t) pair at RL time); LI ``va`` and ``ls``
(eq. 6); ``geli`` = λ·L_GE(``ge_method``) + (1-λ)·L_LI(``li_signal``) (eq. 2);
``oracle`` (MSE on the planted per-turn reward: the ceiling, simulated corpus
only); ``llm`` (LLM-GELI eq. 5: MSE on an LLM's per-turn labels, passed as
``li_labels[LLM_LABELS]``; only failed chunks are masked, see :mod:`geli_lib.llm`).
Any trainable method can continue from another's head (``warm_start``, the
authors' VA-then-GELI recipe) and keep its best validation epoch (``select_best``). Losses come from
:mod:`geli_lib.losses`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from geli_lib.io import atomic_write, cache_dir, content_key, file_key, progress_bar, write_json  # noqa: E402
from geli_lib.params import GE_METHODS, REWARD_METHODS, ComputeParams, RewardParams, to_dict  # noqa: E402

#: Bump when the text of a pair or the pooling changes: it is part of the encoder id.
TEXT_FORMAT_VERSION = 2
#: How the response is joined to the history (the response is the next AI turn).
RESPONSE_PREFIX = " AI: "
#: Pairs encoded between two cache writes (an interrupted encode keeps finished chunks).
CHUNK_PAIRS = 1024
#: More chunk files than this are merged into one on the next encode.
MAX_CHUNKS = 32

METHOD_FAMILY: dict[str, str] = {
    "mean": "baseline",
    "mode": "baseline",
    "sum": "GE",
    "ircr": "GE",
    "rudder": "GE",
    "rrd": "GE",
    "va": "LI",
    "ls": "LI",
    "geli": "GELI",
    "oracle": "oracle",
    "llm": "LLM",
}
#: The ``TrainData.li`` key of LLM-GELI's per-turn labels (:func:`geli_lib.llm.labels_for_pairs`).
LLM_LABELS = "llm"


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
    from geli_lib.models import minilm_path, smollm2_path

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
) -> np.ndarray:
    """[enc(history) | enc(response)] (N, 2d) of each pair, encoded now (no cache): texts a
    fine-tuned encoder must re-read, or responses that are new at every PPO step."""
    parts = [
        _embed(t[i : i + batch_size], tok, model, encoder, max_tokens, device)
        for t in (hist, resp)
        for i in range(0, len(t), batch_size)
    ]
    n_h = -(-len(hist) // batch_size)
    return np.hstack([np.concatenate(parts[:n_h]), np.concatenate(parts[n_h:])])


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


# --------------------------------------------------------------------------- LI labels


def visual_affect_labels(corpus: Any, pairs: pd.DataFrame, min_words: int = 5) -> np.ndarray:
    """Γ (GELI eq. 7) per pair, from :func:`geli_lib.features.turn_listener_summary`.

    1 when the listener's most frequent arg-max face emotion in the turn window
    is happiness; 0 otherwise, and 0 for turns of ≤ ``min_words`` words or
    without frames (authors' conventions); NaN for turns without timing (no
    window at all: ESConv, SODA).
    """
    from geli_lib.features import turn_listener_summary

    s = turn_listener_summary(corpus, min_words=min_words)[["convo_id", "turn_idx", "va_label"]]
    m = pairs[["convo_id", "turn_idx"]].merge(s, on=["convo_id", "turn_idx"], how="left")
    return m["va_label"].to_numpy(dtype=float)


def sentiment_labels(pairs: pd.DataFrame, threshold: float = 0.05) -> np.ndarray:
    """Γ_LS per pair: 1 when VADER's compound score of the AI utterance is ≥ ``threshold``, else 0."""
    from geli_lib.features import vader_compound

    return (vader_compound(pairs["response"].tolist()) >= threshold).astype(float)


# --------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """Whole conversations as padded tensors: what every method trains on.

    ``X`` (C, T_max, d) features, ``mask`` (C, T_max) bool, ``lengths`` (C,)
    AI turns, ``R`` (C,) session scores, ``truth`` (C, T_max) planted reward
    (NaN when absent), ``li`` name → (C, T_max) labels Γ (NaN = none),
    ``rows`` (C, T_max) the pair row of each turn (-1 = padding), ``texts``
    the encoder inputs of those rows (for the naive benchmark).
    """

    convo_ids: list[str]
    X: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    R: torch.Tensor
    truth: torch.Tensor
    li: dict[str, torch.Tensor]
    rows: torch.Tensor
    texts: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def d(self) -> int:
        return int(self.X.shape[-1])

    def __len__(self) -> int:
        return len(self.convo_ids)

    def subset(self, idx: torch.Tensor) -> "TrainData":
        """The conversations at positions ``idx`` (pair rows and texts keep their meaning)."""
        i = idx.tolist()
        return dataclasses.replace(
            self,
            convo_ids=[self.convo_ids[k] for k in i],
            X=self.X[idx],
            mask=self.mask[idx],
            lengths=self.lengths[idx],
            R=self.R[idx],
            truth=self.truth[idx],
            li={k: v[idx] for k, v in self.li.items()},
            rows=self.rows[idx],
        )


def make_train_data(
    corpus: Any,
    pairs: pd.DataFrame,
    features: np.ndarray,
    convo_ids: Sequence[str] | None = None,
    li_labels: Mapping[str, Any] | np.ndarray | None = None,
) -> TrainData:
    """Group the pairs of ``convo_ids`` (default: all) into padded conversation tensors.

    ``features`` are aligned with ``pairs`` rows (:func:`encode_pairs`).
    ``li_labels``: ``{"va": array, "ls": array}`` aligned with ``pairs`` (a bare
    array is taken as ``va``); ``va`` is computed from ``corpus`` and ``ls``
    from the utterances when not given. Conversations without an AI turn or
    without a score are left out and listed in ``skipped``.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(pairs):
        raise RewardModelError(f"features must be (len(pairs), d) = ({len(pairs)}, d), got {features.shape}")
    if li_labels is None:
        li_labels = {}
    elif not isinstance(li_labels, Mapping):
        li_labels = {"va": li_labels}
    labels = {k: np.asarray(v, dtype=float) for k, v in li_labels.items()}
    for k, v in labels.items():
        if v.shape != (len(pairs),):
            raise RewardModelError(f"li_labels[{k!r}] must have one value per pair ({len(pairs)}), got {v.shape}")
    if "va" not in labels and corpus is not None:
        labels["va"] = visual_affect_labels(corpus, pairs)
    if "ls" not in labels:
        labels["ls"] = sentiment_labels(pairs)

    p = pairs.reset_index(drop=True)
    wanted = (
        list(dict.fromkeys(map(str, convo_ids)))
        if convo_ids is not None
        else sorted(pd.unique(p["convo_id"].astype(str)))
    )
    groups = {str(c): g.sort_values("turn_idx").index.to_numpy() for c, g in p.groupby("convo_id", sort=False)}
    skipped: dict[str, list[str]] = {}
    keep: list[str] = []
    for c in wanted:
        rows = groups.get(c)
        if rows is None or len(rows) == 0:
            skipped.setdefault("no_ai_turn", []).append(c)
        elif not np.isfinite(p["score"].to_numpy(float)[rows[0]]):
            skipped.setdefault("no_score", []).append(c)
        else:
            keep.append(c)
    if skipped:
        print("make_train_data: left out " + ", ".join(f"{len(v)} ({k})" for k, v in skipped.items()), file=sys.stderr)
    if not keep:
        raise RewardModelError(
            f"no trainable conversation among {len(wanted)} (skipped: { {k: len(v) for k, v in skipped.items()} })"
        )
    lengths = np.array([len(groups[c]) for c in keep])
    C, T = len(keep), int(lengths.max())
    rows = np.full((C, T), -1, dtype=np.int64)
    for i, c in enumerate(keep):
        rows[i, : lengths[i]] = groups[c]
    mask = rows >= 0
    safe = np.where(mask, rows, 0)

    def padded(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.where(mask, v[safe], np.nan).astype(np.float32))

    X = np.where(mask[..., None], features[safe], 0.0).astype(np.float32)
    texts = list(zip(*pair_texts(p)))
    return TrainData(
        convo_ids=keep,
        X=torch.from_numpy(X),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
        R=torch.tensor(p["score"].to_numpy(float)[rows[:, 0]], dtype=torch.float32),
        truth=padded(p["true_reward"].to_numpy(float)) if "true_reward" in p else torch.full((C, T), float("nan")),
        li={k: padded(v) for k, v in labels.items()},
        rows=torch.from_numpy(rows),
        texts=texts,
        skipped=skipped,
    )


# --------------------------------------------------------------------------- head


class RewardHead(nn.Module):
    """The authors' head: Linear(d,128) → Dropout(0.2) → ReLU → Linear(128,1) → Tanh, times ``scale``.

    Maps features (..., d) to per-turn rewards (...) in [-scale, scale] on the
    0-100 score scale (see the module docstring for the choice of ``scale``).
    """

    def __init__(self, d: int, hidden: int = 128, dropout: float = 0.2, scale: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, 1), nn.Tanh())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def init_output(self, value: float) -> None:
        """Start every prediction near ``value`` (the output bias is set to atanh(value/scale))."""
        with torch.no_grad():
            v = max(min(value / float(self.scale), 0.95), -0.95)  # type: ignore[arg-type]
            self.net[3].bias.fill_(math.atanh(v))  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(x).squeeze(-1)


@dataclass
class TrainedReward:
    """A trained reward function: ``head`` (None for constant baselines) or ``constant``.

    With ``params.finetune_encoder`` it also holds the fine-tuned ``text_encoder``
    and its ``tokenizer``: its features differ from the cached ones, so it scores
    texts (:func:`predict_pairs`), never cached features (:func:`predict` refuses).
    """

    method: str
    params: RewardParams
    encoder_id: str
    d: int
    scale: float
    seed: int
    head: RewardHead | None = None
    constant: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    text_encoder: Any = None
    tokenizer: Any = None
    T_bar: float | None = None
    """T̄ of the mean form its rewards were trained in (R ≈ (T̄/T)·Σ_t r̂_t), None for the sum form."""

    @property
    def family(self) -> str:
        return METHOD_FAMILY[self.method]

    @property
    def finetuned(self) -> bool:
        """Whether this reward function carries its own fine-tuned text encoder."""
        return self.text_encoder is not None

    @property
    def encoder_name(self) -> str:
        """The encoder's name (``minilm``/``smollm2``), the first field of :func:`encoder_id`."""
        return self.encoder_id.split("-", 1)[0]

    def save(self, folder: str | Path) -> Path:
        """Write ``reward.json`` (method, params, encoder id, scale, info) and ``head.pt``.

        A fine-tuned encoder and its tokenizer go to ``encoder/`` (``save_pretrained``).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.head is not None:
            with atomic_write(folder / "head.pt") as tmp:
                torch.save(self.head.state_dict(), tmp)
        if self.finetuned:
            self.text_encoder.save_pretrained(folder / "encoder")
            self.tokenizer.save_pretrained(folder / "encoder")
        meta = {
            "method": self.method,
            "family": self.family,
            "params": to_dict(self.params),
            "encoder_id": self.encoder_id,
            "d": self.d,
            "scale": self.scale,
            "seed": self.seed,
            "constant": self.constant,
            "info": self.info,
            "has_head": self.head is not None,
            "finetuned": self.finetuned,
            "T_bar": self.T_bar,
        }
        write_json(folder / "reward.json", meta)  # written last: the completeness marker
        return folder

    @classmethod
    def load(cls, folder: str | Path, expect_encoder: str | None = None) -> "TrainedReward":
        """Read a saved reward function; ``expect_encoder`` (an :func:`encoder_id`) must match."""
        folder = Path(folder)
        meta_path = folder / "reward.json"
        if not meta_path.is_file():
            raise RewardModelError(f"{folder}: no saved reward function (reward.json missing)")
        meta = json.loads(meta_path.read_text())
        if expect_encoder is not None and meta["encoder_id"] != expect_encoder:
            raise EncoderMismatchError(
                f"{folder}: reward function trained on features of {meta['encoder_id']!r}, "
                f"but the features given are {expect_encoder!r}; re-encode with its encoder"
            )
        known = {f.name for f in dataclasses.fields(RewardParams)}
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items() if k in known
        }
        params = RewardParams(**fields)
        head = None
        if meta["has_head"] and not (folder / "head.pt").is_file():
            raise RewardModelError(
                f"{folder}: head.pt missing (an interrupted save?); re-run the notebook that trains it"
            )
        if meta["has_head"]:
            head = RewardHead(meta["d"], params.hidden, params.dropout, meta["scale"])
            head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu", weights_only=True))
            head.eval()
        tok = model = None
        if meta.get("finetuned"):
            from transformers import AutoModel, AutoTokenizer

            enc_dir = folder / "encoder"
            if not enc_dir.is_dir():
                raise RewardModelError(f"{folder}: fine-tuned reward function without its encoder/ folder")
            tok = AutoTokenizer.from_pretrained(enc_dir, local_files_only=True)
            tok.truncation_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            model = AutoModel.from_pretrained(enc_dir, local_files_only=True, dtype=torch.float32)
            model.eval()
        return cls(
            method=meta["method"],
            params=params,
            encoder_id=meta["encoder_id"],
            d=meta["d"],
            scale=meta["scale"],
            seed=meta["seed"],
            head=head,
            constant=meta["constant"],
            info=meta.get("info", {}),
            text_encoder=model,
            tokenizer=tok,
            T_bar=meta.get("T_bar"),
        )


def load_reward_function(folder: str | Path, encoder: str | None = None, max_tokens: int = 256) -> TrainedReward:
    """Load a saved reward function, checking it against ``encoder`` (name) when given."""
    return TrainedReward.load(folder, encoder_id(encoder, max_tokens) if encoder else None)


@torch.no_grad()
def predict(trained: TrainedReward, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Per-pair r̂ (N,) on the score scale, for features (N, d) from the same encoder."""
    features = np.asarray(features, dtype=np.float32)
    if trained.constant is not None:
        return np.full(len(features), trained.constant, dtype=np.float64)
    if trained.finetuned:
        raise RewardModelError(
            f"reward function {trained.method!r} fine-tuned its encoder: cached features do not fit it; "
            "score the pairs' texts with predict_pairs(trained, pairs)"
        )
    if features.ndim != 2 or features.shape[1] != trained.d:
        raise EncoderMismatchError(
            f"features of shape {features.shape} do not fit a head trained on d={trained.d} "
            f"features ({trained.encoder_id})"
        )
    assert trained.head is not None
    trained.head.eval()
    out = [
        trained.head(torch.from_numpy(features[i : i + batch_size])).numpy()
        for i in range(0, len(features), batch_size)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def predict_pairs(
    trained: TrainedReward,
    pairs: pd.DataFrame,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    cache: str | Path | None = None,
) -> np.ndarray:
    """Per-pair r̂ (N,) of the pairs' texts (:func:`pair_texts`).

    A fine-tuned reward function encodes them with its own encoder (on
    ``device``, nothing cached); any other one reads the cached frozen-encoder
    features (:func:`encode_pairs`) and calls :func:`predict`.
    """
    if trained.constant is not None:
        return np.full(len(pairs), trained.constant, dtype=np.float64)
    if not trained.finetuned:
        p = trained.params
        feats = encode_pairs(pairs, trained.encoder_name, batch_size, device, progress, p.max_tokens, cache)
        return predict(trained, feats)
    hist, resp = pair_texts(pairs)
    if not hist:
        return np.zeros(0)
    model, tok = trained.text_encoder, trained.tokenizer
    was_training = model.training
    model.to(device).eval()
    try:
        feats = pair_features(
            hist, resp, tok, model, trained.encoder_name, trained.params.max_tokens, device, batch_size
        )
    finally:
        model.train(was_training)
    assert trained.head is not None
    trained.head.eval()
    return trained.head(torch.from_numpy(feats)).numpy().astype(np.float64)


# --------------------------------------------------------------------------- training


def resolve_T_bar(train: TrainData, params: RewardParams) -> float | None:
    """T̄ of the mean form (``params.T_bar``, or 0 = the training conversations' mean AI-turn count),
    None for the sum form (``params.ge_form: sum``)."""
    if params.ge_form == "sum":
        return None
    if params.T_bar > 0:
        return float(params.T_bar)
    return round(float(train.lengths.float().mean()), 2)


def turn_unit(lengths: torch.Tensor, T_bar: float | None) -> torch.Tensor:
    """(C, 1): what a conversation's score is divided by to give one turn's even share.

    T̄ in the mean form (the same for every conversation: length-free), the
    conversation's own length T_b in the sum form. So R / unit is the share
    IRCR and the constant baselines give each turn, a planted truth on the
    score scale (R = mean_t truth_t) becomes per-turn targets truth / unit, and
    labels that sum to R over the T_b turns (an LLM's, RUDDER's) become
    labels · T_b / unit.
    """
    T = lengths.to(torch.float32)[:, None]
    return T if T_bar is None else torch.full_like(T, float(T_bar))


def auto_scale(
    train: TrainData, params: RewardParams, method: str, targets: torch.Tensor | None = None, T_bar: float | None = None
) -> float:
    """The head's output scale: ``params.output_scale``, or the automatic rule of the module docstring.

    The share is R / :func:`turn_unit`. Methods that regress the head on
    per-turn targets whose range is known before training (``oracle``: the
    planted rewards; ``rudder``: the redistributed rewards) also keep those
    targets inside the range. An LLM's labels do not stretch it: they are
    clipped into it (:func:`_clip_to_range`).
    """
    if params.output_scale > 0:
        return float(params.output_scale)
    share = (train.R[:, None] / turn_unit(train.lengths, T_bar)).abs()
    top = float(share.max())
    if targets is not None:
        t = targets[train.mask & torch.isfinite(targets)]
        if len(t):
            top = max(top, float(t.abs().max()))
    return params.auto_scale_margin * max(top, 1e-6)


def _li_targets(train: TrainData, signal: str, scale: float, params: RewardParams) -> torch.Tensor:
    """r_LI = Γ · li_positive · scale (NaN where Γ is missing); errors when every label is missing."""
    if signal not in train.li:
        raise RewardModelError(f"no {signal!r} labels in the training data (pass li_labels={{{signal!r}: …}})")
    g = train.li[signal]
    if not torch.isfinite(g[train.mask]).any():
        raise RewardModelError(
            f"every {signal!r} label of the training conversations is NaN (no face window / no timing): "
            f"an LI method cannot train on this corpus"
        )
    return g * (params.li_positive * scale)


def _llm_targets(train: TrainData, T_bar: float | None) -> torch.Tensor:
    """LLM-GELI's r_LI (eq. 5): the LLM's labels (which sum to R over a conversation, Sec. 4.1's
    prompt) in the unit of r̂, labels · T_b / :func:`turn_unit` (NaN = a failed chunk)."""
    if LLM_LABELS not in train.li:
        raise RewardModelError(
            f"no {LLM_LABELS!r} labels in the training data: decompose with geli_lib.llm "
            f"and pass li_labels={{{LLM_LABELS!r}: llm.labels_for_pairs(pairs, labels)}}"
        )
    g = train.li[LLM_LABELS]
    if not torch.isfinite(g[train.mask]).any():
        raise RewardModelError(
            "every LLM label of the training conversations is missing (no annotation or "
            "failed chunks): nothing to distil"
        )
    return g * train.lengths.to(g.dtype)[:, None] / turn_unit(train.lengths, T_bar)


def _clip_to_range(targets: torch.Tensor, mask: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """Targets moved into the head's range [-scale, scale] keeping each conversation's sum, and the
    share of valid labels that lay outside it.

    An LLM's labels only have to add up to the score: a small model often gives one
    turn nearly all of it. The head keeps the range every reward function has (set by
    the session scores, :func:`auto_scale`), so distilled rewards stay on the scale of
    the others (PPO and cross-scoring compare them). Clipping alone would drop the
    excess and break eq. 5's premise that the labels add up to R, so the clipped labels
    of a conversation are shifted by one constant that restores their sum (the sum
    itself is capped at what T turns in range can hold). Failed chunks (NaN) stay NaN.
    """
    ok = mask & torch.isfinite(targets)
    outside = ok & (targets.abs() > scale)
    share = float(outside.sum()) / max(int(ok.sum()), 1)
    x = torch.where(ok, targets, torch.zeros_like(targets)).to(torch.float64)
    n = ok.sum(1).to(x.dtype)
    goal = x.sum(1).clamp(-n * scale, n * scale)
    # Σ_t clip(x_t + c) rises monotonically with c: bisection finds the shift, per conversation
    lo = torch.full_like(goal, -2 * scale) - x.abs().amax(1)
    hi = -lo
    for _ in range(60):
        mid = (lo + hi) / 2
        low = torch.where(ok, (x + mid[:, None]).clamp(-scale, scale), 0.0).sum(1) < goal
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    moved = (x + ((lo + hi) / 2)[:, None]).clamp(-scale, scale).to(targets.dtype)
    return torch.where(ok, moved, targets), share


def _masked_mse(r_hat: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over the turns where ``mask`` holds and ``target`` is finite (eq. 6 form), via losses.li_loss."""
    from geli_lib import losses

    m = mask & torch.isfinite(target)
    if not bool(m.any()):
        return r_hat.sum() * 0.0
    return losses.li_loss(r_hat, m, torch.nan_to_num(target))


RRD_REPLACE = {"ren": None, "with_replacement": True, "without_replacement": False}

#: ``feature_fn(conv (b,), idx (b, K), valid (b, K)) -> (b, T_max, d)``: features of the batch
#: with at least the sampled turns filled in (other positions are never read by the loss).
FeatureFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cached_features(train: TrainData) -> FeatureFn:
    """The batch's features read from the cached tensor (all turns present)."""

    def fn(conv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return train.X[conv]

    return fn


class EncoderFeatures:
    """Features of chosen turns computed by a trainable encoder, with gradients (fine-tuning).

    ``turns(b, sel)`` encodes the history and response texts of the turns where
    ``sel`` (b, T_max) holds, through the encoder on ``device`` (in chunks of
    ``batch_size`` texts, gradients kept), pools them as :func:`_embed` does and
    returns (b, T_max, 2d) features on the CPU in the [history | response]
    layout, zero elsewhere. Calling the object is the RRD :data:`FeatureFn`: only
    the K sampled turns are encoded.
    """

    def __init__(
        self, train: TrainData, tok: Any, model: Any, encoder: str, max_tokens: int, device: str, batch_size: int
    ):
        if not train.texts:
            raise RewardModelError("fine-tuning the encoder needs the pairs' texts (TrainData.texts is empty)")
        self.train, self.tok, self.model = train, tok, model
        self.encoder, self.max_tokens, self.device, self.batch_size = encoder, max_tokens, device, batch_size

    def _encode(self, texts: list[str]) -> torch.Tensor:
        parts = [
            _embed_tensor(
                texts[i : i + self.batch_size], self.tok, self.model, self.encoder, self.max_tokens, self.device
            )
            for i in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(parts).to("cpu")

    def turns(self, b: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        sel = sel & self.train.mask[b]
        bi, ti = sel.nonzero(as_tuple=True)
        rows = self.train.rows[b][bi, ti].tolist()
        hist = [self.train.texts[r][0] for r in rows]
        resp = [self.train.texts[r][1] for r in rows]
        emb = self._encode(hist + resp)
        feats = torch.cat([emb[: len(rows)], emb[len(rows) :]], dim=1)
        out = torch.zeros(len(b), sel.shape[1], feats.shape[1], dtype=feats.dtype)
        return out.index_put((bi, ti), feats)  # out of place: gradients reach the encoder

    def __call__(self, conv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        sel = torch.zeros(len(conv), self.train.mask.shape[1], dtype=torch.bool)
        bi = torch.arange(len(conv)).unsqueeze(1).expand_as(idx)
        sel[bi[valid], idx[valid]] = True  # repeated samples are encoded once
        return self.turns(conv, sel)


def _head_on_turns(head: RewardHead, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """r̂ (b, T_max) of the valid turns only (0 on padding, which no loss reads): about a third of a
    padded batch is padding, and the head's forward and backward are most of a step."""
    return torch.zeros(mask.shape, dtype=X.dtype).masked_scatter(mask, head(X[mask]))


def step_loss(
    r_hat: torch.Tensor | None,
    mask: torch.Tensor,
    lam: float,
    l_ge: Callable[[], torch.Tensor] | None,
    li_target: torch.Tensor | None,
) -> torch.Tensor:
    """The loss of one training step on a batch of conversations: GELI eq. 2, every method a case of it.

    ``r_hat`` (b, T_max): r_θ of the batch's turns; ``l_ge``: computes the batch's L_GE (eq. 9 for RRD,
    eq. 4 for the exact sum, IRCR's or RUDDER's targets), called only when λ > 0; ``li_target``
    (b, T_max): the per-turn proxy reward r_LI (eq. 6; NaN = no label), or the planted truth for the
    oracle and the LLM's labels for LLM-GELI (eq. 5). λ = 1 is a GE method alone, λ = 0 an LI one.
    """
    from geli_lib import losses

    l_global = l_ge() if l_ge is not None and lam > 0 else None  # sampled first: the RNG order of every run
    l_local = _masked_mse(r_hat, mask, li_target) if r_hat is not None and li_target is not None and lam < 1 else None
    if l_local is None:
        if l_global is None:
            raise RewardModelError(
                f"no loss term: λ = {lam}, GE term {'given' if l_ge else 'none'}, "
                f"LI targets {'given' if li_target is not None else 'none'}"
            )
        return l_global
    if l_global is None:
        return l_local
    return losses.geli_loss(l_global, l_local, lam)  # eq. 2: λ·L_GE + (1 − λ)·L_LI


def _ge_loss(
    kind: str,
    head: RewardHead,
    train: TrainData,
    b: torch.Tensor,
    params: RewardParams,
    gen: torch.Generator,
    targets: torch.Tensor | None,
    feature_fn: FeatureFn,
    r_b: torch.Tensor | None = None,
    T_bar: float | None = None,
) -> torch.Tensor:
    """L_GE of one batch of conversations ``b`` for GE method ``kind``, in the form ``T_bar`` says.

    ``r_b``: r̂ of every turn of the batch when the step has it already (one forward pass serves
    GELI's two terms); otherwise RRD scores ``feature_fn``'s sampled turns.
    """
    from geli_lib import losses

    mask, R = train.mask[b], train.R[b]
    if kind == "rrd":  # eq. 9; idx are ranks among valid turns = columns (left-aligned padding)
        replace = RRD_REPLACE[params.rrd_sampling]
        idx, valid = losses.sample_rrd_indices(train.lengths[b], params.K, replace, gen)
        r_hat = r_b if r_b is not None else head(feature_fn(b, idx, valid))
        return losses.rrd_loss(r_hat, mask, R, idx, valid, T_bar, params.rrd_bias_correction, replace)
    r_hat = r_b if r_b is not None else _head_on_turns(head, train.X[b], mask)
    if kind == "sum":
        return losses.sum_decomposition_loss(r_hat, mask, R, T_bar)
    if kind == "ircr":
        assert targets is not None
        return losses.ircr_loss(r_hat, mask, targets[b])
    if kind == "rudder":  # regress the head on the redistributed rewards
        assert targets is not None
        return _masked_mse(r_hat, mask, targets[b])
    raise RewardModelError(f"unknown GE method {kind!r}")


def _rudder_targets(
    train: TrainData, params: RewardParams, seed: int, T_bar: float | None
) -> tuple[torch.Tensor, list[float]]:
    """RUDDER: fit the LSTM return predictor, return its redistributed rewards (C, T_max) in the
    unit of r̂ (they sum to the final prediction ≈ R, so · T_b / :func:`turn_unit`) and its losses."""
    from geli_lib import losses

    torch.manual_seed(seed + 7919)
    gen = torch.Generator().manual_seed(seed + 7919)
    model = losses.ReturnPredictor(train.d, params.rudder_hidden)
    with torch.no_grad():  # start at the mean return: Adam's small steps never walk 0 -> ~70 otherwise
        model.head.bias.fill_(float(train.R.mean()))
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    hist = []
    for _ in range(params.rudder_epochs or params.epochs):
        tot = 0.0
        for b in torch.randperm(len(train), generator=gen).split(params.batch_conversations):
            pred = model(train.X[b])
            loss = losses.rudder_loss(pred, train.mask[b], train.R[b], params.rudder_aux_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        hist.append(tot / len(train))
    model.eval()
    with torch.no_grad():
        red = losses.rudder_redistribution(model(train.X), train.mask)
    red = red * train.lengths.to(red.dtype)[:, None] / turn_unit(train.lengths, T_bar)
    return red.masked_fill(~train.mask, float("nan")), hist


def _constant(method: str, train: TrainData, T_bar: float | None) -> float:
    """Mean: mean_i(R_i / unit_i); Mode: mode_i(R_i) · mean_i(1 / unit_i) (:func:`turn_unit`)."""
    R, unit = train.R.double(), turn_unit(train.lengths, T_bar).double()[:, 0]
    if method == "mean":
        return float((R / unit).mean())
    vals, counts = torch.unique(R, return_counts=True)
    mode = float(vals[torch.argmax(counts)])  # ties: the smallest score
    return mode * float((1.0 / unit).mean())


def split_train_data(train: TrainData, fraction: float, seed: int) -> tuple[TrainData, TrainData]:
    """(fit, validation): a ``fraction`` of the conversations (at least one) held out, drawn by ``seed``."""
    n_val = max(1, round(fraction * len(train)))
    if n_val >= len(train):
        raise RewardModelError(
            f"cannot hold out {fraction:.0%} of {len(train)} training conversations "
            "for validation and keep any to train on"
        )
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 104729))
    return train.subset(perm[n_val:].sort().values), train.subset(perm[:n_val].sort().values)


def train_reward_function(
    method: str,
    train: TrainData,
    params: RewardParams,
    seed: int = 0,
    encoder: str | None = None,
    feature_fn: FeatureFn | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> TrainedReward:
    """Train reward function ``method`` (one of :data:`METHOD_FAMILY`) on cached features.

    Deterministic per ``seed`` (torch.manual_seed for the head's init and
    dropout, a torch.Generator for batch order and RRD samples). Batches are
    ``params.batch_conversations`` whole conversations, padded with a mask.
    ``feature_fn`` replaces the cached-feature lookup of the RRD samples (the
    benchmark passes one that re-encodes, as the authors' code does).

    Per-turn rewards add up to R in the form ``params.ge_form`` says (T̄ from
    :func:`resolve_T_bar`, kept with the result). ``params.select_best`` holds
    out ``val_fraction`` of the conversations and keeps the epoch with the
    lowest validation L_GE; ``params.warm_start`` first trains that method's
    head on the same conversations and continues from it for
    ``finetune_epochs`` (the GELI authors' recipe: VA, then GELI).

    ``params.finetune_encoder`` (every method but ``mean``/``mode``): the text
    encoder is loaded trainable on ``device`` and fine-tuned jointly with the
    head (AdamW groups: encoder ``params.encoder_lr``, head ``params.lr``).
    Each step re-encodes, with gradients, the turns its loss reads: the K
    sampled turns for RRD, every valid turn of the batch for per-turn losses
    (LI, oracle, sum, IRCR, RUDDER, and GELI's LI part, whose features RRD then
    reuses). The head stays on the CPU; the features come back to it. Scale,
    output init and RUDDER's targets still use the cached features. The
    result carries the encoder: score it with :func:`predict_pairs`.
    """
    params.validate()
    if method not in REWARD_METHODS:
        raise RewardModelError(f"method {method!r} unknown: choose one of {REWARD_METHODS}")
    enc_name = encoder or params.encoder
    enc_id = encoder_id(enc_name, params.max_tokens)
    T_bar = resolve_T_bar(train, params)
    if method in ("mean", "mode"):
        return TrainedReward(
            method=method,
            params=params,
            encoder_id=enc_id,
            d=train.d,
            scale=auto_scale(train, params, method, T_bar=T_bar),
            seed=seed,
            constant=_constant(method, train, T_bar),
            T_bar=T_bar,
            info={"n_conversations": len(train)},
        )
    val = None
    if params.select_best:
        train, val = split_train_data(train, params.val_fraction, seed)
    start = None
    if params.warm_start:  # same conversations, same T̄; the start itself is not selected on validation
        pinned = dataclasses.replace(params, warm_start="", select_best=False, T_bar=T_bar or params.T_bar)
        start = train_reward_function(params.warm_start, train, pinned, seed, encoder, feature_fn, progress, device)
    return _train_head(method, train, params, seed, enc_name, enc_id, T_bar, feature_fn, progress, device, start, val)


def _labels_read(method: str, params: RewardParams) -> list[str]:
    """The ``TrainData.li`` labels :func:`train_reward_function` reads for ``method`` (warm start included)."""
    names = {"va": ["va"], "ls": ["ls"], "llm": [LLM_LABELS]}.get(method, [])
    if method == "geli" and params.lam < 1:
        names = [params.li_signal]
    if params.warm_start:
        names = names + _labels_read(params.warm_start, dataclasses.replace(params, warm_start=""))
    return sorted(set(names))


def training_key(method: str, train: TrainData, params: RewardParams, seed: int) -> str:
    """Content key of one head training: method, parameters, seed, the training code, and the bytes of
    exactly the tensors it reads (features, mask, lengths, scores; the planted truth for the oracle;
    the LI labels of :func:`_labels_read`). Re-simulating the listener's face changes the VA labels
    only, so RRD's key, hence its trained head, stays the same."""
    from geli_lib import losses

    h = hashlib.sha256()
    tensors = [train.X, train.mask, train.lengths, train.R]
    if method == "oracle":
        tensors.append(train.truth)
    tensors += [train.li[k] for k in _labels_read(method, params) if k in train.li]
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    code = file_key([Path(__file__), Path(losses.__file__)])
    return content_key(method, to_dict(params), seed, list(train.convo_ids), h.hexdigest(), code, torch.__version__)


def trained_folder(method: str, train: TrainData, params: RewardParams, seed: int) -> Path | None:
    """Where :func:`train_cached` keeps this training (``cache_dir("trained")/<training_key>``), or None
    for what is never cached: fine-tuned encoders (hundreds of MB each) and the constant baselines (instant)."""
    if params.finetune_encoder or method in ("mean", "mode"):
        return None
    return cache_dir("trained") / training_key(method, train, params, seed)


def _keep(trained: TrainedReward, folder: Path | None) -> TrainedReward:
    """``trained`` saved to ``folder`` and read back (what a later cache hit returns), or as is without one."""
    return trained if folder is None else TrainedReward.load(trained.save(folder))


def train_cached(
    method: str, train: TrainData, params: RewardParams, seed: int = 0, progress: bool = False, device: str = "cpu"
) -> TrainedReward:
    """:func:`train_reward_function`, read back from :func:`trained_folder` when the same training
    ran before (a sweep point equal to a Table 1 row, RRD in the face-noise sweep).

    A hit returns the saved head, bit for bit what re-training gives.
    """
    folder = trained_folder(method, train, params, seed)
    if folder is not None and (folder / "reward.json").is_file():
        return TrainedReward.load(folder)
    return _keep(train_reward_function(method, train, params, seed, progress=progress, device=device), folder)


def _train_task(train: TrainData, method: str, params: RewardParams, seed: int, device: str) -> TrainedReward:
    """One training of :func:`train_grid`, where the task runs; returned with everything on the CPU
    (the caller's machine may have no GPU)."""
    trained = train_reward_function(method, train, params, seed, device=device)
    if trained.finetuned:
        trained.text_encoder.to("cpu")
    return trained


def train_grid(
    train: TrainData,
    runs: Sequence[tuple[str, RewardParams, int]],
    compute: ComputeParams,
    device: str = "cpu",
    progress: bool = False,
) -> list[TrainedReward]:
    """:func:`train_cached` of each ``(method, params, seed)`` in ``runs``, the misses trained where
    ``compute`` says, in the order of ``runs``.

    Cache hits are read here; only the misses become tasks (:func:`geli_lib.compute.run_grid`).
    Their results come back to this process, which writes the cache: a worker on
    another machine has another disk. The serial path is :func:`train_cached` itself.
    """
    from geli_lib.compute import run_grid

    if compute.scheduler == "serial":
        return [train_cached(m, train, p, s, progress=progress, device=device) for m, p, s in runs]
    folders = [trained_folder(m, train, p, s) for m, p, s in runs]
    todo = [i for i, f in enumerate(folders) if f is None or not (f / "reward.json").is_file()]
    fresh = dict(zip(todo, run_grid(_train_task, train, [(*runs[i], device) for i in todo], compute, device, progress)))
    # a run not in ``fresh`` was a cache hit, so it has a folder
    return [_keep(fresh[i], f) if i in fresh else TrainedReward.load(cast(Path, f)) for i, f in enumerate(folders)]


@torch.no_grad()
def _val_l_ge(head: RewardHead, X: torch.Tensor, val: TrainData, T_bar: float | None) -> float:
    """L_GE (eq. 4, in the training form) of the head on the validation conversations."""
    from geli_lib import losses

    head.eval()
    est = losses.session_estimate(head(X), val.mask, T_bar)
    head.train()
    return float(((val.R - est) ** 2).mean())


def _train_head(
    method: str,
    train: TrainData,
    params: RewardParams,
    seed: int,
    enc_name: str,
    enc_id: str,
    T_bar: float | None,
    feature_fn: FeatureFn | None,
    progress: bool,
    device: str,
    start: TrainedReward | None,
    val: TrainData | None,
) -> TrainedReward:
    """The training loop of :func:`train_reward_function` (from scratch, or continuing ``start``)."""
    from geli_lib import losses

    t0 = time.perf_counter()
    ge = method if method in GE_METHODS else (params.ge_method if method == "geli" else None)
    li = method if method in ("va", "ls") else (params.li_signal if method == "geli" else None)
    lam = params.lam if method == "geli" else (1.0 if ge else 0.0)
    ge_targets = li_targets = None
    info: dict[str, Any] = {"n_conversations": len(train), "ge": ge, "li": li, "lam": lam, "T_bar": T_bar}
    if ge == "ircr":
        ge_targets = losses.ircr_targets(train.R, train.lengths, train.mask.shape[1], T_bar).to(torch.float32)
    elif ge == "rudder":
        ge_targets, info["rudder_loss"] = _rudder_targets(train, params, seed, T_bar)
    oracle = None
    if method == "oracle":  # the planted truth is on the score scale (R = mean_t truth_t)
        if not torch.isfinite(train.truth[train.mask]).any():
            raise RewardModelError(
                "oracle needs the planted per-turn reward (simulated corpus only): every true_reward is NaN"
            )
        oracle = train.truth / turn_unit(train.lengths, T_bar)
    scale = (
        start.scale
        if start is not None
        else auto_scale(train, params, method, ge_targets if method == "rudder" else oracle, T_bar)
    )
    if method == "llm":  # eq. 5 of LLM-GELI is the oracle's per-turn MSE with the LLM's labels as targets
        oracle, info["labels_clipped"] = _clip_to_range(_llm_targets(train, T_bar), train.mask, scale)
    if li is not None and (lam < 1 or method in ("va", "ls")):
        li_targets = _li_targets(train, li, scale, params)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if start is not None:
        assert start.head is not None
        head = copy.deepcopy(start.head)
        info["warm_start"] = {"method": start.method, "loss": start.info.get("loss", [])}
    else:
        head = RewardHead(train.d, params.hidden, params.dropout, scale)
        head.init_output(float((train.R[:, None] / turn_unit(train.lengths, T_bar)).mean()))
    tok = model = enc_feats = val_feats = None
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": params.lr}]
    if params.finetune_encoder:
        if feature_fn is not None:
            raise RewardModelError(
                "feature_fn and finetune_encoder exclude each other: fine-tuning "
                "computes the features itself (pass finetune_encoder=False)"
            )
        tok, model = (
            (start.tokenizer, start.text_encoder)
            if start is not None and start.finetuned
            else _load_encoder(enc_name, device)
        )
        model.train()
        # Every step encodes a batch's turns with gradients: recompute activations in the
        # backward pass instead of holding them (memory, not speed, limits fine-tuning).
        model.activation_checkpointing_enable()
        enc_feats = EncoderFeatures(train, tok, model, enc_name, params.max_tokens, device, params.encode_batch_size)
        if val is not None:
            val_feats = EncoderFeatures(val, tok, model, enc_name, params.max_tokens, device, params.encode_batch_size)
        groups.append({"params": [q for q in model.parameters() if q.requires_grad], "lr": params.encoder_lr})
        info["finetuned"] = True
    opt = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    every_turn = feature_fn is None  # cached features hold every turn: score them all, once per step
    feature_fn = enc_feats or feature_fn or cached_features(train)
    per_turn = (
        oracle is not None or (li_targets is not None and lam < 1) or (ge is not None and ge != "rrd" and lam > 0)
    )

    def val_loss() -> float:
        assert val is not None
        if val_feats is None:
            return _val_l_ge(head, val.X, val, T_bar)
        with torch.no_grad():
            X = val_feats.turns(torch.arange(len(val)), val.mask)
        return _val_l_ge(head, X, val, T_bar)

    def snapshot() -> dict[str, dict[str, torch.Tensor]]:
        out = {"head": {k: v.detach().clone() for k, v in head.state_dict().items()}}
        if model is not None:
            out["encoder"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return out

    epochs = params.finetune_epochs if start is not None else params.epochs
    hist: list[float] = []
    val_hist: list[float] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    if val is not None and start is not None:  # the start itself is a candidate checkpoint
        val_hist.append(val_loss())
        best = (val_hist[-1], 0, snapshot())
    bar = progress_bar(epochs, f"train {method}", progress, unit="epoch")
    head.train()
    for epoch in range(1, epochs + 1):
        tot = 0.0
        for b in torch.randperm(len(train), generator=gen).split(params.batch_conversations):
            r_b = None
            if enc_feats is not None and per_turn:  # every valid turn encoded once; RRD reads its samples
                r_b = _head_on_turns(head, enc_feats.turns(b, train.mask[b]), train.mask[b])
            elif enc_feats is None and (per_turn or every_turn):
                r_b = _head_on_turns(head, train.X[b], train.mask[b])
            target = oracle if oracle is not None else li_targets
            l_ge = (
                (lambda: _ge_loss(ge, head, train, b, params, gen, ge_targets, feature_fn, r_b, T_bar))
                if ge is not None
                else None
            )
            loss = step_loss(r_b, train.mask[b], lam, l_ge, None if target is None else target[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        hist.append(tot / len(train))
        if val is not None:
            val_hist.append(val_loss())
            if best is None or val_hist[-1] < best[0]:
                best = (val_hist[-1], epoch, snapshot())
        bar.update(1)
    bar.close()
    if best is not None:
        head.load_state_dict(best[2]["head"])
        if model is not None:
            model.load_state_dict(best[2]["encoder"])
        info.update(best_epoch=best[1], val_l_ge=val_hist, n_validation=len(val) if val is not None else 0)
    head.eval()
    if model is not None:
        model.eval()
    info.update(loss=hist, seconds=time.perf_counter() - t0)
    return TrainedReward(
        method=method,
        params=params,
        encoder_id=enc_id,
        d=train.d,
        scale=scale,
        seed=seed,
        head=head,
        info=info,
        text_encoder=model,
        tokenizer=tok,
        T_bar=T_bar,
    )


def family(method: str) -> str:
    """The results-contract family of a method (baseline, GE, LI, GELI, oracle)."""
    return METHOD_FAMILY[method]


__all__ = [
    "EncoderFeatures",
    "EncoderMismatchError",
    "FeatureCache",
    "METHOD_FAMILY",
    "RewardHead",
    "RewardModelError",
    "TrainData",
    "TrainedReward",
    "auto_scale",
    "cached_features",
    "encode_pairs",
    "encoder_id",
    "family",
    "load_reward_function",
    "make_train_data",
    "pair_features",
    "pair_texts",
    "predict",
    "predict_pairs",
    "sentiment_labels",
    "step_loss",
    "train_cached",
    "train_reward_function",
    "training_key",
    "visual_affect_labels",
]
