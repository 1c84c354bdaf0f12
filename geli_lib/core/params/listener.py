"""The listener section: feature extraction from video and audio."""

from __future__ import annotations

from dataclasses import dataclass

from geli_lib.core.params.base import _check, _check_choices


@dataclass
class FeatureParams:
    """Listener feature extraction from video and audio (LLM-GELI §5.1; geli_lib.listener.features, face, prosody)."""

    sample_fps: float = 5.0
    """Video frames analysed per second (face, smile, gaze, emotion, nods); the rest are skipped.
    Keep it >= 5: nods are 1-2.5 Hz oscillations, and at 4 fps a 2 Hz nod aliases away (measured)."""
    detect_width: int = 320
    """Width (px) the frame is scaled to for Haar face detection (speed; the crops use full resolution)."""
    nod_window: float = 1.0
    """Seconds of face-centre track, centred on each second, in which a nod is looked for
    (1 s: the second itself; wider windows let a nod spill into the still seconds beside it)."""
    workers: int = 2
    """Worker processes of ``python -m geli_lib.listener.features`` (one recording per worker)."""

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
