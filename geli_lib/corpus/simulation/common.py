"""Face, body and prosody constants, and small helpers (seeded dice, smooth noise)."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- #
# Face, body and prosody constants                                             #
# --------------------------------------------------------------------------- #

#: Baseline emotion logits (order of EMOTIONS): a resting face is mostly neutral.
FACE_BASE = np.array([-1.6, -2.6, -2.1, -2.3, -0.45, 1.2, -1.1, -1.6])


#: Pull of the reaction level s on each logit, as a multiple of face_coupling.
FACE_PULL = np.array([-0.2, 0.0, -0.15, 0.0, 1.0, 0.0, -0.35, 0.0])


EXPRESSIVENESS_SD = 0.4  # people differ in how much they smile


NOISE_RHO = 0.6  # per-second noise is smoothed: faces do not flicker independently


NOISE_TAPS = 8


WORDS_PER_SECOND = (2.1, 2.9)


# --------------------------------------------------------------------------- #
# Small helpers                                                                #
# --------------------------------------------------------------------------- #


class _Dice:
    """Uniform draws for the Python-level text loop, pre-drawn in blocks from one generator."""

    def __init__(self, rng: np.random.Generator, block: int = 4096):
        self._rng, self._block = rng, block
        self._u: list[float] = []
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._u):
            self._u, self._i = self._rng.random(self._block).tolist(), 0
        self._i += 1
        return self._u[self._i - 1]

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.u() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def draw_cdf(self, cdf: Sequence[float]) -> int:
        return min(bisect_right(cdf, self.u() * cdf[-1]), len(cdf) - 1)


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _hex_id(rng: np.random.Generator, n_hex: int) -> str:
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, n_hex // 2).tolist())


def _smooth_noise(rng: np.random.Generator, n: int, k: int, sd: float) -> np.ndarray:
    """(n, k) Gaussian noise with SD ``sd``, smoothed over time by a short AR(1)-like kernel."""
    w = NOISE_RHO ** np.arange(NOISE_TAPS)
    w /= np.sqrt((w**2).sum())
    eps = rng.standard_normal((n + NOISE_TAPS - 1, k))
    out = np.zeros((n, k))
    for j, wj in enumerate(w):
        out += wj * eps[NOISE_TAPS - 1 - j : NOISE_TAPS - 1 - j + n]
    return sd * out


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


_OPENER_PREFIX = re.compile(r"^(Um|So|You know|Oh|Well|Yeah|I mean|Hmm|Okay so|Honestly),? ")


_HAS_OPENER = re.compile(
    r"(so|oh|yeah|well|ha|haha|hm|hmm|um|uh|okay|anyway|random|exactly|right|same|"
    r"cool|sure|honestly|good question|not|I mean|mhm|totally|gotcha|no way)\b",
    re.IGNORECASE,
)


def split_sentences(utterance: str) -> list[str]:
    """Sentences of an utterance (the audiophile segmentation splits turns on them)."""
    return [s for s in _SENTENCE_END.split(utterance.strip()) if s]
