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

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from geli_lib import figures
from geli_lib.core import load_params, timed
from geli_lib.reward import experiments

params = load_params(profile, corpus=corpus, data_path=data_path)
results = params.results_key  # results/<profile>[/<corpus>]: other corpora never overwrite the default

# %%
with timed(results, "04: prepare reward data"):
    data = experiments.prepare_reward_data(params)
with timed(results, "04: train LI methods and oracle"):
    specs = experiments.table1_specs(params, "li")
    rows, preds = experiments.run_methods(data, specs, params.seeds, params)
experiments.write_rows(results, "li", rows, data, preds)
display(experiments.table1(rows))

# %%
best = experiments.table1_best(rows, "delta_li_within", lowest=False)
display(
    Markdown(
        f"Largest Δr̂_LI within conversations: **{best.name}** ({best.delta_li_within:.3f}); "
        f"its L_GE MSE is {best.l_ge_mse:.1f}."
    )
)

# %% [markdown]
# ## Training curves
#
# The LI loss (eq. 6) per epoch, one line per seed; the oracle's is the MSE to the planted truth.

# %%
curves = experiments.loss_curves(params, specs, params.seeds)
figures.save_figure(figures.loss_curves(curves), results, "04_loss_curves")
