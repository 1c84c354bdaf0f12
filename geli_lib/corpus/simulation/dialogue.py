"""One conversation: listener, persona and the turns drawn top to bottom."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from geli_lib.core.params import SimulationParams
from geli_lib.corpus.simulation.acts import (
    ACT_VALUE,
    ACTS,
    BAD_ACTS,
    HABIT_CONCENTRATION,
    HABIT_PRIOR,
    LONG_TURN_WORDS,
    QUESTION_ACTS,
    SKILL_A,
    SKILL_B,
    TASTE_ACTS,
    TASTE_SD,
    _skilled_cdf,
    context_fit,
)
from geli_lib.corpus.simulation.common import (
    _HAS_OPENER,
    _OPENER_PREFIX,
    EXPRESSIVENESS_SD,
    WORDS_PER_SECOND,
    _capitalise,
    _Dice,
    split_sentences,
)
from geli_lib.corpus.simulation.words import (
    AI_TEMPLATES,
    CODA,
    OPENERS,
    TIMEREFS,
    TONE,
    TONE_GOOD_Q,
    TONE_RATE,
    TOPIC_NAMES,
    TOPICS,
    USER_TEMPLATES,
)

# --------------------------------------------------------------------------- #
# One conversation                                                             #
# --------------------------------------------------------------------------- #


@dataclass
class Dialogue:
    """The turns of one conversation with their planted truth (before timing)."""

    roles: list[str] = field(default_factory=list)  # "User" | "AI"
    acts: list[str] = field(default_factory=list)  # AI act or User kind
    topics: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    valence: list[float] = field(default_factory=list)  # User turns: -1/0/1; AI: NaN
    tone: list[float] = field(default_factory=list)  # AI turns: -1/0/1 wording polarity; User: NaN
    fit: list[float] = field(default_factory=list)  # AI turns: context fit; User: NaN
    quality: list[float] = field(default_factory=list)  # AI turns: latent q_t; User: NaN


@dataclass
class Listener:
    mood: float
    taste: dict[str, float]
    expressiveness: float


@dataclass
class Persona:
    habit_cdf: tuple[float, ...]
    habits: dict[str, float]
    skill: float


def n_turns_for(params: SimulationParams, rng: np.random.Generator) -> int:
    """Conversation length: max(min_turns, round(N(mean_turns, turns_sd · mean_turns)))."""
    n = round(rng.normal(params.mean_turns, params.turns_sd * params.mean_turns))
    return max(params.min_turns, int(n))


def draw_listener(params: SimulationParams, rng: np.random.Generator) -> Listener:
    mood = float(rng.normal(params.listener_mood_mean, params.listener_mood_sd))
    taste = {a: float(x) for a, x in zip(TASTE_ACTS, rng.normal(0, TASTE_SD, len(TASTE_ACTS)))}
    return Listener(mood, taste, float(rng.normal(0, EXPRESSIVENESS_SD)))


def draw_persona(rng: np.random.Generator) -> Persona:
    habits = rng.dirichlet(HABIT_CONCENTRATION * np.array([HABIT_PRIOR[a] for a in ACTS]))
    return Persona(
        tuple(np.cumsum(habits).tolist()), dict(zip(ACTS, habits.tolist())), float(rng.beta(SKILL_A, SKILL_B))
    )


def _user_kind(prev_ai_act: str | None, dice: _Dice) -> str:
    """What the User does next depends on what the AI just did."""
    if prev_ai_act is None:
        return "greeting"
    if prev_ai_act in QUESTION_ACTS:
        return "answer" if dice.chance(0.7) else "story"
    if prev_ai_act in BAD_ACTS:
        return dice.pick(("reaction", "reaction", "statement", "question"))
    if prev_ai_act == "empathy":
        return dice.pick(("story", "statement"))
    return dice.pick(
        (
            "story",
            "story",
            "story",
            "statement",
            "statement",
            "statement",
            "statement",
            "question",
            "question",
            "reaction",
        )
    )


def _user_valence(kind: str, prev_valence: float, mood_dev: float, dice: _Dice) -> int:
    """Good or bad news; a happier listener tells more good news; bad news lingers."""
    if kind in ("greeting", "question", "reaction"):
        return 0
    if prev_valence < 0 and dice.chance(0.45):
        return -1
    p_neg = min(max(0.22 - 0.1 * mood_dev, 0.05), 0.6)
    p_pos = min(max(0.33 + 0.1 * mood_dev, 0.1), 0.7)
    u = dice.u()
    return -1 if u < p_neg else (1 if u < p_neg + p_pos else 0)


def _with_opener(text: str, dice: _Dice) -> str:
    """Maybe prefix a spoken opener ("um, ", "so "), unless the line already starts with one."""
    opener = dice.pick(OPENERS)
    return text if _HAS_OPENER.match(text) else opener + text


def _fill(template: str, vocab: dict[str, tuple[str, ...]], dice: _Dice) -> str:
    return template.format(
        noun=dice.pick(vocab["noun"]), activity=dice.pick(vocab["activity"]), name=dice.pick(vocab["name"])
    )


def _event(valence: int, vocab: dict[str, tuple[str, ...]], dice: _Dice) -> str:
    key = {1: "good", -1: "bad", 0: "neutral"}[valence]
    return f"{dice.pick(TIMEREFS)} {dice.pick(vocab[key])}."


def user_utterance(kind: str, valence: int, topic: str, dice: _Dice) -> str:
    """A User turn: a kind of turn, a valence and a topic rendered into words."""
    vocab = TOPICS[topic]
    if kind == "story":
        parts = [_event(valence, vocab, dice)]
        if dice.chance(0.7):
            parts.append(_fill(dice.pick(USER_TEMPLATES["detail"]), vocab, dice))
        if dice.chance(0.5):
            parts.append(_fill(dice.pick(USER_TEMPLATES["detail"]), vocab, dice))
        parts.append(dice.pick(CODA[valence]))
    elif kind in ("statement", "answer"):
        parts = [_fill(dice.pick(USER_TEMPLATES[kind]), vocab, dice)]
        if valence != 0 or dice.chance(0.3):
            parts.append(_event(valence, vocab, dice))
        if valence != 0 and dice.chance(0.5):
            parts.append(dice.pick(CODA[valence]))
    else:
        parts = [_fill(dice.pick(USER_TEMPLATES[kind]), vocab, dice)]
    if kind != "greeting":
        parts[0] = _with_opener(parts[0], dice)
    return " ".join(_capitalise(s) for p in parts if p for s in split_sentences(p))


def ai_utterance(act: str, topic: str, tone: int, earlier: list[str], dice: _Dice) -> str:
    """An AI turn: an act's template, topic words, an opener and maybe a tone phrase."""
    if act == "repetition":
        # Nearly verbatim: an earlier AI line, at most its opener changed.
        core = _OPENER_PREFIX.sub("", dice.pick(earlier))
        opener = dice.pick(OPENERS)
        if dice.chance(0.5):
            core = opener + (core if core.startswith(("I ", "I'")) else core[:1].lower() + core[1:])
        return _capitalise(core)
    core = _fill(dice.pick(AI_TEMPLATES[act]), TOPICS[topic], dice)
    text = _capitalise(_with_opener(core, dice))
    # The tone phrase and its place are drawn even when unused, so that a knob that
    # changes only the tone (sentiment_coupling) leaves every other word in place.
    phrase, before = _capitalise(dice.pick(TONE[tone or 1])), dice.chance(0.5)
    if tone:
        text = f"{phrase} {text}" if before else f"{text} {phrase}"
    # Capitalise the start of every sentence inside multi-sentence templates.
    return " ".join(_capitalise(s) for s in split_sentences(text))


def simulate_dialogue(
    params: SimulationParams, n_turns: int, listener: Listener, persona: Persona, rng: np.random.Generator
) -> Dialogue:
    """Alternate User and AI turns; pick acts, words and the planted quality of AI turns."""
    dice = _Dice(rng)
    turn_z = rng.standard_normal(n_turns)  # per-turn noise, drawn up front
    d = Dialogue()
    topic = dice.pick(TOPIC_NAMES)
    prev_ai: str | None = None
    last_ai: tuple[str, ...] = ()
    prev_valence, kind, valence, long_turn = 0.0, "greeting", 0, False
    ai_texts: list[str] = []
    for i in range(n_turns):
        if i % 2 == 0:  # ---- the User
            kind = _user_kind(prev_ai, dice)
            if prev_ai == "off_topic" and dice.chance(0.3):
                topic = d.topics[-1]  # the User follows the AI's digression
            elif i > 0 and dice.chance(0.4 if prev_ai == "generic_question" else 0.07):
                topic = dice.pick([t for t in TOPIC_NAMES if t != topic])
            valence = _user_valence(kind, prev_valence, listener.mood - params.listener_mood_mean, dice)
            text = user_utterance(kind, valence, topic, dice)
            long_turn = text.count(" ") + 1 >= LONG_TURN_WORDS
            prev_valence = valence
            d.roles.append("User")
            d.acts.append(kind)
            d.topics.append(topic)
            d.texts.append(text)
            d.valence.append(float(valence))
            d.tone.append(math.nan)
            d.fit.append(math.nan)
            d.quality.append(math.nan)
            continue
        # ---- the AI: with probability `skill` it reads the context, else it follows habit
        cdf = _skilled_cdf(kind, valence, long_turn, last_ai) if dice.chance(persona.skill) else persona.habit_cdf
        act = ACTS[dice.draw_cdf(cdf)]
        if act == "repetition" and not ai_texts:
            act = "generic_question"  # nothing to repeat yet
        fit = context_fit(act, kind, valence, long_turn, last_ai)
        q = ACT_VALUE[act] + fit + listener.taste.get(act, 0.0) + params.turn_noise * turn_z[i]
        # Wording polarity: agrees with the turn's quality with probability
        # sentiment_coupling, else a coin flip (three draws always, to keep the dice in step).
        has_tone, agree, coin = dice.u() < TONE_RATE, dice.chance(params.sentiment_coupling), dice.u()
        tone = (
            ((1 if q > TONE_GOOD_Q else -1) if agree else (1 if coin < 0.5 else -1))
            if has_tone and act != "repetition"
            else 0
        )  # a repeated line keeps its old wording
        ai_topic = dice.pick([t for t in TOPIC_NAMES if t != topic]) if act == "off_topic" else topic
        text = ai_utterance(act, ai_topic, tone, ai_texts, dice)
        ai_texts.append(text)
        d.roles.append("AI")
        d.acts.append(act)
        d.topics.append(ai_topic)
        d.texts.append(text)
        d.valence.append(math.nan)
        d.tone.append(float(tone))
        d.fit.append(fit)
        d.quality.append(q)
        prev_ai, last_ai = act, (last_ai + (act,))[-2:]
    return d


def turn_times(n_words: np.ndarray, roles_ai: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (s, 3 decimals) from word counts: ~2.5 words/s, jitter, short gaps."""
    rate = rng.uniform(*WORDS_PER_SECOND, size=2)[roles_ai.astype(int)]
    dur = n_words / rate * np.exp(rng.normal(0, 0.15, len(n_words))) + 0.3
    gap = np.minimum(0.15 + rng.exponential(0.45, len(n_words)), 3.0)
    gap[0] = rng.uniform(0.5, 2.5)  # the recording starts a moment before the first word
    start = np.round(np.cumsum(gap + dur) - dur, 3)
    stop = np.round(start + dur, 3)
    stop = np.minimum(stop, np.append(start[1:], np.inf))  # rounding never creates overlap
    return start, stop
