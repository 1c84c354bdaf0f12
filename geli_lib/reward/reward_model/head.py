"""The head of r_θ on encoder features, a trained reward function, and its predictions."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from geli_lib.core.io import atomic_write, write_json
from geli_lib.core.models import offline_env
from geli_lib.core.params import RewardParams, to_dict
from geli_lib.reward.reward_model.encoder import (
    EncoderMismatchError,
    RewardModelError,
    encode_pairs,
    encoder_id,
    pair_features,
    pair_texts,
)

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
        offline_env()
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
            # lazy: transformers only when a model is used, after offline_env()
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
