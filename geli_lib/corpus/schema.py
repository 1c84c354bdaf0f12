"""The canonical corpus form that every loader produces and every step reads.

A :class:`Corpus` is three tables (stored as parquet):

``conversations`` — one row per conversation
    convo_id (str), corpus (str), listener_id (str: the "User", whose session
    score is R_GE), ai_id (str: the other speaker, whose turns are the "AI"
    turns), score (float: R_GE on the 0-100 scale the losses use; CANDOR:
    overall_affect × 10), score_raw (float: the survey value as given),
    n_turns (int), n_ai_turns (int), duration (float seconds, NaN without
    timing), has_truth (bool: turn-level truth present).

``turns`` — one row per turn, ordered by (convo_id, turn_idx)
    convo_id, turn_idx (int, 0-based order in the conversation), turn_id (str,
    id in the source file), speaker_id (str), role ("User" | "AI"), is_ai (bool),
    start, stop (float seconds, NaN without timing), utterance (str), n_words
    (int), act (str: simulated social act, "" elsewhere), true_reward (float:
    planted turn reward on the 0-100 scale, length-free: the session score is
    their mean plus noise; simulated corpus only, else NaN),
    local_feedback (float: ESConv seeker feedback 1-5 on the supporter turns it
    rates, else NaN).

``frames`` — the listener's per-second signals (CANDOR audio_video_features)
    convo_id, user_id, t (float seconds), is_speaking, gaze_on, smile, nod_yes,
    nod_no (floats in [0, 1], NaN when absent), one ``prob_face_<emotion>``
    column per AffectNet emotion in :data:`EMOTIONS`, then any prosodic
    columns of the source (``PROSODY`` when simulated). Empty for corpora
    without video (ESConv, SODA).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from geli_lib.core.io import write_json, write_parquet

#: AffectNet's 8 classes, the order of CANDOR's ``prob_face_*`` columns.
EMOTIONS: tuple[str, ...] = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)
FACE_COLUMNS: tuple[str, ...] = tuple(f"prob_face_{e}" for e in EMOTIONS)
#: Prosodic columns the simulator writes (and the feature extractor will).
PROSODY: tuple[str, ...] = ("f0_mean", "intensity_mean", "jitter", "log_energy")
CORPORA: tuple[str, ...] = ("simulated", "candor", "esconv", "soda")

CONVERSATION_COLUMNS: dict[str, str] = {
    "convo_id": "str",
    "corpus": "str",
    "listener_id": "str",
    "ai_id": "str",
    "score": "float64",
    "score_raw": "float64",
    "n_turns": "int64",
    "n_ai_turns": "int64",
    "duration": "float64",
    "has_truth": "bool",
}
TURN_COLUMNS: dict[str, str] = {
    "convo_id": "str",
    "turn_idx": "int64",
    "turn_id": "str",
    "speaker_id": "str",
    "role": "str",
    "is_ai": "bool",
    "start": "float64",
    "stop": "float64",
    "utterance": "str",
    "n_words": "int64",
    "act": "str",
    "true_reward": "float64",
    "local_feedback": "float64",
}
FRAME_COLUMNS: dict[str, str] = {
    "convo_id": "str",
    "user_id": "str",
    "t": "float64",
    "is_speaking": "float64",
    "gaze_on": "float64",
    "smile": "float64",
    "nod_yes": "float64",
    "nod_no": "float64",
    **{c: "float64" for c in FACE_COLUMNS},
}


class SchemaError(ValueError):
    """A table does not have the canonical columns or types."""


def conform(df: pd.DataFrame, columns: dict[str, str], table: str) -> pd.DataFrame:
    """Return ``df`` with the canonical columns first, in order and with their dtypes.

    Extra columns are kept after them (e.g. prosody). A missing canonical column
    is an error naming the table and the column.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{table}: missing canonical column(s) {missing}")
    out = df[list(columns) + [c for c in df.columns if c not in columns]].copy()
    for col, dtype in columns.items():
        out[col] = out[col].astype(dtype if dtype != "str" else object)
        if dtype == "str":
            out[col] = out[col].astype(str)
    return out.reset_index(drop=True)


@dataclass
class Corpus:
    """A loaded corpus in canonical form (see the module docstring)."""

    name: str
    conversations: pd.DataFrame
    turns: pd.DataFrame
    frames: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FRAME_COLUMNS)))
    #: Counted, documented skips: reason -> list of "file: detail" strings.
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.conversations = conform(self.conversations, CONVERSATION_COLUMNS, "conversations")
        self.turns = conform(self.turns, TURN_COLUMNS, "turns")
        self.frames = conform(self.frames, FRAME_COLUMNS, "frames")

    def save(self, folder: str | Path) -> None:
        """Write the three tables (and the skip report) atomically into ``folder``."""
        folder = Path(folder)
        write_parquet(folder / "conversations.parquet", self.conversations)
        write_parquet(folder / "turns.parquet", self.turns)
        write_parquet(folder / "frames.parquet", self.frames)
        write_json(folder / "corpus.json", {"name": self.name, "skipped": self.skipped})

    @classmethod
    def load(cls, folder: str | Path) -> "Corpus":
        """Read a corpus written by :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / "corpus.json").read_text())
        return cls(
            name=meta["name"],
            conversations=pd.read_parquet(folder / "conversations.parquet"),
            turns=pd.read_parquet(folder / "turns.parquet"),
            frames=pd.read_parquet(folder / "frames.parquet"),
            skipped=meta.get("skipped", {}),
        )

    def summary(self) -> dict[str, float]:
        """Headline statistics (the papers' corpus table)."""
        t = self.turns
        return {
            "conversations": len(self.conversations),
            "turns": len(t),
            "ai_turns": int(t["is_ai"].sum()),
            "turns_per_conversation": len(t) / max(len(self.conversations), 1),
            "words_per_turn": float(t["n_words"].mean()) if len(t) else float("nan"),
            "score_mean": float(self.conversations["score"].mean()),
            "score_sd": float(self.conversations["score"].std()),
            "skipped": sum(len(v) for v in self.skipped.values()),
        }

    def summary_table(self) -> pd.DataFrame:
        """:meth:`summary` as a one-column table named after the corpus (for notebooks)."""
        return pd.Series(self.summary(), name=self.name).round(2).to_frame()
