"""Profiles and parameters: typed dataclasses, validated on load.

A profile (``smoke``, ``cpu``, ``gpu``) is one YAML file ``params/<profile>.yaml``
whose sections map onto the dataclasses below. Every field has a docstring (the
string literal under it). Loading checks unknown keys, types and ranges and
raises :class:`ParamError` naming the file and the dotted field, e.g.
``params/cpu.yaml: simulation.score_noise: must be >= 0, got -1``.

Notebooks take ``profile``, ``corpus`` and ``data_path`` as papermill
parameters and call :func:`load_params` with them as overrides, so any notebook
runs on real data by parameters alone. Any other override that changes a
parameter (``papermill … -p lam 0.1``) makes the run ad hoc: its results go to a
folder of their own, named by the changed parameters
(:attr:`StudyParams.results_key`), never over the study's. Under papermill the
folder is named by the ``-p`` values that differ from the notebook's defaults
(``lam=0.1_seed=0``), so a parameter of the notebook alone counts too. Inside a notebook run
by papermill, :func:`load_params` also refuses a ``-p`` name the notebook does
not declare (a typo would otherwise run the notebook on its defaults).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
PROFILES = ("smoke", "cpu", "gpu")
CORPORA = ("simulated", "candor", "esconv", "soda")
#: Folder, inside a results key, of runs whose parameters differ from the profile's.
ADHOC_DIR = "adhoc"
#: Notebook parameters the runner passes; they choose the results key themselves (profile, corpus).
RUNNER_PARAMETERS = ("profile", "corpus", "data_path")
#: Largest integer any parameter takes (a larger one is a typo, not a setting).
MAX_INT = 2**31 - 1


class ParamError(ValueError):
    """A parameter file or override is invalid; the message names file and field."""


@dataclass
class SimulationParams:
    """Knobs of the simulated corpus (:mod:`geli_lib.simulation` documents what each one plants)."""

    n_conversations: int = 20
    """Number of conversations to simulate."""
    mean_turns: int = 40
    """Mean number of turns (User + AI) per conversation."""
    min_turns: int = 10
    """Shortest conversation, in turns."""
    turns_sd: float = 0.25
    """Spread of conversation length, as a fraction of ``mean_turns``."""
    score_noise: float = 8.0
    """SD of the noise added to the summed true rewards before rounding to the 1-10 survey scale (0-100 points)."""
    listener_mood_mean: float = 0.85
    """Mean of the listeners' baseline mood (logit units); sets the corpus mean score (default ≈ CANDOR's 73.8)."""
    listener_mood_sd: float = 0.7
    """SD of each listener's baseline mood (logit units): session-level variation no turn explains."""
    turn_noise: float = 0.5
    """SD of per-turn reward noise (logit units): what the act and context do not explain."""
    face_noise: float = 1.0
    """SD of the noise on the listener's face-emotion logits; higher makes visual affect a worse proxy."""
    face_coupling: float = 2.5
    """How strongly the listener's happiness logit follows the true turn reward (0 = face unrelated)."""
    smile_noise: float = 0.8
    """SD of the noise on the listener's smile propensity."""
    gaze_noise: float = 0.8
    """SD of the noise on the listener's gaze-on-screen propensity."""
    nod_rate: float = 0.15
    """Base probability per second that the listener nods while listening."""
    prosody_noise: float = 1.0
    """SD of noise on prosodic features relative to their reward-driven shift."""
    frame_dropout: float = 0.03
    """Probability that a second has no face detected (face columns NaN)."""
    reaction_lag: float = 1.0
    """Seconds by which the listener's reaction trails the AI utterance."""
    sentiment_coupling: float = 0.3
    """0-1: how often an utterance's wording sentiment agrees with its true reward (LS is weak)."""
    seed: int = 0
    """Random seed; the same seed and knobs give byte-identical files."""

    def validate(self) -> None:
        _check_choices(self)
        _check(1 <= self.n_conversations <= 100_000, "n_conversations", "must be in [1, 100000]", self.n_conversations)
        _check(self.min_turns >= 4, "min_turns", "must be >= 4", self.min_turns)
        _check(self.mean_turns >= self.min_turns, "mean_turns", "must be >= min_turns", self.mean_turns)
        for name in (
            "turns_sd",
            "score_noise",
            "listener_mood_sd",
            "turn_noise",
            "face_noise",
            "face_coupling",
            "smile_noise",
            "gaze_noise",
            "prosody_noise",
            "reaction_lag",
        ):
            _check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        _check(-5 <= self.listener_mood_mean <= 5, "listener_mood_mean", "must be in [-5, 5]", self.listener_mood_mean)
        for name in ("nod_rate", "frame_dropout", "sentiment_coupling"):
            v = getattr(self, name)
            _check(0 <= v <= 1, name, "must be in [0, 1]", v)


@dataclass
class DataParams:
    """How a corpus is read into canonical form (README, "Real data"; the authors' conventions)."""

    segmentation: Literal["cliffhanger", "audiophile", "backbiter"] = "cliffhanger"
    """CANDOR transcript: cliffhanger (the authors'), audiophile or backbiter."""
    listener: Literal["first_speaker", "second_speaker"] = "first_speaker"
    """Whose survey is R_GE: ``first_speaker`` (authors': the first speaker is the User) or ``second_speaker``."""
    score_item: str = "overall_affect"
    """CANDOR survey column used as R_GE."""
    score_scale: float = 10.0
    """Multiplier from the survey scale to the 0-100 scale (CANDOR 1-10 × 10)."""
    score_range: tuple[float, float] = (1.0, 10.0)
    """Valid range of the raw survey value; values outside are a bad-input error."""
    merge_consecutive: bool = True
    """Merge consecutive rows of the same speaker into one turn (audiophile splits turns on pauses)."""
    esconv_score: Literal["empathy", "relevance", "intensity_drop"] = "empathy"
    """ESConv session score: empathy, relevance or intensity_drop (initial - final emotion intensity)."""
    history_turns: int = 20
    """Turns of dialogue history kept for a pair (authors: last 20)."""
    history_chars: int = 4000
    """Left-truncate the history text to at most this many characters (keeps the most recent)."""
    bad_conversations: Literal["skip", "error"] = "skip"
    """``skip`` (counted and reported) or ``error`` for empty / one-speaker / unscored conversations."""

    def validate(self) -> None:
        _check_choices(self)
        _check(self.score_scale > 0, "score_scale", "must be > 0", self.score_scale)
        _check(
            len(self.score_range) == 2 and self.score_range[0] < self.score_range[1],
            "score_range",
            "must be [low, high] with low < high",
            self.score_range,
        )
        _check(self.history_turns >= 1, "history_turns", "must be >= 1", self.history_turns)
        _check(self.history_chars >= 1, "history_chars", "must be >= 1", self.history_chars)


@dataclass
class SplitParams:
    """Conversation-level splits (reward training / held-out test / RL prompts), as in the papers."""

    reward_train: float = 0.36
    """Fraction of conversations that train reward functions (LLM-GELI: 360 of 1000)."""
    reward_test: float = 0.04
    """Fraction held out, as whole conversations, to evaluate reward functions (LLM-GELI: 40)."""
    rl: float = 0.60
    """Fraction whose contexts prompt the policy during RL (LLM-GELI: 600)."""
    seed: int = 0
    """Seed of the shuffle; conversation ids are sorted first, so the split is reproducible."""

    def validate(self) -> None:
        _check_choices(self)
        for name in ("reward_train", "reward_test", "rl"):
            v = getattr(self, name)
            _check(0 <= v <= 1, name, "must be in [0, 1]", v)
        total = self.reward_train + self.reward_test + self.rl
        _check(abs(total - 1) < 1e-6, "reward_train", "fractions must sum to 1", total)


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
REWARD_METHODS: tuple[str, ...] = typing.get_args(RewardMethod)
GE_METHODS: tuple[str, ...] = typing.get_args(GeMethod)
LI_SIGNALS: tuple[str, ...] = typing.get_args(LiSignal)
GE_FORMS: tuple[str, ...] = typing.get_args(GeForm)
ENCODERS: tuple[str, ...] = typing.get_args(Encoder)


@dataclass
class RewardParams:
    """Reward model r_θ(s_t, a_t) and its training (GELI Sec. 4-5, App. A, F).

    By default the encoder is frozen and its features are cached per pair, so
    every method and seed trains only the head (see :mod:`geli_lib.reward_model`);
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
    """LLM-GELI reward decomposition (seed 003 Sec. 4.1, App. J; see :mod:`geli_lib.llm`).

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


#: RL algorithms of the same TRL release (trl==1.12.0); PPO is the papers'.
RlAlgorithm = Literal["ppo", "rloo", "grpo"]
RL_ALGORITHMS: tuple[str, ...] = typing.get_args(RlAlgorithm)


@dataclass
class RLParams:
    """RL adaptation of the policy against a learned r_θ (GELI Sec. 5.3, App. F).

    Defaults are the paper's settings where they fit any machine; profiles shrink
    batch, steps and lengths. "gamma = 0.05" in GELI App. F is read as TRL's
    ``PPOConfig.gamma`` (the discount of GAE): App. F lists TRL 0.x PPOConfig
    field names (``batch_size``, ``cliprange``, ``learning_rate``, ``gamma``,
    ``use_score_norm``), and the KL weight of eq. 1 is the separate, adaptive
    ``init_kl_coef`` = 0.15 of the authors' script. Only the ``gpu`` profile
    uses 0.05; the others keep TRL's discount 1.0 (see :mod:`geli_lib.rl`).
    """

    algorithm: RlAlgorithm = "ppo"
    """ppo (``trl.experimental.ppo``, the papers'), rloo or grpo (same TRL release, same reward as a callable)."""
    reward_fns: list[str] = field(
        default_factory=lambda: ["GELI: RRD + VA", "GE: RRD (K=32)", "LI: Visual Affect", "LI: Language Sentiment"]
    )
    """Reward functions (reward-table row names) adapted when the notebook asks for ``all`` (GELI Figs. 7-10)."""
    steps: int = 200
    """PPO updates (one rollout batch each); paper: 200."""
    batch_size: int = 24
    """Prompts per update (paper: 24)."""
    mini_batch_size: int = 4
    """Prompts per optimiser step inside an update (paper: 4); must divide ``batch_size``."""
    ppo_epochs: int = 4
    """Passes over each rollout batch (TRL default 4; 1 is ~2.5x faster on CPU)."""
    lr: float = 1.4e-5
    """Adam learning rate of the LoRA adapter and the value model (paper: 1.4e-5), constant schedule."""
    cliprange: float = 0.2
    """PPO ratio clip (paper: 0.2)."""
    cliprange_value: float = 0.2
    """Value-function clip (TRL default)."""
    vf_coef: float = 0.1
    """Weight of the value loss (TRL default)."""
    gamma: float = 1.0
    """Discount of GAE (TRL's ``gamma``); the paper's "gamma = 0.05" is this (gpu profile; see the class docstring)."""
    gae_lambda: float = 0.95
    """λ of GAE (TRL default)."""
    kl_coef: float = 0.15
    """Initial weight of the KL penalty to the reference policy (eq. 1's KL weight; authors: 0.15)."""
    adaptive_kl: bool = True
    """Adapt ``kl_coef`` towards ``kl_target`` (Ziegler et al. 2019, the authors' TRL 0.x default)."""
    kl_target: float = 6.0
    """Target KL (nats per response) of the adaptive controller (TRL 0.x default 6)."""
    kl_horizon: float = 10000.0
    """Horizon of the adaptive controller, in episodes (TRL 0.x default 10000)."""
    score_norm: bool = True
    """Normalise r_θ's scores by their running mean and SD before PPO (paper: use_score_norm = true); for rloo / grpo:
    standardise the advantages (RLOO ``normalize_advantages``, GRPO ``scale_rewards="group"``)."""
    response_length: int = 48
    """Most new tokens per response during RL (paper: 32-128)."""
    temperature: float = 0.7
    """Sampling temperature of RL rollouts (TRL default)."""
    max_prompt_tokens: int = 512
    """Prompt budget: a longer dialogue history is left-truncated (oldest tokens dropped) to fit."""
    history_turns: int = 10
    """Turns of dialogue history shown to the policy (the reward model sees the same lines)."""
    lora_r: int = 24
    """LoRA rank (paper: 24)."""
    lora_alpha: int = 48
    """LoRA α (paper: 48)."""
    lora_dropout: float = 0.05
    """LoRA dropout (paper: 0.05; TRL switches dropout off in PPO, so it is inert there)."""
    group_size: int = 4
    """Completions per prompt for rloo / grpo (must divide ``batch_size``, which there counts completions: batch_size /
    group_size prompts per update)."""
    train_contexts: int = 0
    """RL prompts drawn from the rl split (0 = every AI turn of its training conversations)."""
    eval_conversations: int = 4
    """rl-split conversations held out of RL training; generations come from them."""
    eval_contexts: int = 8
    """Held-out contexts per corpus in generations.csv: the paired test of adapted vs base runs over them."""
    curve_contexts: int = 8
    """Fixed held-out contexts (the first of the held-out set) the evaluation curve scores, greedy, every
    ``eval_every`` updates."""
    eval_every: int = 10
    """Updates between two points of the evaluation curve (plus one before the first update)."""
    gen_tokens: int = 64
    """Most new tokens of a generation in generations.csv."""
    gen_do_sample: bool = False
    """Sample generations (seeded) instead of greedy decoding."""
    save_every: int = 10
    """Save the adapter (and the resume state) every this many updates."""
    train_value_backbone: bool = True
    """Train the value model's whole SmolLM2 backbone (TRL's default); false trains only its scalar head on frozen
    features, which halves a CPU update and keeps checkpoints small."""
    bf16: bool = False
    """bf16 autocast in TRL (gpu; ~15% faster on CPU too but off there for exactness)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on GPU, slows CPU)."""

    def validate(self) -> None:
        _check_choices(self)
        _check(len(self.reward_fns) >= 1, "reward_fns", "must name at least one reward function", self.reward_fns)
        for name in (
            "steps",
            "batch_size",
            "mini_batch_size",
            "ppo_epochs",
            "response_length",
            "history_turns",
            "lora_r",
            "lora_alpha",
            "group_size",
            "eval_contexts",
            "gen_tokens",
            "save_every",
            "curve_contexts",
            "eval_every",
        ):
            _check(getattr(self, name) >= 1, name, "must be >= 1", getattr(self, name))
        _check(
            self.batch_size % self.mini_batch_size == 0,
            "mini_batch_size",
            "must divide batch_size",
            self.mini_batch_size,
        )
        _check(
            self.algorithm == "ppo" or self.batch_size % self.group_size == 0,
            "group_size",
            "must divide batch_size for rloo / grpo",
            self.group_size,
        )
        for name in ("lr", "temperature", "kl_target", "kl_horizon"):
            _check(getattr(self, name) > 0, name, "must be > 0", getattr(self, name))
        for name in ("cliprange", "cliprange_value", "vf_coef", "kl_coef"):
            _check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            _check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]", getattr(self, name))
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)", self.lora_dropout)
        _check(
            self.max_prompt_tokens >= 96,
            "max_prompt_tokens",
            "must be >= 96 (the prompt's own template)",
            self.max_prompt_tokens,
        )
        _check(self.train_contexts >= 0, "train_contexts", "must be >= 0", self.train_contexts)
        _check(self.eval_conversations >= 1, "eval_conversations", "must be >= 1", self.eval_conversations)


@dataclass
class EvalParams:
    """Evaluation of the adapted agents' generations: automatic scores and the human-evaluation kit.

    See :mod:`geli_lib.generation_eval` (automatic) and :mod:`geli_lib.human_eval`
    (GELI App. B / Table 2; LLM-GELI App. A, Tables 1-3, Fig. 5).
    """

    base_model: str = "base"
    """Model name in generations.csv that significance tests compare against (the unadapted policy)."""
    distinct_n: list[int] = field(default_factory=lambda: [1, 2])
    """n of the distinct-n diversity scores (unique n-grams / all n-grams over a model's responses)."""
    repetition_n: int = 2
    """n of the repetition score: share of a response's word n-grams that repeat an earlier one in it."""
    human_items: int = 100
    """Contexts per seed sampled into the annotation kit (GELI: 100; LLM-GELI: 100-150)."""
    human_seed: int = 0
    """Seed of the item sample and of the per-item shuffle of model order (the blinding)."""
    human_spread: Literal["seed", "annotator"] = "seed"
    """What the ± of the human table spans: ``seed`` (per-seed percentages, as the papers) or ``annotator``."""
    permutations: int = 20000
    """Monte-Carlo sign flips of the paired permutation test when exact enumeration is too large."""

    def validate(self) -> None:
        _check_choices(self)
        _check(
            len(self.distinct_n) >= 1 and all(n >= 1 for n in self.distinct_n),
            "distinct_n",
            "must list n >= 1",
            self.distinct_n,
        )
        _check(self.repetition_n >= 1, "repetition_n", "must be >= 1", self.repetition_n)
        _check(self.human_items >= 1, "human_items", "must be >= 1", self.human_items)
        _check(self.permutations >= 100, "permutations", "must be >= 100", self.permutations)
        _check(bool(self.base_model), "base_model", "must name a model", self.base_model)


@dataclass
class FeatureParams:
    """Listener feature extraction from video and audio (LLM-GELI §5.1; geli_lib.features, face, prosody)."""

    sample_fps: float = 5.0
    """Video frames analysed per second (face, smile, gaze, emotion, nods); the rest are skipped.
    Keep it >= 5: nods are 1-2.5 Hz oscillations, and at 4 fps a 2 Hz nod aliases away (measured)."""
    detect_width: int = 320
    """Width (px) the frame is scaled to for Haar face detection (speed; the crops use full resolution)."""
    nod_window: float = 1.0
    """Seconds of face-centre track, centred on each second, in which a nod is looked for
    (1 s: the second itself; wider windows let a nod spill into the still seconds beside it)."""
    workers: int = 2
    """Worker processes of ``python -m geli_lib.features`` (one recording per worker)."""

    def validate(self) -> None:
        _check_choices(self)
        _check(0 < self.sample_fps <= 60, "sample_fps", "must be in (0, 60]", self.sample_fps)
        _check(self.detect_width >= 64, "detect_width", "must be >= 64", self.detect_width)
        _check(
            self.nod_window >= 3 / self.sample_fps,
            "nod_window",
            "must hold at least 3 sampled frames (>= 3 / sample_fps)",
            self.nod_window,
        )
        _check(self.workers >= 1, "workers", "must be >= 1", self.workers)


#: ``compute.scheduler`` values other than an address (see :class:`ComputeParams`).
SCHEDULERS = ("serial", "local", "slurm")
#: Environment variables that set ``compute.scheduler`` / ``compute.workers`` for every
#: :func:`load_params` of a process: how ``python -m geli_lib run --scheduler`` reaches the notebooks'
#: kernels (where a cluster runs changes no result, so it is no notebook parameter).
COMPUTE_ENV = {"scheduler": "GELI_SCHEDULER", "workers": "GELI_WORKERS"}


@dataclass
class SlurmParams:
    """The SLURM jobs of ``compute.scheduler: slurm``: each job is one Dask worker (``dask_jobqueue.SLURMCluster``).

    ``queue``, ``cores``, ``memory`` and ``walltime`` have no default: a wrong guess
    would be rejected by the queue, or worse, accepted and killed mid-run.
    """

    queue: str = ""
    """SLURM partition the jobs go to (``#SBATCH -p``); required."""
    cores: int = 0
    """CPU cores per job (``--cpus-per-task``); the worker runs that many tasks at once on a CPU job; required."""
    memory: str = ""
    """Memory per job, e.g. ``16GB`` (``--mem``; also the worker's memory limit); required."""
    gpus: int = 0
    """GPUs per job: 0, or 1 (``--gres=gpu:1`` and the worker resource ``GPU=1``). One worker uses one GPU:
    for more GPUs ask for more jobs."""
    walltime: str = ""
    """Longest run of a job, ``HH:MM:SS`` or ``D-HH:MM:SS`` (``-t``); required."""
    jobs: int = 1
    """SLURM jobs (Dask workers) submitted when the grid starts; they end when it does."""
    directives: list[str] = field(default_factory=list)
    """Extra ``#SBATCH`` options of each job, e.g. ``["--account=myproject"]``."""

    def validate(self) -> None:
        _check_choices(self)
        _check(self.cores >= 0, "cores", "must be >= 0", self.cores)
        _check(self.gpus in (0, 1), "gpus", "must be 0 or 1 (one GPU per worker; more jobs for more GPUs)", self.gpus)
        _check(self.jobs >= 1, "jobs", "must be >= 1", self.jobs)
        _check(
            not self.memory or re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", self.memory) is not None,
            "memory",
            "must be an amount such as 16GB",
            self.memory,
        )
        _check(
            not self.walltime or re.fullmatch(r"(\d+-)?\d{1,3}:\d{2}:\d{2}", self.walltime) is not None,
            "walltime",
            "must be HH:MM:SS or D-HH:MM:SS",
            self.walltime,
        )
        _check(
            all(d.startswith("-") for d in self.directives),
            "directives",
            "must be sbatch options starting with -",
            self.directives,
        )

    def missing(self) -> list[str]:
        """The required fields left unset."""
        return [name for name in ("queue", "cores", "memory", "walltime") if not getattr(self, name)]


@dataclass
class ComputeParams:
    """Where the reward-function grid (methods × seeds) runs; see :mod:`geli_lib.compute`.

    Where a task runs changes no result: a task trains with the same torch
    threads as this process (``threads``), and this process writes everything.
    So these settings never make a run ad hoc and never re-run a stage.
    """

    scheduler: str = "serial"
    """``serial`` (in this process, one task after the other: the default), ``local`` (an embedded Dask
    LocalCluster of ``workers`` processes), ``tcp://HOST:PORT`` (an existing ``dask scheduler``), or
    ``slurm`` (SLURM jobs as Dask workers, see ``slurm``). Also ``$GELI_SCHEDULER`` / ``--scheduler``."""
    workers: int = 2
    """Worker processes of ``local`` (one task each at a time). Also ``$GELI_WORKERS`` / ``--workers``."""
    threads: int = 0
    """torch threads of a task on a worker; 0 = as many as this process uses, so a task gives bit for bit
    what the serial path gives (matrix products may sum in another order on another thread count).
    1 keeps several workers on one machine from oversubscribing its cores, at the price of possible
    last-bit differences."""
    slurm: SlurmParams = field(default_factory=SlurmParams)
    """The SLURM jobs of ``scheduler: slurm``."""

    def validate(self) -> None:
        _check_choices(self)
        _check(
            self.scheduler in SCHEDULERS or re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d+", self.scheduler) is not None,
            "scheduler",
            "must be serial, local, slurm or a scheduler address tcp://HOST:PORT",
            self.scheduler,
        )
        _check(self.workers >= 1, "workers", "must be >= 1", self.workers)
        _check(self.threads >= 0, "threads", "must be >= 0", self.threads)
        if self.scheduler == "slurm":
            for name in self.slurm.missing():
                _check(False, f"slurm.{name}", "is required with scheduler: slurm", getattr(self.slurm, name))


@dataclass
class StudyParams:
    """One profile: everything a run of the notebook chain needs."""

    profile: str = "smoke"
    """Profile name: smoke, cpu or gpu."""
    corpus: str = "simulated"
    """simulated | candor | esconv | soda."""
    data_path: str = ""
    """Folder (CANDOR), JSON file (ESConv) or JSON/JSONL file (SODA) of real data; empty for simulated."""
    seed: int = 0
    """Seed of single-seed steps."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of multi-seed tables (mean ± sd)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """torch device: cpu or cuda."""
    notebooks: list[str] = field(default_factory=lambda: ["00_data"])
    """Notebook chain run by ``make study``, in order (names without .ipynb)."""
    simulation: SimulationParams = field(default_factory=SimulationParams)
    """Simulated corpus knobs."""
    data: DataParams = field(default_factory=DataParams)
    """Loader conventions."""
    splits: SplitParams = field(default_factory=SplitParams)
    """Conversation splits."""
    reward: RewardParams = field(default_factory=RewardParams)
    """Reward model and reward-function training."""
    llm: LLMParams = field(default_factory=LLMParams)
    """LLM-GELI reward decomposition."""
    rl: RLParams = field(default_factory=RLParams)
    """RL adaptation of the policy (PPO + LoRA)."""
    eval: EvalParams = field(default_factory=EvalParams)
    """Evaluation of generations: automatic scores and the human-evaluation kit."""
    features: FeatureParams = field(default_factory=FeatureParams)
    """Listener feature extraction from recordings (video, audio)."""
    compute: ComputeParams = field(default_factory=ComputeParams)
    """Where the reward-function grid runs: in this process, or on a Dask cluster."""
    adhoc: str = ""
    """Set by :func:`load_params`, never in a profile: the parameters an override changed from the profile's file
    (other than ``corpus`` and ``data_path``), e.g. ``reward.lam=0.1``; empty for the study's own runs."""

    @property
    def study_key(self) -> str:
        """The study's own results for this profile and corpus: the profile for the default
        (simulated) corpus, ``<profile>/<corpus>`` for any other. An ad-hoc run reads earlier
        stages' tables from here (06 reads 02-05's) and writes under :attr:`results_key`."""
        return self.profile if self.corpus == "simulated" else f"{self.profile}/{self.corpus}"

    @property
    def results_key(self) -> str:
        """Where this run's results go under the results root: :attr:`study_key`, so runs on
        different corpora never overwrite each other; an ad-hoc run adds ``adhoc/<changed parameters>``."""
        return f"{self.study_key}/{ADHOC_DIR}/{self.adhoc}" if self.adhoc else self.study_key

    def validate(self) -> None:
        _check_choices(self)
        _check(self.profile in PROFILES, "profile", f"must be one of {PROFILES}", self.profile)
        _check(self.corpus in CORPORA, "corpus", f"must be one of {CORPORA}", self.corpus)
        _check(
            self.corpus == "simulated" or bool(self.data_path),
            "data_path",
            f"is required for corpus {self.corpus!r}",
            self.data_path,
        )
        _check(len(self.seeds) >= 1, "seeds", "must list at least one seed", self.seeds)
        c = self.compute
        # Every worker of a local cluster would see the same cuda:0; one GPU runs one task at a time.
        _check(
            not (self.device == "cuda" and c.scheduler == "local" and c.workers != 1),
            "compute.workers",
            "must be 1 with device cuda and scheduler local (the workers share one GPU)",
            c.workers,
        )
        _check(
            not (self.device == "cuda" and c.scheduler == "slurm" and c.slurm.gpus == 0),
            "compute.slurm.gpus",
            "must be 1 with device cuda (the jobs need a GPU)",
            c.slurm.gpus,
        )
        for nb in self.notebooks:
            _check(
                (REPO_ROOT / "notebooks" / f"{nb}.ipynb").exists(),
                "notebooks",
                "names a notebook that does not exist",
                nb,
            )


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field_name, self.message = field_name, message


def _check(ok: bool, field_name: str, rule: str, value: Any) -> None:
    if not ok:
        raise _FieldError(field_name, f"{rule}, got {value!r}")


def _check_choices(obj: Any) -> None:
    """Every ``Literal[...]``-typed field of the dataclass ``obj`` holds one of the choices its type names."""
    for name, tp in typing.get_type_hints(type(obj)).items():
        if typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
            _check(
                getattr(obj, name) in choices,
                name,
                f"must be one of {', '.join(map(repr, choices))}",
                getattr(obj, name),
            )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise naming ``where``."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _FieldError(where, f"expected a mapping, got {value!r}")
        return _build(tp, value, where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _FieldError(where, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(value) != len(args):
            raise _FieldError(where, f"expected a list of {len(args)} values, got {list(value)!r}")
        items = [_coerce(v, args[0] if origin is list else args[i], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is Literal:  # a choice: a string among the type's
        choice = _coerce(value, str, where)
        if choice not in typing.get_args(tp):
            raise _FieldError(where, f"must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {choice!r}")
        return choice
    if tp is bool:
        if not isinstance(value, bool):
            raise _FieldError(where, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(where, f"expected an integer, got {value!r}")
        if abs(value) > MAX_INT:
            raise _FieldError(where, f"expected an integer of at most {MAX_INT}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _FieldError(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .inf and .nan as numbers
            raise _FieldError(where, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _FieldError(where, f"expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise _FieldError(prefix + unknown[0], f"unknown parameter (known: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    obj = cls(**kwargs)
    try:
        obj.validate()
    except _FieldError as e:
        raise _FieldError(prefix + e.field_name, e.message) from None
    return obj


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` section by section; ``None`` leaves a value as it is
    (a notebook parameter left at ``None`` means "the profile's")."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); the first would be silently dropped",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read_profile(path: Path) -> dict[str, Any]:
    """The mapping of a parameter file; an unreadable, empty or duplicated one is a :class:`ParamError`."""
    if not path.exists():
        raise ParamError(f"{path}: parameter file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ParamError(
            f"{path}: not UTF-8 text (line {line}, byte {e.start}: "
            f"{e.object[e.start : e.start + 1]!r}); save the file as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raise ParamError(
            f"{path}: empty parameter file (a profile must set its parameters; copy params/smoke.yaml to start)"
        )
    if not isinstance(raw, dict):
        raise ParamError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"reward": {"lam": 0.1}}`` -> ``{"reward.lam": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def adhoc_name(profile: dict[str, Any], run: dict[str, Any]) -> str:
    """The folder name of a run whose parameters (``run``, :func:`to_dict`) differ from the
    profile's: ``field=value`` of each difference, joined by ``_``; empty when none differ.

    A long or unusual name is cut and given a hash, so it stays one safe folder name. The
    ``compute`` section never counts: where the work runs changes no result.
    """
    a, b = _flatten(profile), _flatten(run)
    diffs = [f"{k}={b[k]}" for k in sorted(b) if a.get(k) != b[k] and not k.startswith("compute.")]
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "", "_".join(diffs).replace(" ", ""))
    if len(name) > 80:
        from geli_lib.io import content_key

        name = f"{name[:63]}-{content_key(diffs)}"
    return name


def _lookup(tree: dict[str, Any], dotted: str) -> bool:
    """Whether the dotted field (``reward.lam``, ``seeds[0]``) is set in ``tree``."""
    node: Any = tree
    for part in re.sub(r"\[\d+\]", "", dotted).split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return False
        node = node[part]
    return True


def _assignments(source: str) -> dict[str, Any]:
    """``name = value`` lines at the top level of a code cell -> the value (a Python literal, else
    its source text); empty when the cell does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = ast.unparse(node.value)
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    out[t.id] = value
    return out


def injected_parameters(history: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the notebook's own cells set before papermill's cell, what papermill's cell sets).

    ``history`` is the kernel's executed cells in order. Papermill injects a cell
    starting with ``# Parameters`` right after the notebook's parameters cell; a
    name it sets that no earlier cell set is not a parameter of the notebook.
    Both are empty when the notebook was not run by papermill.
    """
    cells = [i for i, src in enumerate(history) if src.startswith("# Parameters\n")]
    if not cells:
        return {}, {}
    declared: dict[str, Any] = {}
    for src in history[: cells[-1]]:
        declared.update(_assignments(src))
    return declared, _assignments(history[cells[-1]])


def _field_types(cls: type | None = None) -> dict[str, set[Any]]:
    """Every field name of :class:`StudyParams` and its sections -> the types it has there."""
    out: dict[str, set[Any]] = {}
    for name, tp in typing.get_type_hints(cls or StudyParams).items():
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            for k, v in _field_types(tp).items():
                out.setdefault(k, set()).update(v)
        else:
            out.setdefault(name, set()).add(tp)
    return out


def check_injected_types(injected: dict[str, Any]) -> None:
    """A ``-p`` value of a notebook parameter named like a study parameter must have its type.

    ``-p seed 1.7`` would otherwise run as seed 1 in a notebook that does
    ``int(seed)``; ``None`` (the notebook's "the profile's") is always allowed.
    """
    types = _field_types()
    for name, value in injected.items():
        kinds = types.get(name, set())
        if name in RUNNER_PARAMETERS or value is None or len(kinds) != 1:
            continue
        try:
            _coerce(value, next(iter(kinds)), name)
        except _FieldError as e:
            raise ParamError(f"papermill -p {e} (the study parameter {name} is of that type)") from None


def _kernel_history() -> list[str]:
    """The cells executed so far when running inside an IPython kernel, else nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    shell = get_ipython()
    return [str(c) for c in shell.user_ns.get("In", [])] if shell is not None else []


def _param_error(e: _FieldError, path: Path, from_override: bool) -> ParamError:
    """The error naming where the bad value came from: the file, or an override of it."""
    if from_override:
        return ParamError(
            f"override {e} (given as a notebook parameter, papermill -p, a command-line "
            f"option or ${' / $'.join(COMPUTE_ENV.values())}, not read from {path})"
        )
    return ParamError(f"{path}: {e}")


def compute_from_env() -> dict[str, Any]:
    """``compute`` settings from :data:`COMPUTE_ENV` (unset or empty variables left out).

    ``GELI_WORKERS`` must be an integer; anything else is a :class:`ParamError` naming it.
    """
    out: dict[str, Any] = {}
    for name, var in COMPUTE_ENV.items():
        value = os.environ.get(var, "")
        if not value:
            continue
        if name == "workers":
            if not value.strip().isdigit():
                raise ParamError(f"${var}={value!r}: compute.workers must be a whole number")
            out[name] = int(value)
            continue
        out[name] = value
    return out


def load_params(profile: str = "smoke", params_dir: str | Path | None = None, **overrides: Any) -> StudyParams:
    """Load ``params/<profile>.yaml`` into validated :class:`StudyParams`.

    Keyword overrides replace top-level fields (``corpus="esconv"``) or, given
    as dicts, merge into sections (``simulation={"n_conversations": 5}``).
    ``None`` overrides are ignored, so notebooks can pass their parameters as-is.
    ``$GELI_SCHEDULER`` and ``$GELI_WORKERS`` set ``compute`` under the overrides
    (:func:`compute_from_env`).
    """
    params_dir = Path(params_dir) if params_dir else PARAMS_DIR
    path = params_dir / f"{profile}.yaml"
    declared, injected = injected_parameters(_kernel_history())
    unknown = sorted(set(injected) - set(declared))
    if unknown:
        raise ParamError(
            f"papermill -p {', '.join(unknown)}: not a parameter of this notebook "
            f"(its parameters: {', '.join(sorted(declared))}); the run is stopped rather "
            "than run on the defaults"
        )
    check_injected_types(injected)
    overrides = _merge({"compute": compute_from_env()}, overrides)
    if profile not in PROFILES:
        raise ParamError(f"profile {profile!r} unknown: choose one of {PROFILES}")
    file_raw = _read_profile(path)
    if "adhoc" in file_raw or "adhoc" in overrides:
        where = str(path) if "adhoc" in file_raw else "override"
        raise ParamError(f"{where}: adhoc is set by load_params from the overrides, not a parameter")
    file_raw.setdefault("profile", profile)
    # What the study itself runs: the file with the runner's own choices (corpus, data path).
    study_raw = _merge(file_raw, {k: overrides.get(k) for k in ("corpus", "data_path")})
    try:
        study = _build(StudyParams, study_raw)
    except _FieldError as e:
        raise _param_error(e, path, from_override=_lookup(overrides, e.field_name)) from None
    try:
        params = _build(StudyParams, _merge(study_raw, overrides))
    except _FieldError as e:  # the study's parameters were valid: an override is to blame
        raise _param_error(e, path, from_override=True) from None
    if injected:  # run by papermill: named by what was typed, including parameters of the notebook alone
        changed = {k: v for k, v in injected.items() if k not in RUNNER_PARAMETERS and v != declared[k]}
        params.adhoc = adhoc_name({k: declared[k] for k in changed}, changed)
    else:
        params.adhoc = adhoc_name(to_dict(study), to_dict(params))
    return params


def to_dict(params: Any) -> dict[str, Any]:
    """Plain-dict form of a parameter dataclass (for manifests and cache keys)."""
    return dataclasses.asdict(params)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring, read from the source (for the book's parameter tables)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(getattr(nxt, "value", None), ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)  # type: ignore[union-attr, attr-defined]
    return docs
