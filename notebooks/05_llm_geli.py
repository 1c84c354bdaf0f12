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
# # 05 · LLM-GELI: an LLM decomposes the session score, r_θ is distilled from it
#
# GELI needs a hand-made local signal (visual affect, eq. 7). LLM-GELI (Sec. 4) asks an LLM
# instead: it reads the transcript and the session score $R_{GE}(\tau)$ and redistributes the
# score over the AI's utterances (eqs. 2-4), softly constrained to add up:
#
# $$\sum_{t} r_{LI}(s_t, a_t) = R_{GE}(\tau).$$
#
# The **multimodal** variant also shows it the listener's reaction after each AI utterance, as
# words ("listener smiled, mostly happy (0.62), nodded, …", from the per-second features). A
# text-only reward model is then distilled from the labels by MSE (eq. 5):
#
# $$\mathcal{L}_{LI}(\theta) = \mathbb{E}_{(s_t,a_t)}\big[(r_{LI}(s_t,a_t) - r_\theta(s_t,a_t))^2\big],$$
#
# The prompt asks for the *salient* utterances, so a turn the LLM leaves out gets the label 0
# (it still counts as "no annotation" in App. J's consistency classes); only the turns of a
# chunk whose answer could not be read at all are masked out of eq. 5. Each chunk's labels are
# shifted to add up to its share of the score (`llm.rescale: shift`).
#
# The paper used o3-mini. Offline, the decomposer here is **SmolLM2-135M-Instruct** (`local`),
# a 135-million-parameter chat model that was never going to do this well; its decoding is
# constrained to the answer's JSON object (every id of the chunk, in order, each with a number
# within the score's range), so it always answers in the format asked for; any
# OpenAI-compatible endpoint (`openai`, e.g. a hosted model or `transformers serve`) is one
# parameter away, and a deterministic **reference decomposer** that splits the score by the
# listener's facial happiness (not an LLM) is the yardstick. Every answer is cached on disk, so
# a re-run makes no model call.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
backend = ""  # empty: the profile setting llm.backend (local, openai or reference)
seed = None  # None: every seed of the profile

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import display

from geli_lib import figures
from geli_lib.core import load_params, timed
from geli_lib.reward import REWARD_TABLE_COLUMNS, experiments, llm

params = load_params(
    profile,
    corpus=corpus,
    data_path=data_path,
    seeds=None if seed is None else [seed],
    llm={"backend": backend} if backend else None,
)
results = params.results_key  # results/<profile>[/<corpus>][/adhoc/…]: never over another run's results
seeds = params.seeds

# %%
with timed(results, "05: prepare reward data"):
    data = experiments.prepare_reward_data(params)

# %% [markdown]
# ## The prompt
#
# The paper's prompt word for word, then one added instruction (answer as a JSON object of
# id → number) and the transcript. Speaker A is the AI; each AI line carries a stable id. A long
# conversation is split into chunks that each get their share of the score.

# %%
cues = llm.listener_cues(data.corpus)
variants = ["text", "multimodal"] if cues else ["text"]
if not cues:
    print(f"{params.corpus}: no listener video, so no multimodal variant (text only)")
ids = llm.llm_conversations(data.train.convo_ids, params.llm)
chunks = {v: llm.build_chunks(data.corpus, ids, params.llm, v, cues) for v in variants}
print(llm.prompt_messages(chunks[variants[-1]][0])[0]["content"][:3000])

# %% [markdown]
# ## Decompose
#
# The LLM decomposes the first `llm.max_conversations` reward-training conversations (all of
# them when 0); the reference decomposer, which costs nothing, decomposes every one. Per chunk:
# how many of its AI turns the answer scored (`n_annotated`), the answer's own sum and its
# deviation from the share, and how the labels were made to add up (`rescaled`).

# %%
decomposer = llm.make_backend(params.llm, params.device)
cache = llm.ResponseCache()
with timed(results, "05: decompose"):
    decs = {v: llm.decompose(chunks[v], decomposer, params.llm, cache) for v in variants}
    everything = llm.build_chunks(data.corpus, data.train.convo_ids, params.llm, "text")
    reference = llm.decompose(everything, llm.ReferenceDecomposer(), params.llm, cache)
print(f"{decomposer.name} ({decomposer.model}): {cache.misses} model call(s), {cache.hits} answer(s) from the cache")
display(
    pd.concat([d.chunks for d in decs.values()], ignore_index=True)[
        [
            "convo_id",
            "chunk",
            "variant",
            "status",
            "attempts",
            "n_ai_turns",
            "n_annotated",
            "share",
            "raw_sum",
            "deviation",
            "rescaled",
            "unknown_ids",
            "reason",
        ]
    ]
)

# %% [markdown]
# ## How good are the labels? (against the planted truth)
#
# On the simulated corpus every AI turn has a planted reward, so each decomposition can be
# scored directly:
#
# * `coverage`: turns with a usable label (those of chunks whose answer was read; a failed
#   chunk's turns are NaN); `annotated`: turns the LLM actually gave a number;
# * `mean_abs_deviation`: mean |Σ answer − share| of the answers as given (eq. 4's soft
#   constraint), `mean_abs_deviation_labels` the same after the rescaling (0 under `shift`);
# * `gt_spearman` / `gt_spearman_within`: Spearman's ρ with the truth, pooled and **within a
#   conversation** (the credit-assignment measure; on ESConv the truth is the seeker's local
#   feedback); `ref_spearman` / `ref_spearman_within`: the same against the reference
#   decomposer's labels.

# %%
on_llm_ids = llm.Decomposition(
    reference.backend,
    reference.model,
    reference.labels[reference.labels["convo_id"].isin(ids)],
    reference.chunks[reference.chunks["convo_id"].isin(ids)],
)
named = {f"{decomposer.name}: {v}": d for v, d in decs.items()}
named.update(
    {
        "reference (not an LLM), same conversations": on_llm_ids,
        "reference (not an LLM), all training conversations": reference,
    }
)
quality = llm.decomposition_table(named, data.corpus, reference=reference)
display(
    quality[
        [
            "decomposition",
            "chunks",
            "failed",
            "coverage",
            "annotated",
            "mean_abs_deviation",
            "mean_abs_deviation_labels",
            "gt_pearson",
            "gt_spearman",
            "gt_spearman_within",
            "ref_spearman",
            "ref_spearman_within",
            "from_cache",
        ]
    ].round(3)
)

# %% [markdown]
# ## Consistency (App. J)
#
# Two samples at temperature 1 of the same conversations; each turn's label falls in one of
# three classes (positive, zero or negative, no annotation). The paper measured 89.1 % ± 5.4 %
# agreement for o3-mini on 10 conversations.

# %%
n_cons = min(params.llm.consistency_conversations, len(ids))
cons_parts = []
with timed(results, "05: consistency"):
    for v in variants:
        sub = [c for c in chunks[v] if c.convo_id in ids[:n_cons]]
        second = llm.decompose(sub, decomposer, params.llm, cache, sample=1)
        cons_parts.append(llm.consistency(decs[v].labels, second.labels).assign(variant=v))
cons = pd.concat(cons_parts, ignore_index=True)
display(cons.groupby("variant")["agreement"].agg(["mean", "std", "count"]).round(3))
figures.save_figure(figures.consistency_bars(cons), results, "05_consistency")

# %% [markdown]
# ## One conversation: the decompositions next to the planted truth

# %%
first = ids[0]
shown = {**named, "reference (not an LLM)": reference}
shown = {k: v for k, v in shown.items() if not k.startswith("reference (not an LLM),")}
table = llm.unroll_table(shown, data.corpus, first)
fig = figures.unroll(table, first, list(shown), max_turns=20)
figures.save_figure(fig, results, "05_decomposition")

# %% [markdown]
# ## Distil r_θ from the labels (eq. 5) and evaluate it on held-out conversations
#
# The reward model sees text only, as in the paper, whichever variant produced its labels.

# %%
rows, preds, specs = [], {}, []
with timed(results, "05: distil"):
    for v in variants:
        if not decs[v].labels["label"].notna().any():
            print(
                f"{llm.distilled_name(v, decomposer)}: skipped, "
                f"the {decomposer.name} decomposer produced no usable label"
            )
            continue
        labelled = llm.distillation_data(data, decs[v].labels)
        specs.append(llm.distilled_spec(v, decomposer))
        r, p = experiments.run_methods(labelled, specs[-1:], seeds, params)
        rows.append(r)
        preds.update(p)
rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(REWARD_TABLE_COLUMNS))
experiments.write_rows(results, "llm", rows, data, preds)
if len(rows):
    display(experiments.table1(rows))
for spec in specs:  # labels beyond the head's range are clipped (reward_model.training._clip_to_range)
    clipped = experiments.saved_info(params, spec.id, seeds, "labels_clipped")
    print(f"{spec.name}: {sum(clipped) / len(clipped):.1%} of the labels lay outside the head's range and were clipped")

# %% [markdown]
# ## What the numbers say
#
# The statement below is computed from the tables above, so it is true for this run's profile,
# corpus and backend.

# %%
q = quality.set_index("decomposition")
for name, r in q.iterrows():
    print(
        f"{name}: {r['coverage']:.0%} of AI turns labelled ({r['annotated']:.0%} scored by the decomposer, the "
        f"rest 0), {r['failed']} of {r['chunks']} chunk(s) failed, mean |Σ answer − share| = "
        f"{r['mean_abs_deviation']:.1f} points ({r['mean_abs_deviation_labels']:.1f} after rescaling), "
        f"truth ρ pooled = {r['gt_spearman']:.2f}, within conversations = {r['gt_spearman_within']:.2f}; "
        f"ρ with the reference decomposer pooled = {r['ref_spearman']:.2f}, within = {r['ref_spearman_within']:.2f}"
    )
print(
    f"consistency of two samples: {cons['agreement'].mean():.0%} (paper, o3-mini: 89%); a turn left "
    "unannotated by both samples counts as agreement (App. J's third class), so read it with the annotated share"
)
