"""The listener's voice per second: f0, intensity, jitter, log energy (LLM-GELI §5.1 items 1-4).

Library choices, deliberately few:

- **praat-parselmouth** (Praat 6 in Python; wheels for every platform, no
  compiler, ~10 MB) for f0, intensity and jitter. Praat is the reference
  implementation of all three, and it is what the paper used for f0. The
  paper took jitter from *disvoice*, which is itself a wrapper around Praat's
  "Get jitter (local)" and pulls in an unmaintained, heavy stack; we call the
  same Praat command directly. The paper's "intensity" came from a predictor
  trained on RAVDESS that is not published: we use Praat's intensity contour
  (dB), the standard acoustic measure of voice amplitude, and say so.
- **numpy** for log energy (one line: the log of the summed squared samples
  per second). The paper used librosa for it; librosa would add numba, llvmlite,
  scikit-learn and soxr for one sum, so it is not used.
- **PyAV** (``av``, bundles ffmpeg) only to read the audio track of a video
  file when no separate wav is given; Praat reads wav/aiff/flac/mp3 itself.

Per-second columns (second ``s`` covers [s, s+1)), named as in
:data:`geli_lib.corpus.schema.PROSODY`:

- ``f0_mean``: mean f0 (Hz) of the voiced 10-ms Praat pitch frames (NaN when
  the second has none);
- ``intensity_mean``: Praat's intensity contour (dB) averaged over the second
  as energy (10·log10 of the mean of 10^(dB/10));
- ``jitter``: Praat "Get jitter (local)" over the second (NaN when fewer
  than a few periods are found);
- ``log_energy``: ln(Σ x²) over the second's samples (floored at 1e-10);
- ``voiced``: share of the second's pitch frames that are voiced — used as the
  listener's ``is_speaking`` (a voice-activity proxy when no transcript says
  who speaks).
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pandas as pd
import parselmouth
from parselmouth.praat import call

from geli_lib.corpus.schema import PROSODY

#: Praat pitch range (Hz) wide enough for adult and child voices.
PITCH_FLOOR = 75.0
PITCH_CEILING = 600.0
#: Praat pitch / intensity time step (s).
TIME_STEP = 0.01
#: Audio is resampled to this rate when read from a video track (enough for f0 and energy).
TRACK_RATE = 16000


class AudioError(ValueError):
    """An audio file or track cannot be read; the message names the file."""


def read_sound(path: str | Path):
    """A ``parselmouth.Sound`` from an audio file, or from the first audio track of a video file.

    Praat reads wav/aiff/flac/mp3; anything else (mp4, mkv, webm ...) goes
    through PyAV, mixed down to mono at :data:`TRACK_RATE` Hz.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.suffix.lower() in (".wav", ".aiff", ".aif", ".flac", ".mp3"):
        try:
            return parselmouth.Sound(str(path)).convert_to_mono()
        except parselmouth.PraatError as e:
            raise AudioError(f"{path}: Praat cannot read this audio file ({str(e).strip()[:200]})") from None
    return parselmouth.Sound(_track_samples(path), sampling_frequency=TRACK_RATE)


def _track_samples(path: Path) -> np.ndarray:
    """Mono float samples at TRACK_RATE of the first audio stream of a media file (via PyAV)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=TRACK_RATE)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:
        raise AudioError(f"{path}: cannot decode the audio track ({e})") from None
    if not chunks:
        raise AudioError(f"{path}: the audio track has no samples")
    return np.concatenate(chunks).astype(np.float64)


def _per_second(times: np.ndarray, values: np.ndarray, n_seconds: int) -> np.ndarray:
    """Mean of the non-NaN ``values`` whose time falls in each second [s, s+1); NaN when none."""
    sec = np.floor(times).astype(np.int64)
    ok = (sec >= 0) & (sec < n_seconds) & ~np.isnan(values)
    sums = np.bincount(sec[ok], weights=values[ok], minlength=n_seconds)
    counts = np.bincount(sec[ok], minlength=n_seconds)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def prosody_per_second(sound, n_seconds: int | None = None) -> pd.DataFrame:
    """Per-second prosody of a ``parselmouth.Sound`` (see the module docstring for the columns).

    ``n_seconds`` rows (default: the sound's whole seconds, rounded up); seconds
    past the end of the sound are NaN rows, so a shorter audio never shifts
    the video's rows.
    """
    duration = float(sound.get_total_duration())
    n = int(np.ceil(duration)) if n_seconds is None else int(n_seconds)
    pitch = sound.to_pitch(time_step=TIME_STEP, pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING)
    f0 = pitch.selected_array["frequency"].astype(float)
    voiced = (f0 > 0).astype(float)
    f0[f0 <= 0] = np.nan
    intensity = sound.to_intensity(minimum_pitch=PITCH_FLOOR, time_step=TIME_STEP)
    samples = sound.values.mean(axis=0)
    rate = float(sound.sampling_frequency)
    sec = (np.arange(len(samples)) / rate).astype(np.int64)
    ok = sec < n
    energy = np.bincount(sec[ok], weights=samples[ok] ** 2, minlength=n)
    present = np.bincount(sec[ok], minlength=n) > 0
    points = call(sound, "To PointProcess (periodic, cc)", PITCH_FLOOR, PITCH_CEILING)
    jitter = np.full(n, np.nan)
    for s in range(min(n, int(np.ceil(duration)))):
        jitter[s] = call(points, "Get jitter (local)", float(s), float(min(s + 1, duration)), 0.0001, 0.02, 1.3)
    out = pd.DataFrame(
        {
            "f0_mean": _per_second(pitch.xs(), f0, n),
            # dB are averaged as energies (Praat's "energy" averaging): a silent frame at -300 dB
            # must not drag a loud second's mean to minus hundreds
            "intensity_mean": 10 * np.log10(_per_second(intensity.xs(), 10 ** (intensity.values[0] / 10), n)),
            "jitter": jitter,
            "log_energy": np.where(present, np.log(np.maximum(energy, 1e-10)), np.nan),
            "voiced": _per_second(pitch.xs(), voiced, n),
        }
    )
    assert tuple(out.columns[: len(PROSODY)]) == PROSODY  # the schema's names, in order
    return out


def write_tone(
    path: str | Path,
    f0: float | tuple[float, float],
    seconds: float,
    rate: int = 16000,
    harmonics: int = 1,
    syllables_per_s: float = 0.0,
    amplitude: float = 0.3,
) -> Path:
    """Write a 16-bit mono wav of a tone of known pitch (a test signal with a known answer).

    ``f0`` is constant or a (start, end) glide in Hz (linear in time);
    ``harmonics`` > 1 adds overtones with 1/k amplitudes (voice-like);
    ``syllables_per_s`` > 0 gates it on and off like syllables (half on, half
    off), which gives pauses to the voicing and energy measures.
    """
    start, end = (f0, f0) if np.isscalar(f0) else f0
    t = np.arange(int(round(seconds * rate))) / rate
    freq = start + (end - start) * t / max(seconds, 1e-9)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    x = amplitude * x / np.max(np.abs(x))
    if syllables_per_s > 0:
        x = x * (np.sin(2 * np.pi * syllables_per_s * t) > 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path
