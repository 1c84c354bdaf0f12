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
# # 08 · Generations of the adapted agents: automatic evaluation
#
# Notebook 07 adapted the policy to each reward function with PPO and wrote the
# responses of every model to the same held-out dialogue contexts
# (`tables/generations.csv`): the unadapted **base** policy, the **ground truth**
# (what the real speaker said) and one policy per reward function. The papers judge
# these responses with human annotators (notebook 09). Before paying for that,
# cheap automatic signals tell whether adaptation changed anything, and how:
#
# - **cross-scoring**: every model's responses scored by *every* trained reward
#   function $r_\theta(s_t, a_t)$. A policy should gain most under its own reward
#   function; a gain under its own reward alone, with worse text statistics,
#   is reward hacking;
# - **positivity**: VADER's compound score and the share of positive responses;
# - **diversity**: distinct-1 / distinct-2 over a model's responses;
# - **length** (words), **specificity proxy** (share of the response's content
#   words found in the dialogue history) and **repetition** (share of a
#   response's word bigrams that repeat);
# - **identical to base**: the share of responses equal to the base model's
#   response to the same context (1 = adaptation changed nothing there).
#
# Each is computed per RL seed; tables show mean ± sd over seeds. A study run trains one RL seed, so its
# cells are means alone: 07 run again with `-p seed 1`, `-p seed 2` adds its seeds to `generations.csv`
# (`benchmarks/rl_seeds.py` does it in one command), and this notebook then gives the ± over them.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
generations_path = ""  # empty: results/<profile>[/<corpus>]/tables/generations.csv (written by 07_ppo)

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from geli_lib import figures
from geli_lib.alignment import generation_eval as ge
from geli_lib.core import load_params, results_dir, timed, write_csv
from geli_lib.reward.experiments import ORACLE, by_display_name, saved_reward_functions

pd.set_option("display.max_colwidth", None)  # show whole responses and questions
params = load_params(profile, corpus=corpus, data_path=data_path)
results = params.results_key  # results/<profile>[/<corpus>]: other corpora never overwrite the default
gens = ge.read_generations(generations_path or results_dir(results, "tables") / "generations.csv")
print(
    f"{len(gens)} responses: {gens['model'].nunique()} models × {gens['context_id'].nunique()} contexts, "
    f"seeds {sorted(gens['seed'].unique().tolist())}, corpora {sorted(gens['corpus'].unique().tolist())}"
)

# %% [markdown]
# ## The models side by side (GELI Fig. 3, App. H)
#
# One held-out context and every model's response to it.

# %%
first = gens.iloc[0]
print(first["history"])
display(
    gens[
        (gens["context_id"] == first["context_id"])
        & (gens["seed"] == first["seed"])
        & (gens["corpus"] == first["corpus"])
    ][["model", "response"]].set_index("model")
)

# %% [markdown]
# ## Automatic scores (mean ± sd over seeds)
#
# The reward functions are the ones notebooks 02-04 trained on this corpus
# (lowest seed of each); constant ones (Mean, Mode) score every response alike
# and are left out. Their scores are on the session-score scale of each
# function's training (per-turn shares of a 0-100 score), so compare within a
# column, not across columns.

# %%
reward_fns = by_display_name(saved_reward_functions(profile, params.corpus))  # table name -> folder
if not reward_fns:
    print(
        f"no trained reward functions saved for {profile}/{params.corpus}: run notebooks 02-04 "
        "for cross-scoring; the text metrics below do not need them"
    )
with timed(results, "08: automatic evaluation"):
    per = ge.per_response(gens, params.eval, params.data, reward_fns, device=params.device)
    rows = ge.auto_eval(gens, params.eval, params.data, per=per)
write_csv(results_dir(results, "tables") / "auto_eval.csv", rows)
table = ge.auto_eval_table(rows)
print(table.attrs["note"])
display(table)

# %% [markdown]
# ## Cross-reward table: does optimising one reward raise the others?
#
# Rows: the models (base, every adapted model, the real utterances); columns: every saved
# reward function (the same scoring as RL training: `generation_eval.PairScorer`). Cells: mean
# $\hat r$ over contexts, then mean ± sd over seeds; `*` p < 0.05 and `**` p < 0.01 for the
# difference with the base model, paired over (seed, context) by a two-sided sign-flip
# permutation test. A model adapted to GELI's reward that also beats the base under RRD or
# language sentiment answers the paper's question with a yes; a gain on its own column only,
# with worse repetition or distinct-n above, is reward hacking. On the simulated corpus the oracle, trained
# on the planted truth, says apart whether a gain is one for the truth or only for the learned rewards. The
# reading under the table counts, per model, the rewards it raises and lowers at p < 0.05. The adapting
# algorithm is in `tables/rl_summary.csv` (notebook 07) and the curves' titles.

# %%
stats = ge.cross_reward_stats(gens, per, params.eval.base_model, params.eval.permutations)
write_csv(results_dir(results, "tables") / "cross_rewards.csv", stats)
cross = ge.cross_reward_table(stats, order=[params.eval.base_model])
print(cross.attrs["note"])
display(cross)
display(Markdown(ge.cross_reward_reading(stats, truth=ORACLE.name)))
adapted = [m for m in stats["model"].unique() if m in set(stats["reward_fn"])]
own = stats[stats["model"].isin(adapted) & (stats["model"] == stats["reward_fn"])]
display(
    own[["corpus", "model", "mean", "sd", "sd_contexts", "n", "diff", "p", "test"]]
    .round(4)
    .rename(columns={"model": "adapted to (scored by its own reward)"})
)

# %% [markdown]
# ## A collapse control: one sentence in every context
#
# An adapted model whose responses collapse onto one sentence (distinct-2 above, `collapsed` in
# notebook 07's summary) may have found what its reward function rewards *whatever was said*.
# The control: take each adapted model's most frequent response, give it in **every** held-out
# context, and score it beside the real speaker's reply under the model's own reward function and,
# on the simulated corpus, the oracle trained on the planted truth. The last column is the share of
# contexts where the fixed sentence beats the real reply: near 1 under its own reward and low under
# the oracle means the reward function prefers that sentence regardless of the dialogue, a
# maximiser no KL weight keeps diverse when the reference model already likes the sentence.

# %%
probe_fns = {n: reward_fns[n] for n in [*adapted, ORACLE.name] if n in reward_fns}
probe = ge.modal_response_probe(gens, per, probe_fns, params.data, models=adapted, device=params.device)
write_csv(results_dir(results, "tables") / "modal_probe.csv", probe)
own_or_oracle = (probe["reward_fn"] == probe["model"]) | (probe["reward_fn"] == ORACLE.name)
display(probe[own_or_oracle].round(3).set_index(["model", "reward_fn"]))

# %%
fig = figures.auto_eval_bars(rows)
figures.save_figure(fig, results, "08_auto_eval")
