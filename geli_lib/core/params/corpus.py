"""The corpus sections: the simulated corpus, pair building, the conversation splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from geli_lib.core.params.base import _check, _check_choices


@dataclass
class SimulationParams:
    """Knobs of the simulated corpus (:mod:`geli_lib.corpus.simulation` documents what each one plants)."""

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
