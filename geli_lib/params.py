"""Profiles and parameters: typed dataclasses, validated on load.

A profile (``smoke``, ``cpu``, ``gpu``) is one YAML file ``params/<profile>.yaml``
whose sections map onto the dataclasses below. Every field has a docstring (the
string literal under it). Loading checks unknown keys, types and ranges and
raises :class:`ParamError` naming the file and the dotted field, e.g.
``params/cpu.yaml: simulation.score_noise: must be >= 0, got -1``.

Notebooks take ``profile``, ``corpus`` and ``data_path`` as papermill
parameters and call :func:`load_params` with them as overrides, so any notebook
runs on real data by parameters alone.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
PROFILES = ("smoke", "cpu", "gpu")


class ParamError(ValueError):
    """A parameter file or override is invalid; the message names file and field."""


@dataclass
class SimulationParams:
    """Knobs of the simulated corpus (DESIGN.md §6)."""

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
        _check(self.n_conversations >= 1, "n_conversations", "must be >= 1", self.n_conversations)
        _check(self.min_turns >= 4, "min_turns", "must be >= 4", self.min_turns)
        _check(self.mean_turns >= self.min_turns, "mean_turns", "must be >= min_turns", self.mean_turns)
        for name in ("turns_sd", "score_noise", "listener_mood_sd", "turn_noise", "face_noise",
                     "face_coupling", "smile_noise", "gaze_noise", "prosody_noise", "reaction_lag"):
            _check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        _check(-5 <= self.listener_mood_mean <= 5, "listener_mood_mean", "must be in [-5, 5]",
               self.listener_mood_mean)
        for name in ("nod_rate", "frame_dropout", "sentiment_coupling"):
            v = getattr(self, name)
            _check(0 <= v <= 1, name, "must be in [0, 1]", v)


@dataclass
class DataParams:
    """How a corpus is read into canonical form (DESIGN.md §5; the authors' conventions)."""

    segmentation: str = "cliffhanger"
    """CANDOR transcript: cliffhanger (the authors'), audiophile or backbiter."""
    listener: str = "first_speaker"
    """Whose survey is R_GE: ``first_speaker`` (authors': the first speaker is the User) or ``second_speaker``."""
    score_item: str = "overall_affect"
    """CANDOR survey column used as R_GE."""
    score_scale: float = 10.0
    """Multiplier from the survey scale to the 0-100 scale (CANDOR 1-10 × 10)."""
    score_range: tuple[float, float] = (1.0, 10.0)
    """Valid range of the raw survey value; values outside are a bad-input error."""
    merge_consecutive: bool = True
    """Merge consecutive rows of the same speaker into one turn (audiophile splits turns on pauses)."""
    esconv_score: str = "empathy"
    """ESConv session score: empathy, relevance or intensity_drop (initial - final emotion intensity)."""
    history_turns: int = 20
    """Turns of dialogue history kept for a pair (authors: last 20)."""
    history_chars: int = 4000
    """Left-truncate the history text to at most this many characters (keeps the most recent)."""
    bad_conversations: str = "skip"
    """``skip`` (counted and reported) or ``error`` for empty / one-speaker / unscored conversations."""

    def validate(self) -> None:
        _check(self.segmentation in ("cliffhanger", "audiophile", "backbiter"), "segmentation",
               "must be cliffhanger, audiophile or backbiter", self.segmentation)
        _check(self.listener in ("first_speaker", "second_speaker"), "listener",
               "must be first_speaker or second_speaker", self.listener)
        _check(self.score_scale > 0, "score_scale", "must be > 0", self.score_scale)
        _check(len(self.score_range) == 2 and self.score_range[0] < self.score_range[1],
               "score_range", "must be [low, high] with low < high", self.score_range)
        _check(self.esconv_score in ("empathy", "relevance", "intensity_drop"), "esconv_score",
               "must be empathy, relevance or intensity_drop", self.esconv_score)
        _check(self.history_turns >= 1, "history_turns", "must be >= 1", self.history_turns)
        _check(self.history_chars >= 1, "history_chars", "must be >= 1", self.history_chars)
        _check(self.bad_conversations in ("skip", "error"), "bad_conversations",
               "must be skip or error", self.bad_conversations)


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
        for name in ("reward_train", "reward_test", "rl"):
            v = getattr(self, name)
            _check(0 <= v <= 1, name, "must be in [0, 1]", v)
        total = self.reward_train + self.reward_test + self.rl
        _check(abs(total - 1) < 1e-6, "reward_train", "fractions must sum to 1", total)


#: Reward-function methods (GELI Table 1 plus the sum-decomposition and the oracle ceiling).
REWARD_METHODS = ("mean", "mode", "sum", "ircr", "rudder", "rrd", "va", "ls", "geli", "oracle")
GE_METHODS = ("sum", "ircr", "rudder", "rrd")
LI_SIGNALS = ("va", "ls")
ENCODERS = ("minilm", "smollm2")


@dataclass
class RewardParams:
    """Reward model r_θ(s_t, a_t) and its training (GELI Sec. 4-5, App. A, F; DESIGN.md §5).

    By default the encoder is frozen and its features are cached per pair, so
    every method and seed trains only the head (see :mod:`geli_lib.reward_model`);
    ``finetune_encoder`` trains it too.
    """

    encoder: str = "minilm"
    """Text encoder: ``minilm`` (all-MiniLM-L6-v2, d=384, mean-pooled and L2-normalised) or ``smollm2`` (SmolLM2-135M backbone, mean-pooled last hidden state, d=576)."""
    max_tokens: int = 256
    """Encoder input length; longer texts keep their END (left-truncation: the response and the most recent history)."""
    encode_batch_size: int = 64
    """Pairs per encoder forward pass."""
    hidden: int = 128
    """Width of the head's hidden layer (authors: Linear(d,128) → Dropout → ReLU → Linear(128,1) → Tanh)."""
    dropout: float = 0.2
    """Dropout of the head (authors: 0.2)."""
    output_scale: float = 0.0
    """Per-turn reward bound: r̂ = output_scale · tanh(head(x)), on the 0-100 score scale. 0 = auto: ``auto_scale_margin`` × the largest per-turn share R/T among the training conversations (oracle: also ≥ margin × the largest |true reward|)."""
    auto_scale_margin: float = 1.25
    """Margin of the automatic ``output_scale`` over the largest training share R/T (1.25 keeps every share at tanh ≤ 0.8)."""
    lr: float = 1e-3
    """AdamW learning rate of the head (authors: 5e-6 for a fine-tuned BART; a frozen encoder's head needs more)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    epochs: int = 100
    """Passes over the training conversations (no early stopping)."""
    batch_conversations: int = 8
    """Whole conversations per optimiser step (authors: 1 for GE)."""
    ge_method: str = "rrd"
    """GE part of ``geli``: rrd, ircr, rudder or sum (eq. 4)."""
    li_signal: str = "va"
    """LI part of ``geli``: va (visual affect Γ, eq. 7) or ls (VADER language sentiment)."""
    lam: float = 0.5
    """λ of GELI eq. 2: L = λ·L_GE + (1-λ)·L_LI (paper: 0.5)."""
    K: int = 32
    """RRD sample size |I| per conversation (Table 1: 32 and 160)."""
    rrd_sampling: str = "ren"
    """How RRD draws its K indices: ``ren`` (Ren et al. / App. A: K distinct turns, with replacement only when K > T), ``with_replacement`` (the authors' code) or ``without_replacement`` (a conversation shorter than K contributes each turn once: its exact sum)."""
    rrd_bias_correction: bool = False
    """Ren et al.'s bias-corrected RRD: subtract the Monte-Carlo variance term from the loss."""
    rrd_T: str = "length"
    """T in (T/K)·Σ_K r̂ (eq. 9): ``length`` = the conversation's AI turns (Ren et al.) or ``fixed`` = ``rrd_T_fixed`` (authors' code)."""
    rrd_T_fixed: int = 160
    """T when ``rrd_T: fixed`` (authors: 160)."""
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
    """Fine-tune the text encoder jointly with the head (the authors fine-tuned BART). Costly: every step re-encodes its turns through the encoder with gradients; meant for the gpu profile."""
    encoder_lr: float = 2e-5
    """AdamW learning rate of the encoder's parameters when ``finetune_encoder`` (the head keeps ``lr``)."""

    def validate(self) -> None:
        _check(self.encoder in ENCODERS, "encoder", f"must be one of {ENCODERS}", self.encoder)
        _check(self.max_tokens >= 8, "max_tokens", "must be >= 8", self.max_tokens)
        _check(self.encode_batch_size >= 1, "encode_batch_size", "must be >= 1", self.encode_batch_size)
        _check(self.hidden >= 1, "hidden", "must be >= 1", self.hidden)
        _check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)", self.dropout)
        _check(self.output_scale >= 0, "output_scale", "must be >= 0 (0 = auto)", self.output_scale)
        _check(self.auto_scale_margin >= 1, "auto_scale_margin", "must be >= 1", self.auto_scale_margin)
        _check(self.lr > 0, "lr", "must be > 0", self.lr)
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0", self.weight_decay)
        _check(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
        _check(self.batch_conversations >= 1, "batch_conversations", "must be >= 1",
               self.batch_conversations)
        _check(self.ge_method in GE_METHODS, "ge_method", f"must be one of {GE_METHODS}", self.ge_method)
        _check(self.li_signal in LI_SIGNALS, "li_signal", f"must be one of {LI_SIGNALS}", self.li_signal)
        _check(0 <= self.lam <= 1, "lam", "must be in [0, 1]", self.lam)
        _check(self.K >= 1, "K", "must be >= 1", self.K)
        _check(self.rrd_sampling in ("ren", "with_replacement", "without_replacement"), "rrd_sampling",
               "must be ren, with_replacement or without_replacement", self.rrd_sampling)
        _check(self.rudder_aux_weight >= 0, "rudder_aux_weight", "must be >= 0", self.rudder_aux_weight)
        _check(self.rrd_T in ("length", "fixed"), "rrd_T", "must be length or fixed", self.rrd_T)
        _check(self.rrd_T_fixed >= 1, "rrd_T_fixed", "must be >= 1", self.rrd_T_fixed)
        _check(0 < self.li_positive <= 1, "li_positive", "must be in (0, 1]", self.li_positive)
        _check(-1 <= self.ls_threshold <= 1, "ls_threshold", "must be in [-1, 1]", self.ls_threshold)
        _check(self.va_min_words >= 0, "va_min_words", "must be >= 0", self.va_min_words)
        _check(self.rudder_hidden >= 1, "rudder_hidden", "must be >= 1", self.rudder_hidden)
        _check(self.rudder_epochs >= 0, "rudder_epochs", "must be >= 0", self.rudder_epochs)
        _check(self.encoder_lr > 0, "encoder_lr", "must be > 0", self.encoder_lr)


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
    device: str = "cpu"
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

    def validate(self) -> None:
        _check(self.profile in PROFILES, "profile", f"must be one of {PROFILES}", self.profile)
        _check(self.corpus in ("simulated", "candor", "esconv", "soda"), "corpus",
               "must be simulated, candor, esconv or soda", self.corpus)
        _check(self.corpus == "simulated" or bool(self.data_path), "data_path",
               f"is required for corpus {self.corpus!r}", self.data_path)
        _check(self.device in ("cpu", "cuda"), "device", "must be cpu or cuda", self.device)
        _check(len(self.seeds) >= 1, "seeds", "must list at least one seed", self.seeds)
        for nb in self.notebooks:
            _check((REPO_ROOT / "notebooks" / f"{nb}.ipynb").exists(), "notebooks",
                   "names a notebook that does not exist", nb)


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field_name, self.message = field_name, message


def _check(ok: bool, field_name: str, rule: str, value: Any) -> None:
    if not ok:
        raise _FieldError(field_name, f"{rule}, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise naming ``where``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _FieldError(where, f"expected a mapping, got {value!r}")
        return _build(tp, value, where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _FieldError(where, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        items = [_coerce(v, args[0] if origin is list else args[i], f"{where}[{i}]")
                 for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is bool:
        if not isinstance(value, bool):
            raise _FieldError(where, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(where, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _FieldError(where, f"expected a number, got {value!r}")
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
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_params(profile: str = "smoke", params_dir: str | Path | None = None,
                **overrides: Any) -> StudyParams:
    """Load ``params/<profile>.yaml`` into validated :class:`StudyParams`.

    Keyword overrides replace top-level fields (``corpus="esconv"``) or, given
    as dicts, merge into sections (``simulation={"n_conversations": 5}``).
    ``None`` overrides are ignored, so notebooks can pass their parameters as-is.
    """
    params_dir = Path(params_dir) if params_dir else PARAMS_DIR
    path = params_dir / f"{profile}.yaml"
    if profile not in PROFILES:
        raise ParamError(f"profile {profile!r} unknown: choose one of {PROFILES}")
    if not path.exists():
        raise ParamError(f"{path}: parameter file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamError(f"{path}: expected a mapping at the top level")
    raw = _merge(raw, {k: v for k, v in overrides.items() if v is not None})
    raw.setdefault("profile", profile)
    try:
        return _build(StudyParams, raw)
    except _FieldError as e:
        raise ParamError(f"{path}: {e}") from None


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
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and \
                isinstance(getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = str(nxt.value.value)  # type: ignore[attr-defined]
    return docs
