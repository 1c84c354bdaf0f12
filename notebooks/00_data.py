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
# # 00 · The data: conversations, session scores and the listener's face
#
# GELI learns from two signals about a long conversation between a **User** (the
# listener) and an **AI** (the speaker whose utterances we want to reward):
#
# - the **global explicit** score $R_{GE}(\tau)$: one number after the
#   conversation (CANDOR's post-chat *overall affect*, 1-10, used ×10);
# - the **local implicit** signals: the listener's face, gaze, nods and voice,
#   second by second, while each AI utterance is heard.
#
# This notebook loads a corpus into the study's canonical form (conversations,
# turns, the listener's per-second frames) and looks at it the way the papers
# do. By default the corpus is *simulated* in CANDOR's file layout with a
# **planted** reward for every AI turn, so later notebooks can measure how
# close each decomposition comes to the truth. Set `corpus` and `data_path` to
# run on CANDOR, ESConv or SODA instead.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""

# %% tags=["hide-input"]
from IPython.display import display

from geli_lib import figures
from geli_lib.core import load_params, results_dir, timed, write_csv
from geli_lib.corpus import data
from geli_lib.listener import features

params = load_params(profile, corpus=corpus, data_path=data_path)
results = params.results_key  # results/<profile>[/<corpus>]: other corpora never overwrite the default

# %% [markdown]
# ## The simulated corpus: what is planted
#
# The simulator (`geli_lib.corpus.simulation`) draws each conversation top to bottom, so the later
# notebooks can be checked against a truth no real corpus has:
#
# 1. **The listener** has a mood $m \sim \mathcal N(\mu_m, \sigma_m)$ (logit units) that shifts every
#    turn, and tastes for a few social acts.
# 2. **The AI** has habits $\pi \sim \mathrm{Dirichlet}$ over social acts (empathy, humour, questions, ...)
#    and a skill $\kappa \sim \mathrm{Beta}$: with probability $\kappa$ it picks the act that fits the
#    context, otherwise one from its habits.
# 3. **Each AI turn's true reward.** A latent quality
#    $q_t = v(\text{act}_t) + \text{fit}_t + \text{taste}(\text{act}_t) + \varepsilon_t$,
#    $\varepsilon_t \sim \mathcal N(0, \sigma_{turn})$, where the fit rewards e.g. empathy after bad news
#    and punishes ignoring a question. The listener's pleasantness is $p_t = \sigma(m + q_t)$ and the
#    true reward $r_t = 100\,p_t$.
# 4. **The session score** is the mean of the AI turns' rewards plus noise, on CANDOR's 1-10 scale:
#    $R = 10 \cdot \mathrm{clip}\big(\mathrm{round}((\tfrac1T \sum_t r_t + \eta)/10), 1, 10\big)$,
#    $\eta \sim \mathcal N(0, \sigma_{score})$. A turn's reward never depends on the conversation's
#    length $T$ (the fixed-$T$ mean form that 02-03 train in).
# 5. **The listener's face**, per second, follows the turn heard `reaction_lag` seconds earlier: a
#    reaction $s = 2p_t - 1$ adds $c \cdot s$ to the logit of happiness (`face_coupling` $c$) plus
#    noise of SD `face_noise`; a softmax gives the eight emotion probabilities. Visual affect is
#    therefore a noisy proxy of $r_t$, and 06 re-simulates the same conversations with $c = 0$
#    (a face unrelated to the truth) as a placebo.
# 6. **The AI's wording** carries a tone that agrees with $q_t$ only with probability
#    `sentiment_coupling`: language sentiment is a weak proxy, as the papers found.

# %% [markdown]
# ## Loading
#
# The loader reads the CANDOR layout (one folder per conversation: transcript,
# survey, per-second audio-video features) with the authors' conventions: the
# first speaker is the User whose survey gives $R_{GE}$, the other speaker's
# turns are the AI turns, and the cliffhanger segmentation is used. The result
# is cached as parquet, keyed by the input's content, so re-runs are instant.

# %%
with timed(results, "00_data: load corpus"):
    corpus_data = data.load_corpus(params)
display(corpus_data.summary_table())
write_csv(results_dir(results, "tables") / "corpus_summary.csv", corpus_data.summary_table(), index=True)
if corpus_data.skipped:
    print("skipped while loading:", {k: len(v) for k, v in corpus_data.skipped.items()})

# %% [markdown]
# Conversations are split, by conversation, into reward-function training,
# held-out reward evaluation and RL prompts, as in the papers (LLM-GELI
# App. E: 360 / 40 / 600). The split sorts ids and shuffles with a seed, so it
# is the same on every machine.

# %%
split = data.split_conversations(corpus_data.conversations, params.splits)
display(split.value_counts().rename("conversations").to_frame())

# %% [markdown]
# ## The global explicit score
#
# CANDOR's overall affect is skewed high (mean 73.8, sd 20.1 on the ×10 scale).
# The grey bars are the distribution LLM-GELI reports (App. E.1).

# %%
fig = figures.score_histogram(corpus_data.conversations, params.corpus)
figures.save_figure(fig, results, "00_score_histogram")

# %% [markdown]
# ## Conversation and turn lengths
#
# GELI's difficulty is the horizon: one score for a conversation of many turns.

# %%
fig = figures.length_panels(corpus_data.conversations, corpus_data.turns)
figures.save_figure(fig, results, "00_lengths")

# %% [markdown]
# ## The listener's face
#
# The visual-affect signal starts from per-second facial-emotion probabilities
# of the listener. Only *happiness* counts as positive polarity (GELI eq. 7).

# %%
if len(corpus_data.frames):
    emotions = figures.emotion_distribution(corpus_data.frames)
    display(emotions)
    fig = figures.emotion_bars(emotions)
    figures.save_figure(fig, results, "00_emotions")
else:
    print(f"{params.corpus}: no listener video in this corpus")

# %% [markdown]
# ## Does visual affect track the planted reward?
#
# For each AI turn, the label $\Gamma$ is 1 when the listener's most frequent
# arg-max emotion during the utterance is happiness, else 0 (the authors'
# convention; turns of five words or fewer get 0). On the simulated corpus we
# can check how good a proxy that is for the true turn reward: it should be
# related, but noisily, as faces are in life.

# %%
if len(corpus_data.frames):
    summary = features.turn_listener_summary(corpus_data)
    display(summary["va_label"].value_counts().rename("AI turns").to_frame())
    if corpus_data.turns["true_reward"].notna().any():
        fig = figures.affect_vs_truth(summary, corpus_data.turns)
        figures.save_figure(fig, results, "00_affect_vs_truth")

# %% [markdown]
# On the simulated corpus every AI turn has a social act. The planted reward
# depends on the act *and* on how it fits the moment (empathy after bad news,
# humour in a relaxed mood), so the act alone does not determine the reward:
# the spread within each act is what a decomposition must learn from context.

# %%
if corpus_data.turns["true_reward"].notna().any():
    ai = corpus_data.turns[corpus_data.turns["is_ai"]]
    display(ai.groupby("act")["true_reward"].describe()[["count", "mean", "std"]].round(2))

# %% [markdown]
# ## What a reward model sees
#
# $r_\theta(s_t, a_t)$ reads the dialogue history $s_t$ (the last 20 turns as
# `" User: …"` / `" AI: …"`, left-truncated) and the AI's utterance $a_t$.

# %%
pairs = data.build_pairs(corpus_data, params.data)
display(pairs.head(3)[["convo_id", "turn_idx", "history", "response", "true_reward"]])
print(f"{len(pairs)} history-utterance pairs")
