"""Builders that WRITE small real-format corpora into a folder (for tests and smoke runs).

Import from a test module (pytest puts ``tests/`` on ``sys.path``)::

    from fixtures import write_candor, write_esconv, write_soda

- :func:`write_candor`  CANDOR layout: ``<root>/<uuid>/`` with all three
  transcript segmentations, ``survey.csv``, ``audio_video_features.csv``,
  ``metadata.json`` and (optionally) ``simulation_truth.csv``. Returns the
  specification each conversation was built from (listener, score, base
  turns with truth, which AI turns make the listener happy), so a test can
  compare the loader with what was planted. ``n_turns`` scales it up to a
  benchmark-sized corpus.
- :func:`write_esconv`  an ESConv JSON list using all three role-name variants,
  strategies and seeker feedback; :data:`ESCONV_EXPECTED` holds the expected
  canonical values.
- :func:`write_soda`    SODA as a JSON list or JSONL.
- :func:`simulated_corpus` the smoke profile's simulated corpus (with overrides),
  simulated into its own cache folder.

Everything is deterministic (fixed seeds), so files are byte-identical per call.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geli_lib.corpus.schema import FACE_COLUMNS

WORDS = (
    "so",
    "I",
    "think",
    "the",
    "weather",
    "was",
    "really",
    "nice",
    "today",
    "and",
    "we",
    "went",
    "hiking",
    "up",
    "hill",
    "with",
    "my",
    "dog",
    "it",
    "felt",
    "great",
    "honestly",
    "what",
    "about",
    "you",
    "do",
    "like",
    "music",
    "movies",
    "work",
)
ACTS = ("question", "empathy", "humour", "self_disclosure", "backchannel", "dismissive")
SCORES = (7, 4, 9, 6, 8, 3, 10, 5, 2, 1)


def convo_uuid(k: int) -> str:
    """A uuid-shaped folder name that sorts in ``k`` order."""
    return f"{k:08x}-0000-4000-8000-{k:012x}"


def _utterance(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def candor_spec(k: int, n_turns: int | None = None, pace: float = 0.4) -> dict[str, Any]:
    """The planted content of conversation ``k``: two speakers, alternating turns, truth.

    The listener (first speaker) is ``user-<k>-a``. Every 4th AI turn is short
    (2-5 words). AI turns with a positive true reward make the listener happy
    during the turn (her face frames show happiness). ``pace`` is seconds per
    word (0.5 with 160 turns gives CANDOR's ~1,000 s and ~2,000 feature rows).
    """
    rng = np.random.default_rng(1000 + k)
    n = n_turns if n_turns is not None else 8 + 2 * (k % 3)
    listener, ai = f"user-{k}-a", f"user-{k}-b"
    rows, t = [], 1.0
    for i in range(n):
        is_ai = i % 2 == 1
        short = is_ai and (i // 2) % 4 == 0
        nw = int(rng.integers(2, 6)) if short else int(rng.integers(6, 16))
        dur = pace * nw + 0.6
        start = round(t, 3)
        stop = round(t + dur, 3)
        reward = round(float(rng.normal(0, 10)), 2) if is_ai else np.nan
        if is_ai and i == 1:
            reward = 12.5  # the first AI turn is always a happy one
        rows.append(
            {
                "turn_id": str(i),
                "speaker": ai if is_ai else listener,
                "role": "AI" if is_ai else "User",
                "start": start,
                "stop": stop,
                "utterance": _utterance(rng, nw),
                "n_words": nw,
                "act": str(rng.choice(ACTS)) if is_ai else "",
                "true_reward": reward,
            }
        )
        # mostly a small gap; sometimes a small overlap between speakers, as in CANDOR
        t = stop + (float(rng.uniform(0.2, 0.8)) if rng.random() > 0.2 else -0.3)
    turns = pd.DataFrame(rows)
    return {
        "convo_id": convo_uuid(k),
        "listener": listener,
        "ai": ai,
        "score_raw": SCORES[k % len(SCORES)],
        "turns": turns,
        "happy": (turns["role"] == "AI") & (turns["true_reward"] > 0),
        "no_face_second": 3,
    }


def _transcript_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add CANDOR's derived transcript columns (interval, delta, questions, ...)."""
    out = df[["turn_id", "speaker", "start", "stop", "utterance"]].copy()
    prev_stop = out["stop"].shift(1)
    out["interval"] = (out["start"] - prev_stop).round(3)
    out["delta"] = (out["stop"] - out["start"]).round(3)
    out["questions"] = out["utterance"].str.count(r"\?")
    out["end_question"] = out["utterance"].str.endswith("?")
    out["overlap"] = out["interval"] < 0
    out["n_words"] = out["utterance"].str.split().str.len()
    return out


def audiophile_rows(turns: pd.DataFrame) -> pd.DataFrame:
    """Audiophile-like: every turn of >= 6 words split in two rows of the same speaker at a pause."""
    rows = []
    for r in turns.itertuples():
        words = r.utterance.split()
        if len(words) >= 6:
            h = len(words) // 2
            cut = round(r.start + (r.stop - r.start) * h / len(words), 3)
            rows.append(
                {"speaker": r.speaker, "start": r.start, "stop": round(cut - 0.1, 3), "utterance": " ".join(words[:h])}
            )
            rows.append({"speaker": r.speaker, "start": cut, "stop": r.stop, "utterance": " ".join(words[h:])})
        else:
            rows.append({"speaker": r.speaker, "start": r.start, "stop": r.stop, "utterance": r.utterance})
    out = pd.DataFrame(rows)
    out.insert(0, "turn_id", [str(i) for i in range(len(out))])
    return out


def backbiter_rows(turns: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Backbiter-like: the first AI turn of >= 8 words is split around the User's backchannel.

    Returns the rows and the index (in ``turns``) of the split AI turn. The first
    part ends exactly at the turn's midpoint, so the truth midpoint falls in it.
    """
    rows, split_at = [], -1
    for i, r in enumerate(turns.itertuples()):
        words = r.utterance.split()
        if split_at < 0 and r.role == "AI" and len(words) >= 8:
            split_at = i
            mid = round((r.start + r.stop) / 2, 3)
            h = len(words) // 2
            other = turns["speaker"][turns["speaker"] != r.speaker].iloc[0]
            rows.append(
                {
                    "speaker": r.speaker,
                    "start": r.start,
                    "stop": mid,
                    "utterance": " ".join(words[:h]),
                    "backchannel": "mhm",
                    "backchannel_count": 1,
                    "backchannel_speaker": other,
                    "backchannel_start": round(mid - 0.3, 3),
                    "backchannel_stop": round(mid + 0.2, 3),
                }
            )
            rows.append(
                {
                    "speaker": other,
                    "start": round(mid - 0.3, 3),
                    "stop": round(mid + 0.2, 3),
                    "utterance": "mhm",
                    "backchannel": "",
                    "backchannel_count": 0,
                    "backchannel_speaker": "",
                    "backchannel_start": np.nan,
                    "backchannel_stop": np.nan,
                }
            )
            rows.append(
                {
                    "speaker": r.speaker,
                    "start": round(mid + 0.1, 3),
                    "stop": r.stop,
                    "utterance": " ".join(words[h:]),
                    "backchannel": "",
                    "backchannel_count": 0,
                    "backchannel_speaker": "",
                    "backchannel_start": np.nan,
                    "backchannel_stop": np.nan,
                }
            )
        else:
            rows.append(
                {
                    "speaker": r.speaker,
                    "start": r.start,
                    "stop": r.stop,
                    "utterance": r.utterance,
                    "backchannel": "",
                    "backchannel_count": 0,
                    "backchannel_speaker": "",
                    "backchannel_start": np.nan,
                    "backchannel_stop": np.nan,
                }
            )
    out = pd.DataFrame(rows)
    out.insert(0, "turn_id", [str(i) for i in range(len(out))])
    return out, split_at


def features_frame(spec: dict[str, Any]) -> pd.DataFrame:
    """Per-second rows for both users (interleaved by second), CANDOR's columns plus prosody.

    The listener's happiness is dominant during (and only during) the seconds
    of happy AI turns; one second (``no_face_second``) has no face (NaN probs).
    """
    turns = spec["turns"]
    rng = np.random.default_rng(7 + len(turns))
    n_sec = int(math.ceil(turns["stop"].max())) + 2
    secs = np.arange(n_sec, dtype=float)
    happy_sec = np.zeros(n_sec, bool)
    for r in turns[spec["happy"]].itertuples():
        happy_sec |= (secs >= r.start) & (secs <= r.stop)
    out = []
    for uid in (spec["listener"], spec["ai"]):
        probs = np.full((n_sec, 8), 0.3 / 6)
        is_l = uid == spec["listener"]
        hap = happy_sec if is_l else np.zeros(n_sec, bool)
        probs[:, 4] = np.where(hap, 0.6, 0.1)  # happiness
        probs[:, 5] = np.where(hap, 0.1, 0.6)  # neutral
        probs = probs / probs.sum(1, keepdims=True)
        df = pd.DataFrame(np.round(probs, 4), columns=list(FACE_COLUMNS))
        if is_l:
            df.iloc[spec["no_face_second"], :] = np.nan
        speaking = np.zeros(n_sec)
        for r in turns[turns["speaker"] == uid].itertuples():
            speaking[(secs >= r.start) & (secs <= r.stop)] = 1
        df.insert(0, "timedelta", [str(pd.Timedelta(seconds=s)) for s in secs])
        df.insert(0, "user_id", uid)
        df.insert(2, "is_speaking", speaking)
        df.insert(3, "gaze_on", (rng.random(n_sec) < 0.8).astype(float))
        df["smile"] = np.where(hap, 0.9, 0.1)
        df["nod_yes"] = (rng.random(n_sec) < 0.1).astype(float)
        df["nod_no"] = 0.0
        df["f0_mean"] = np.round(rng.normal(180, 20, n_sec), 2)
        df["intensity_mean"] = np.round(rng.normal(60, 5, n_sec), 2)
        df["jitter"] = np.round(rng.uniform(0, 0.02, n_sec), 4)
        df["log_energy"] = np.round(rng.normal(-3, 1, n_sec), 3)
        df["_sec"] = secs
        out.append(df)
    both = pd.concat(out, ignore_index=True).sort_values(["_sec", "user_id"], kind="stable")
    return both.drop(columns="_sec").reset_index(drop=True)


def survey_frame(spec: dict[str, Any], n_filler: int = 30) -> pd.DataFrame:
    """Two rows (listener, partner) with overall_affect and a few other survey items."""
    rows = []
    for uid, affect in ((spec["listener"], spec["score_raw"]), (spec["ai"], 5)):
        row = {
            "user_id": uid,
            "convo_id": spec["convo_id"],
            "overall_affect": affect,
            "end_affect": affect,
            "how_enjoyable": 6,
            "i_like_you": 5,
            "conversationalist": 4,
        }
        row.update({f"item_{j:03d}": j % 7 for j in range(n_filler)})
        rows.append(row)
    return pd.DataFrame(rows)


def write_candor_conversation(root: Path, spec: dict[str, Any], truth: bool = True) -> Path:
    """Write one conversation folder from a :func:`candor_spec`; returns the folder."""
    folder = Path(root) / spec["convo_id"]
    tdir = folder / "transcription"
    tdir.mkdir(parents=True, exist_ok=True)
    turns = spec["turns"]
    _transcript_columns(turns).to_csv(tdir / "transcript_cliffhanger.csv", index=False)
    _transcript_columns(audiophile_rows(turns)).to_csv(tdir / "transcript_audiophile.csv", index=False)
    bb, _ = backbiter_rows(turns)
    bb_full = _transcript_columns(bb)
    for c in ("backchannel", "backchannel_count", "backchannel_speaker", "backchannel_start", "backchannel_stop"):
        bb_full[c] = bb[c].to_numpy()
    bb_full.to_csv(tdir / "transcript_backbiter.csv", index=False)
    survey_frame(spec).to_csv(folder / "survey.csv", index=False)
    features_frame(spec).to_csv(folder / "audio_video_features.csv", index=False)
    (folder / "metadata.json").write_text(
        json.dumps(
            {
                "convo_id": spec["convo_id"],
                "duration": float(turns["stop"].max()),
                "speakers": [spec["listener"], spec["ai"]],
            },
            indent=1,
        )
    )
    if truth:
        t = turns[["turn_id", "speaker", "role", "start", "stop", "act"]].copy()
        t["topic"] = "hobbies"
        t["true_reward"] = turns["true_reward"]
        t["fit"] = np.where(turns["role"] == "AI", 0.5, np.nan)
        t.to_csv(folder / "simulation_truth.csv", index=False)
    return folder


def write_candor(
    root: str | Path,
    n_conversations: int = 3,
    truth: bool = True,
    n_turns: int | None = None,
    pace: float = 0.4,
    first: int = 0,
) -> dict[str, dict[str, Any]]:
    """Write a CANDOR-layout corpus; returns ``{convo_id: spec}`` (see :func:`candor_spec`).

    ``first`` offsets the conversation numbers (to write a large corpus in parallel parts).
    """
    root = Path(root)
    specs = {}
    for k in range(first, first + n_conversations):
        spec = candor_spec(k, n_turns, pace)
        write_candor_conversation(root, spec, truth=truth)
        specs[spec["convo_id"]] = spec
    return specs


# --------------------------------------------------------------------------- ESConv


def _t(speaker: str, content: str, **ann: str) -> dict[str, Any]:
    return {"speaker": speaker, "annotation": ann, "content": content}


ESCONV_SESSIONS: list[dict[str, Any]] = [
    {  # seeker/supporter; two supporter turns in a row; feedback twice
        "experience_type": "Previous Experience",
        "emotion_type": "anxiety",
        "problem_type": "job crisis",
        "situation": "I am stressed about my job.",
        "survey_score": {
            "seeker": {
                "initial_emotion_intensity": "4",
                "empathy": "5",
                "relevance": "4",
                "final_emotion_intensity": "2",
            },
            "supporter": {"relevance": "4"},
        },
        "dialog": [
            _t("seeker", "Hi, I feel stressed about work."),
            _t("supporter", "Hello, I am sorry to hear that.", strategy="Question"),
            _t("supporter", "What happened at work?", strategy="Question"),
            _t("seeker", "My boss yells at me.", feedback="4"),
            _t("supporter", "That sounds really hard.", strategy="Reflection of feelings"),
            _t("seeker", "Yes it is."),
            _t("supporter", "Have you talked to HR?", strategy="Providing Suggestions"),
            _t("seeker", "Not yet, thanks.", feedback="5"),
            _t("supporter", "You are welcome.", strategy="Others"),
        ],
    },
    {  # usr/sys
        "experience_type": "Current Experience",
        "emotion_type": "sadness",
        "problem_type": "breakup",
        "situation": "My partner left me.",
        "survey_score": {
            "seeker": {
                "initial_emotion_intensity": "5",
                "empathy": "3",
                "relevance": "2",
                "final_emotion_intensity": "5",
            }
        },
        "dialog": [
            _t("usr", "I am so sad."),
            _t("sys", "I am here for you.", strategy="Affirmation and Reassurance"),
            _t("usr", "Thanks.", feedback="2"),
            _t("sys", "Do you want to talk about it?", strategy="Question"),
            _t("usr", "Maybe later."),
        ],
    },
    {  # speaker/listener (EmpatheticDialogues naming: speaker = seeker)
        "experience_type": "Current Experience",
        "emotion_type": "fear",
        "problem_type": "health",
        "situation": "I have a medical test tomorrow.",
        "survey_score": {
            "seeker": {
                "initial_emotion_intensity": "3",
                "empathy": "4",
                "relevance": "5",
                "final_emotion_intensity": "1",
            }
        },
        "dialog": [
            _t("speaker", "I have a test tomorrow and I am scared."),
            _t("listener", "That is understandable.", strategy="Restatement or Paraphrasing"),
            _t("speaker", "What if it is bad?", feedback="3"),
            _t("listener", "Whatever happens, you will have support.", strategy="Affirmation and Reassurance"),
        ],
    },
]

#: Expected canonical values of :data:`ESCONV_SESSIONS` with merge_consecutive=True.
ESCONV_EXPECTED: dict[str, Any] = {
    "convo_ids": ["esconv-00000", "esconv-00001", "esconv-00002"],
    "empathy_score": [100.0, 60.0, 80.0],
    "relevance_score": [80.0, 40.0, 100.0],
    "intensity_drop_raw": [2.0, 0.0, 2.0],
    "intensity_drop_score": [75.0, 50.0, 75.0],
    # per session: roles and local feedback of the merged turns
    "roles": [
        ["User", "AI", "User", "AI", "User", "AI", "User", "AI"],
        ["User", "AI", "User", "AI", "User"],
        ["User", "AI", "User", "AI"],
    ],
    "feedback": [[None, 4.0, None, 5.0, None, 5.0, None, None], [None, 2.0, None, None, None], [None, 3.0, None, None]],
    "strategy_merged": "Question+Question",
}


def write_esconv(path: str | Path, sessions: list[dict[str, Any]] | None = None) -> Path:
    """Write an ESConv JSON list (default :data:`ESCONV_SESSIONS`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ESCONV_SESSIONS if sessions is None else sessions, indent=1))
    return path


# --------------------------------------------------------------------------- SODA

SODA_RECORDS: list[dict[str, Any]] = [
    {
        "head": "PersonX moves to a new city",
        "relation": "xWant",
        "tail": "to make friends",
        "narrative": "Jamie moved to Boston and wants to make friends.",
        "dialogue": [
            "Hi, I just moved here.",
            "Welcome! How do you like it?",
            "It is big.",
            "You will get used to it.",
        ],
        "speakers": ["Jamie", "Alex", "Jamie", "Alex"],
        "split": "train",
    },
    {
        "head": "PersonX bakes a cake",
        "relation": "xReact",
        "tail": "proud",
        "narrative": "Sam baked a cake for Kim's birthday.",
        "dialogue": ["I made you a cake!", "Wow, thank you!", "I hope you like chocolate.", "I love it.", "Great."],
        "speakers": ["Sam", "Kim", "Sam", "Sam", "Kim"],
        "split": "valid",
    },
]


def write_soda(path: str | Path, records: list[dict[str, Any]] | None = None, jsonl: bool | None = None) -> Path:
    """Write SODA records as a JSON list, or as JSONL (default: by the ``.jsonl`` suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = SODA_RECORDS if records is None else records
    if jsonl if jsonl is not None else path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path


def write_generations(
    path: str | Path, n_contexts: int = 3, seeds: tuple[int, ...] = (0, 1), max_new_tokens: int = 20
) -> pd.DataFrame:
    """A realistic ``generations.csv`` (the notebook-07 contract) made with the base SmolLM2 policy.

    For tests of notebooks 08/09 until 07_ppo writes the real file: contexts are AI
    turns of the smoke profile's simulated corpus (the last 6 turns, one
    ``User: …`` / ``AI: …`` line each); models are ``ground truth`` (the corpus'
    own reply), ``base`` (SmolLM2 sampled with the seed) and ``base greedy``
    (greedy decoding, standing in for a second policy). No adapted model: this
    fixture must never be mistaken for PPO results.
    """
    import torch

    from geli_lib.core.models import load_policy
    from geli_lib.core.params import load_params
    from geli_lib.corpus.data import load_corpus

    corpus = load_corpus(load_params("smoke"), progress=False)
    turns = corpus.turns.sort_values(["convo_id", "turn_idx"])
    contexts = []
    for cid, g in turns.groupby("convo_id", sort=True):
        lines = [("AI: " if a else "User: ") + " ".join(str(u).split()) for a, u in zip(g["is_ai"], g["utterance"])]
        ai = [i for i, a in enumerate(g["is_ai"]) if a and i >= 4]
        if ai:
            i = ai[0]
            contexts.append(
                {
                    "convo_id": cid,
                    "turn_idx": int(g["turn_idx"].iloc[i]),
                    "history": "\n".join(lines[i - 4 : i]),
                    "truth": lines[i].removeprefix("AI: "),
                }
            )
        if len(contexts) == n_contexts:
            break
    model, tok = load_policy()
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": c["history"]}], tokenize=False, add_generation_prompt=True)
        for c in contexts
    ]
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

    def generate(sample: bool, seed: int) -> list[str]:
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                pad_token_id=tok.pad_token_id,
                **({} if sample else {"temperature": None, "top_p": None, "top_k": None}),
            )
        return [t.strip() for t in tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)]

    # One thread: a batch this small gains nothing from more, and on a busy machine (tests running
    # side by side) competing torch threads made it ~20x slower (measured: 66 s vs 3 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        greedy = generate(False, 0)
        sampled = {seed: generate(True, seed) for seed in seeds}
    finally:
        torch.set_num_threads(threads)
    rows = []
    for seed in seeds:
        for c, s, gr in zip(contexts, sampled[seed], greedy):
            base = {
                "corpus": "simulated",
                "seed": seed,
                "context_id": f"{c['convo_id']}:{c['turn_idx']}",
                "convo_id": c["convo_id"],
                "turn_idx": c["turn_idx"],
                "history": c["history"],
            }
            rows += [
                {**base, "model": "ground truth", "response": c["truth"]},
                {**base, "model": "base", "response": s},
                {**base, "model": "base greedy", "response": gr},
            ]
    gens = pd.DataFrame(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    gens.to_csv(path, index=False)
    return gens


def simulated_corpus(cache_root: Path, **overrides: Any) -> tuple[Any, Any]:
    """(params, corpus): the smoke profile with ``overrides``, simulated and loaded under ``cache_root``.

    ``$GELI_CACHE`` points at ``cache_root`` only while the corpus is made, so a
    module-scoped fixture can call this without leaking the variable into other tests.
    """
    import os

    from geli_lib.core.params import load_params
    from geli_lib.corpus.data import load_corpus

    old = os.environ.get("GELI_CACHE")
    os.environ["GELI_CACHE"] = str(cache_root)
    try:
        params = load_params("smoke", **overrides)
        return params, load_corpus(params, progress=False, workers=1)
    finally:
        if old is None:
            os.environ.pop("GELI_CACHE")
        else:
            os.environ["GELI_CACHE"] = old


def tiny_reward_data(cache_root: Path, **overrides: Any) -> tuple[Any, Any]:
    """(params, RewardData): a 6-conversation simulated corpus (4 train, 2 held out) with random
    12-d features instead of an encoder, so reward heads train in a second."""
    from geli_lib.corpus.data import build_pairs
    from geli_lib.reward import experiments as ex
    from geli_lib.reward import reward_model as rm

    params, corpus = simulated_corpus(cache_root, simulation={"n_conversations": 6}, **overrides)
    pairs = build_pairs(corpus, params.data)
    ids = sorted(pairs["convo_id"].unique())
    pairs["split"] = np.where(pairs["convo_id"].isin(ids[:4]), "reward_train", "reward_test")
    feats = np.random.default_rng(0).normal(size=(len(pairs), 12)).astype(np.float32)
    labels = {"va": rm.visual_affect_labels(corpus, pairs), "ls": rm.sentiment_labels(pairs)}
    train = rm.make_train_data(corpus, pairs, feats, ids[:4], labels)
    return params, ex.RewardData(corpus, pairs, feats, labels, train)
