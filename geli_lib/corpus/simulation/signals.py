"""Per-second signals: the listener's face, gaze and voice driven by the planted turn rewards."""

from __future__ import annotations

import numpy as np

from geli_lib.core.params import SimulationParams
from geli_lib.corpus.schema import EMOTIONS, FACE_COLUMNS
from geli_lib.corpus.simulation.common import FACE_BASE, FACE_PULL, _sigmoid, _smooth_noise

# --------------------------------------------------------------------------- #
# Per-second signals                                                           #
# --------------------------------------------------------------------------- #


def _face_probs(
    s: np.ndarray, coupling: float, expressiveness: float, noise_sd: float, rng: np.random.Generator
) -> np.ndarray:
    """(n, 8) emotion probabilities: softmax(base + coupling·s·pull + noise)."""
    logits = FACE_BASE + coupling * s[:, None] * FACE_PULL
    logits[:, EMOTIONS.index("happiness")] += expressiveness
    logits += _smooth_noise(rng, len(s), len(EMOTIONS), noise_sd)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def participant_signals(
    s: np.ndarray,
    speaking: np.ndarray,
    expressiveness: float,
    f0_base: float,
    params: SimulationParams,
    rng: np.random.Generator,
    coupling: float,
) -> dict[str, np.ndarray]:
    """One participant's per-second columns, driven by the reaction level ``s`` ∈ [-1, 1].

    ``coupling`` scales how much the face follows ``s`` (face_coupling for the
    listener); smiles, gaze, nods and prosody follow ``s`` through their own noise.
    """
    n = len(s)
    spk = speaking.astype(float)
    probs = _face_probs(s, coupling, expressiveness, params.face_noise, rng)
    probs[rng.random(n) < params.frame_dropout] = np.nan  # no face found this second
    smile_p = _sigmoid(-1.1 + 1.5 * s + expressiveness + 0.4 * spk + _smooth_noise(rng, n, 1, params.smile_noise)[:, 0])
    gaze_p = _sigmoid(1.6 + 0.8 * s - 0.7 * spk + _smooth_noise(rng, n, 1, params.gaze_noise)[:, 0])
    listening = 1.0 - spk
    nod_yes_p = np.clip(params.nod_rate * (listening * (1 + 0.8 * s) + spk * 0.3), 0, 1)
    nod_no_p = 0.01 + listening * 0.06 * (1 - s) / 2
    u = rng.random((n, 4))
    pn = _smooth_noise(rng, n, 4, params.prosody_noise)
    cols: dict[str, np.ndarray] = {
        "is_speaking": speaking.astype(np.int8),
        "gaze_on": (u[:, 0] < gaze_p).astype(np.int8),
        "smile": (u[:, 1] < smile_p).astype(np.int8),
        "nod_yes": (u[:, 2] < nod_yes_p).astype(np.int8),
        "nod_no": (u[:, 3] < nod_no_p).astype(np.int8),
    }
    for j, c in enumerate(FACE_COLUMNS):
        cols[c] = np.round(probs[:, j], 4)
    intensity = 47 + 14 * spk + 1.5 * s + 3 * pn[:, 1]
    cols["f0_mean"] = np.round(f0_base + 6 * s + 8 * spk + 12 * pn[:, 0], 2)
    cols["intensity_mean"] = np.round(intensity, 2)
    cols["jitter"] = np.round(np.clip(0.015 - 0.002 * s + 0.004 * pn[:, 2], 0.002, None), 4)
    cols["log_energy"] = np.round(intensity / 8.7 + 0.3 * pn[:, 3], 3)
    return cols


def reaction_levels(
    t: np.ndarray, start: np.ndarray, turn_level: np.ndarray, lag: float, rest_level: float
) -> np.ndarray:
    """s at each second: the level of the latest turn started ``lag`` s before (rest before any)."""
    j = np.searchsorted(start, t - lag, side="right") - 1
    return np.where(j >= 0, turn_level[np.maximum(j, 0)], rest_level)


def speaking_mask(t: np.ndarray, start: np.ndarray, stop: np.ndarray, mine: np.ndarray) -> np.ndarray:
    """1 where second t falls inside one of this participant's turns."""
    j = np.searchsorted(start, t, side="right") - 1
    jj = np.maximum(j, 0)
    return (j >= 0) & (t < stop[jj]) & mine[jj]
