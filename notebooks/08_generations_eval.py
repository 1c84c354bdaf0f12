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
# Each is computed per RL seed; tables show mean ± sd over seeds.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
generations_path = ""  # empty: results/<profile>/tables/generations.csv (written by 07_ppo)

# %%
import pandas as pd
from IPython.display import display

from geli_lib import figures
from geli_lib import generation_eval as ge
from geli_lib.experiments import saved_reward_functions
from geli_lib.io import write_csv
from geli_lib.params import load_params
from geli_lib.runs import results_dir, timed

pd.set_option("display.max_colwidth", None)  # show whole responses and questions
params = load_params(profile, corpus=corpus, data_path=data_path)
gens = ge.read_generations(generations_path or results_dir(profile, "tables") / "generations.csv")
print(f"{len(gens)} responses: {gens['model'].nunique()} models × {gens['context_id'].nunique()} contexts, "
      f"seeds {sorted(gens['seed'].unique().tolist())}, corpora {sorted(gens['corpus'].unique().tolist())}")

# %% [markdown]
# ## The models side by side (GELI Fig. 3, App. H)
#
# One held-out context and every model's response to it.

# %%
first = gens.iloc[0]
print(first["history"])
display(gens[(gens["context_id"] == first["context_id"]) & (gens["seed"] == first["seed"])
             & (gens["corpus"] == first["corpus"])][["model", "response"]].set_index("model"))

# %% [markdown]
# ## Automatic scores (mean ± sd over seeds)
#
# The reward functions are the ones notebooks 02-04 trained on this corpus
# (lowest seed of each); constant ones (Mean, Mode) score every response alike
# and are left out. Their scores are on the session-score scale of each
# function's training (per-turn shares of a 0-100 score), so compare within a
# column, not across columns.

# %%
reward_fns = saved_reward_functions(profile, params.corpus)
if not reward_fns:
    print(f"no trained reward functions saved for {profile}/{params.corpus}: run notebooks 02-04 "
          "for cross-scoring; the text metrics below do not need them")
with timed(profile, "08: automatic evaluation"):
    rows = ge.auto_eval(gens, params.eval, params.data, reward_fns, device=params.device)
write_csv(results_dir(profile, "tables") / "auto_eval.csv", rows)
display(ge.auto_eval_table(rows))

# %%
fig = figures.auto_eval_bars(rows)
figures.save_figure(fig, profile, "08_auto_eval")
