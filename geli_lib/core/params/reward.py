"""The reward sections: every reward function's training (GELI Table 1) and LLM-GELI's decomposition."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

from geli_lib.core.params.base import _check, _check_choices

#: Reward-function methods (GELI Table 1 plus the sum-decomposition and the oracle ceiling).
#: The choices of a field are its type (``Literal[...]``): :func:`_check_choices` validates every
#: such field from it, and the tuples below are read off the same types.
RewardMethod = Literal["mean", "mode", "sum", "ircr", "rudder", "rrd", "va", "ls", "geli", "oracle", "llm"]
GeMethod = Literal["sum", "ircr", "rudder", "rrd"]
LiSignal = Literal["va", "ls"]
GeForm = Literal["mean", "sum"]
Encoder = Literal["minilm", "smollm2"]
RrdSampling = Literal["ren", "with_replacement", "without_replacement"]
#: A method whose head another can continue from ("" = none): not the constants, not the LLM's labels.
WarmStart = Literal["", "sum", "ircr", "rudder", "rrd", "va", "ls", "geli", "oracle"]
#: The stable ids of the reward functions notebooks 02-05 save (``experiments.table1_specs``, LLM-GELI's
#: ``llm.distilled_spec``): what ``rl.reward_fns`` lists. Tables show their display names instead.
RewardFunctionId = Literal[
    "mean",
    "mode",
    "ircr",
    "rudder",
    "rrd_k32",
    "rrd_k160",
    "va",
    "ls",
    "oracle",
    "geli",
    "geli_rrd_lrd",
    "geli_exact",
    "geli_recipe",
    "llm_text",
    "llm_multimodal",
]
REWARD_METHODS: tuple[str, ...] = typing.get_args(RewardMethod)
REWARD_FUNCTION_IDS: tuple[str, ...] = typing.get_args(RewardFunctionId)
GE_METHODS: tuple[str, ...] = typing.get_args(GeMethod)
LI_SIGNALS: tuple[str, ...] = typing.get_args(LiSignal)
GE_FORMS: tuple[str, ...] = typing.get_args(GeForm)
ENCODERS: tuple[str, ...] = typing.get_args(Encoder)


@dataclass
class RewardParams:
    """Reward model r_θ(s_t, a_t) and its training (GELI Sec. 4-5, App. A, F).

    By default the encoder is frozen and its features are cached per pair, so
    every method and seed trains only the head (see :mod:`geli_lib.reward.reward_model`);
    ``finetune_encoder`` trains it too.
    """

    encoder: Encoder = "minilm"
    """Text encoder: ``minilm`` (all-MiniLM-L6-v2, d=384, mean-pooled and L2-normalised) or ``smollm2`` (SmolLM2-135M
    backbone, mean-pooled last hidden state, d=576)."""
    max_tokens: int = 256
    """Encoder input length; longer texts keep their END (left-truncation: the response and the most recent history)."""
    encode_batch_size: int = 64
    """Pairs per encoder forward pass."""
    hidden: int = 128
    """Width of the head's hidden layer (authors: Linear(d,128) → Dropout → ReLU → Linear(128,1) → Tanh)."""
    dropout: float = 0.2
    """Dropout of the head (authors: 0.2)."""
    output_scale: float = 0.0
    """Per-turn reward bound: r̂ = output_scale · tanh(head(x)), on the 0-100 score scale. 0 = auto:
    ``auto_scale_margin`` × the largest per-turn share R/T among the training conversations (oracle: also ≥ margin ×
    the largest |true reward|)."""
    auto_scale_margin: float = 1.25
    """Margin of the automatic ``output_scale`` over the largest training share R/T (1.25 keeps every share at tanh ≤
    0.8)."""
    lr: float = 1e-3
    """AdamW learning rate of the head (authors: 5e-6 for a fine-tuned BART; a frozen encoder's head needs more)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    epochs: int = 100
    """Passes over the training conversations (no early stopping)."""
    batch_conversations: int = 8
    """Whole conversations per optimiser step (authors: 1 for GE)."""
    ge_method: GeMethod = "rrd"
    """GE part of ``geli``: rrd, ircr, rudder or sum (eq. 4)."""
    li_signal: LiSignal = "va"
    """LI part of ``geli``: va (visual affect Γ, eq. 7) or ls (VADER language sentiment)."""
    lam: float = 0.5
    """λ of GELI eq. 2: L = λ·L_GE + (1-λ)·L_LI. The paper does not state λ; the authors' training script sets 0.5."""
    K: int = 32
    """RRD sample size |I| per conversation (Table 1: 32 and 160)."""
    rrd_sampling: RrdSampling = "ren"
    """How RRD draws its K indices: ``ren`` (Ren et al. / App. A: K distinct turns, with replacement only when K > T),
    ``with_replacement`` (the authors' code) or ``without_replacement`` (a conversation shorter than K contributes
    each turn once: its exact sum)."""
    rrd_bias_correction: bool = False
    """Ren et al.'s bias-corrected RRD: subtract the Monte-Carlo variance term from the loss."""
    ge_form: GeForm = "mean"
    """How per-turn rewards add up to the session score, in training (L_GE, RRD, IRCR) and evaluation: ``mean`` = the
    authors' fixed-T mean form R ≈ (T̄/T)·Σ_t r̂_t, under which a turn's reward does not depend on the
    conversation's length (a per-turn model r_θ(s_t, a_t) never sees T), or ``sum`` = eq. 3 as written, R ≈ Σ_t
    r̂_t."""
    T_bar: float = 0.0
    """T̄ of the ``mean`` form, the unit of r̂ (a turn's share of the score in a T̄-turn conversation; authors: 160). 0
    = auto: the mean number of AI turns of the training conversations, so r̂ sits on the familiar R/T scale."""
    warm_start: WarmStart = ""
    """Train this method's head first (e.g. ``va``) and continue from it with this method for ``finetune_epochs``
    epochs (the GELI authors' recipe: a VA head, then GELI); empty = from scratch."""
    finetune_epochs: int = 10
    """Epochs of the continued training after ``warm_start``."""
    select_best: bool = False
    """Keep the epoch whose head has the lowest L_GE on validation conversations (``val_fraction`` of the training
    conversations, held out from training) instead of the last epoch (the authors' checkpoint choice)."""
    val_fraction: float = 0.15
    """Share of the training conversations held out for ``select_best``."""
    li_positive: float = 1.0
    """r_LI for Γ = 1, as a fraction of ``output_scale`` (authors: 1, the tanh ceiling); Γ = 0 gives r_LI = 0."""
    ls_threshold: float = 0.05
    """LS label: Γ_LS = 1 when the VADER compound score of the AI utterance is ≥ this (VADER's 'positive' cut-off)."""
    va_min_words: int = 5
    """Authors' convention: AI turns of ≤ this many words get Γ = 0."""
    rudder_hidden: int = 64
    """Hidden size of RUDDER's LSTM return predictor."""
    rudder_epochs: int = 0
    """Epochs of the RUDDER return predictor; 0 = ``epochs``."""
    rudder_aux_weight: float = 0.5
    """Weight of RUDDER's auxiliary loss (every turn's prediction regressed on the final score)."""
    finetune_encoder: bool = False
    """Fine-tune the text encoder jointly with the head (the authors fine-tuned BART). Costly: every step re-encodes
    its turns through the encoder with gradients; meant for the gpu profile."""
    encoder_lr: float = 2e-5
    """AdamW learning rate of the encoder's parameters when ``finetune_encoder`` (the head keeps ``lr``)."""

    def validate(self) -> None:
        _check_choices(self)
        _check(self.max_tokens >= 8, "max_tokens", "must be >= 8", self.max_tokens)
        _check(self.encode_batch_size >= 1, "encode_batch_size", "must be >= 1", self.encode_batch_size)
        _check(self.hidden >= 1, "hidden", "must be >= 1", self.hidden)
        _check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)", self.dropout)
        _check(self.output_scale >= 0, "output_scale", "must be >= 0 (0 = auto)", self.output_scale)
        _check(self.auto_scale_margin >= 1, "auto_scale_margin", "must be >= 1", self.auto_scale_margin)
        _check(self.lr > 0, "lr", "must be > 0", self.lr)
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0", self.weight_decay)
        _check(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
        _check(self.batch_conversations >= 1, "batch_conversations", "must be >= 1", self.batch_conversations)
        _check(0 <= self.lam <= 1, "lam", "must be in [0, 1]", self.lam)
        _check(self.K >= 1, "K", "must be >= 1", self.K)
        _check(self.rudder_aux_weight >= 0, "rudder_aux_weight", "must be >= 0", self.rudder_aux_weight)
        _check(self.T_bar >= 0 and math.isfinite(self.T_bar), "T_bar", "must be >= 0 (0 = auto)", self.T_bar)
        _check(self.finetune_epochs >= 0, "finetune_epochs", "must be >= 0", self.finetune_epochs)
        _check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)", self.val_fraction)
        _check(0 < self.li_positive <= 1, "li_positive", "must be in (0, 1]", self.li_positive)
        _check(-1 <= self.ls_threshold <= 1, "ls_threshold", "must be in [-1, 1]", self.ls_threshold)
        _check(self.va_min_words >= 0, "va_min_words", "must be >= 0", self.va_min_words)
        _check(self.rudder_hidden >= 1, "rudder_hidden", "must be >= 1", self.rudder_hidden)
        _check(self.rudder_epochs >= 0, "rudder_epochs", "must be >= 0", self.rudder_epochs)
        _check(self.encoder_lr > 0, "encoder_lr", "must be > 0", self.encoder_lr)


LlmBackend = Literal["reference", "local", "openai"]
LLM_BACKENDS: tuple[str, ...] = typing.get_args(LlmBackend)


@dataclass
class LLMParams:
    """LLM-GELI reward decomposition (seed 003 Sec. 4.1, App. J; see :mod:`geli_lib.reward.llm`).

    The endpoint's API key is never a parameter: it is read from the environment
    variable named by ``api_key_env``.
    """

    backend: LlmBackend = "local"
    """Decomposer: ``local`` (SmolLM2-135M-Instruct, offline), ``openai`` (any OpenAI-compatible endpoint) or
    ``reference`` (listener-affect split; not an LLM)."""
    base_url: str = ""
    """OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8000/v1``; empty = ``$GELI_LLM_BASE_URL``."""
    model: str = ""
    """Model name at the endpoint (``transformers serve``: the served checkpoint path); empty = ``$GELI_LLM_MODEL``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the endpoint's API key."""
    temperature: float = 1.0
    """Sampling temperature (App. J samples at 1; o3-mini, the paper's LLM, only samples at 1); 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    tokens_per_turn: int = 12
    """Answer budget per AI turn of a chunk (an id, a number and JSON punctuation), plus 32 tokens."""
    max_new_tokens: int = 1024
    """Cap on the answer length of one request."""
    chunk_chars: int = 6000
    """Longest transcript (characters) of one request; longer conversations are split into chunks, each given its share
    of the score."""
    max_utterance_chars: int = 1000
    """An utterance longer than this is cut (marked […]) in the prompt."""
    score_range: tuple[float, float] = (0.0, 100.0)
    """Declared range of the session score R_GE (0-100 scale); a score outside is a bad-input error."""
    rescale: Literal["none", "scale", "shift"] = "shift"
    """Enforce eq. 4 on each chunk's labels: ``shift`` (add the same amount to each annotated turn, so the chunk's
    labels sum to its share whatever the sign of the answer's sum), ``scale`` (multiply) or ``none`` (record the
    deviation only). The answer's own deviation is recorded either way."""
    constrained: bool = True
    """``local`` backend: constrain decoding (lm-format-enforcer) to a JSON object whose keys are exactly the chunk's
    ids, in order, and whose values are bounded numbers, so every answer parses and annotates every turn; ``false``
    = the old free decoding after a ``{"<first id>":`` prefill."""
    bf16: bool = False
    """``local`` backend: hold the model's weights in bf16 where torch has fast bf16 kernels
    (:func:`geli_lib.core.models.bf16_in_effect`; elsewhere float32, said once). One chunk of 39 AI turns,
    2 cores of an Intel Xeon with AMX: ~13 s instead of ~16 s; the prompt's prefill ~1.2 s instead of ~3 s.
    Part of the backend's model id, so of the cache key."""
    output_retries: int = 2
    """Re-samples (new seed) of an unparsable answer before the chunk is recorded as failed."""
    retries: int = 3
    """Retries of a failed request (connection, timeout, HTTP 429/5xx, unreadable body), with exponential backoff."""
    backoff_s: float = 1.0
    """First backoff pause in seconds (doubles per retry)."""
    timeout_s: float = 120.0
    """Timeout of one request, seconds."""
    concurrency: int = 4
    """Requests in flight at once (``openai`` backend; the local model runs one at a time)."""
    max_conversations: int = 0
    """Reward-train conversations decomposed by an LLM backend (0 = all): keeps the local model's smoke run short."""
    consistency_conversations: int = 10
    """Conversations sampled twice for the consistency check (App. J: 10)."""
    threads: int = 1
    """torch threads of the local model while it generates (0 = torch's default). 1 because a second busy process on 2
    cores slowed 2-thread decoding ~6x (40 tokens: 45 s vs 7 s)."""
    seed: int = 0
    """Seed of the first sample; sample s, re-sample a uses seed + 1000·s + a."""

    def validate(self) -> None:
        _check_choices(self)
        _check(bool(self.api_key_env), "api_key_env", "must name an environment variable", self.api_key_env)
        _check(0 <= self.temperature <= 2, "temperature", "must be in [0, 2]", self.temperature)
        _check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", self.top_p)
        for name in ("tokens_per_turn", "max_new_tokens", "concurrency"):
            _check(getattr(self, name) >= 1, name, "must be >= 1", getattr(self, name))
        _check(self.chunk_chars >= 200, "chunk_chars", "must be >= 200", self.chunk_chars)
        _check(self.max_utterance_chars >= 20, "max_utterance_chars", "must be >= 20", self.max_utterance_chars)
        _check(
            len(self.score_range) == 2 and self.score_range[0] < self.score_range[1],
            "score_range",
            "must be [low, high] with low < high",
            self.score_range,
        )
        for name in ("output_retries", "retries", "max_conversations", "consistency_conversations", "threads"):
            _check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        _check(self.backoff_s >= 0, "backoff_s", "must be >= 0", self.backoff_s)
        _check(self.timeout_s > 0, "timeout_s", "must be > 0", self.timeout_s)
