"""The listener's signals: emotions from the face, prosody from the voice, aggregated per turn.

- ``face``      per-second emotion probabilities, gaze, smiles and nods from video
- ``prosody``   f0, intensity, jitter and log energy from audio
- ``features``  recordings to CANDOR feature files, and the per-turn summary (GELI eq. 7's Γ reads it)
"""

import importlib
from typing import Any

from geli_lib.listener import face, prosody

#: Exported from ``features`` on first use: it is also a command (python -m geli_lib.listener.features),
#: which must not find itself imported already (runpy would warn and run a second copy).
_FROM_FEATURES = ("describe_listener", "extract_folder", "turn_listener_summary")


def __getattr__(name: str) -> Any:
    if name in _FROM_FEATURES:
        return getattr(importlib.import_module("geli_lib.listener.features"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["describe_listener", "extract_folder", "face", "features", "prosody", "turn_listener_summary"]
