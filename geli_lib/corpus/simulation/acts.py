"""Social acts and their value: what the AI can do and what each act is worth to the listener."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# --------------------------------------------------------------------------- #
# Social acts and their value                                                  #
# --------------------------------------------------------------------------- #

#: The AI's social acts.
ACTS: tuple[str, ...] = (
    "backchannel",
    "generic_question",
    "topical_question",
    "self_disclosure",
    "empathy",
    "humour",
    "agreement",
    "elaboration",
    "dismissive",
    "off_topic",
    "repetition",
)


#: Context-free value of each act (logit units): what it is worth on average.
ACT_VALUE: dict[str, float] = {
    "backchannel": 0.0,
    "generic_question": 0.1,
    "topical_question": 0.6,
    "self_disclosure": 0.4,
    "empathy": 0.3,
    "humour": 0.4,
    "agreement": 0.3,
    "elaboration": 0.5,
    "dismissive": -1.5,
    "off_topic": -1.0,
    "repetition": -1.2,
}


#: Mean of the persona's habit Dirichlet (sums to 1).
HABIT_PRIOR: dict[str, float] = {
    "backchannel": 0.13,
    "generic_question": 0.10,
    "topical_question": 0.12,
    "self_disclosure": 0.11,
    "empathy": 0.07,
    "humour": 0.08,
    "agreement": 0.10,
    "elaboration": 0.09,
    "dismissive": 0.08,
    "off_topic": 0.07,
    "repetition": 0.05,
}


HABIT_CONCENTRATION = 4.0  # < 1 per act (α ≈ 0.2-0.5): habits differ a lot between AIs


SKILL_A, SKILL_B = 0.7, 0.7  # skill ~ Beta: from careless to attentive


SKILL_TEMPERATURE = 0.35  # how sharply a skilled choice prefers the best-fitting act


TASTE_ACTS: tuple[str, ...] = (
    "humour",
    "self_disclosure",
    "generic_question",
    "topical_question",
    "backchannel",
    "empathy",
)


TASTE_SD = 0.4


#: User turn kinds ("acts" of the User in the truth file).
USER_KINDS: tuple[str, ...] = ("greeting", "story", "statement", "answer", "question", "reaction")


LONG_TURN_WORDS = 25  # a User turn this long is a story worth a "mhm"


QUESTION_ACTS = ("generic_question", "topical_question")


BAD_ACTS = ("dismissive", "off_topic", "repetition")


@lru_cache(maxsize=None)
def context_fit(act: str, user_kind: str, valence: int, long_turn: bool, last_ai: tuple[str, ...]) -> float:
    """Context-fit component of an AI act's quality (logit units).

    ``user_kind``, ``valence`` (-1 bad news, 0, +1 good news) and ``long_turn``
    describe the User turn just before; ``last_ai`` holds the AI's previous two
    acts (most recent last). Pure and cached: the table a teacher can read.
    """
    asked = user_kind in ("question", "greeting")
    fit = 0.0
    if act == "backchannel":
        fit += 0.4 if long_turn else -0.3  # "mhm" rewards a story, not a one-liner
        fit -= 0.5 if asked else 0.0  # and does not answer a question
    elif act == "generic_question":
        fit += -0.4 if asked else 0.1  # ignoring their question
        fit -= 0.4 if valence < 0 else 0.0  # changing the subject after bad news
    elif act == "topical_question":
        fit += -0.3 if asked else 0.5  # following their topic
    elif act == "self_disclosure":
        fit += 0.6 if asked else 0.1  # answering what they asked
        fit -= 0.6 if valence < 0 else 0.0  # making their bad news about yourself
        fit -= 0.3 if last_ai[-1:] == ("self_disclosure",) else 0.0  # hogging the floor
    elif act == "empathy":
        fit += {-1: 1.2, 0: -0.4, 1: -0.8}[valence]  # sympathy fits bad news only
    elif act == "humour":
        fit += {-1: -1.4, 0: 0.2, 1: 0.6}[valence]  # jokes fit a relaxed mood, not grief
    elif act == "agreement":
        fit += -0.2 if asked else (0.3 if user_kind in ("story", "statement") else 0.0)
    elif act == "elaboration":
        fit += 0.5 if asked else 0.2
    elif act == "dismissive":
        fit -= 0.6 if valence < 0 else 0.0
        fit -= 0.3 if asked else 0.0
    elif act == "off_topic":
        fit -= 0.5 if long_turn else 0.2  # worse after they opened up at length
    elif act == "repetition":
        fit -= 0.3 if "repetition" in last_ai else 0.0
    if act in QUESTION_ACTS and sum(a in QUESTION_ACTS for a in last_ai) == 2:
        fit -= 0.4  # a third question in a row is an interrogation
    return fit


@lru_cache(maxsize=None)
def _skilled_cdf(user_kind: str, valence: int, long_turn: bool, last_ai: tuple[str, ...]) -> tuple[float, ...]:
    """Cumulative probabilities of a skilled act choice: softmax of value + fit."""
    utility = np.array([ACT_VALUE[a] + context_fit(a, user_kind, valence, long_turn, last_ai) for a in ACTS])
    w = np.exp((utility - utility.max()) / SKILL_TEMPERATURE)
    return tuple(np.cumsum(w / w.sum()).tolist())
