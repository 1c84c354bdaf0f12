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
# # 04 · Local implicit baselines: visual affect and language sentiment alone
#
# What if the reward function learns only from the local signal, ignoring the
# session score ($\lambda = 0$ in eq. 2)?
#
# - **Visual Affect (VA)**: $\Gamma = 1$ when the listener's most frequent facial
#   emotion during the utterance is happiness (eq. 7).
# - **Language Sentiment (LS)**: $\Gamma = 1$ when VADER rates the AI utterance
#   positive: a signal from the speaker's words, not the listener.
# - **Oracle**: on the simulated corpus, the same head trained directly on the
#   planted turn rewards: the ceiling every method is read against.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""

# %%
from IPython.display import display

from geli_lib import experiments
from geli_lib.params import load_params
from geli_lib.runs import timed

params = load_params(profile, corpus=corpus, data_path=data_path)
results = params.results_key  # results/<profile>[/<corpus>]: other corpora never overwrite the default

# %%
with timed(results, "04: prepare reward data"):
    data = experiments.prepare_reward_data(params)
with timed(results, "04: train LI methods and oracle"):
    rows, preds = experiments.run_methods(data, experiments.table1_specs(params, "li"), params.seeds, params)
experiments.write_rows(results, "li", rows, data, preds)
display(experiments.table1(rows))
