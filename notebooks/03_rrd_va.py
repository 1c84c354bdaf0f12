# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · GELI: RRD (global explicit) + visual affect (local implicit)
#
# GELI (eq. 2) trains one reward function on both signals:
#
# $$\mathcal{L}(\theta) = \lambda\,\mathcal{L}_{GE}(\theta) + (1-\lambda)\,\mathcal{L}_{LI}(\theta)$$
#
# - $\mathcal{L}_{GE}$: the RRD estimate of the sum decomposition (eq. 9), $K$ turns sampled per conversation;
# - $\mathcal{L}_{LI}$: the MSE between $r_\theta$ and the local implicit proxy reward (eq. 6), here
#   visual affect: $\Gamma = 1$ when the listener's most frequent facial emotion during the AI's
#   utterance is happiness (eq. 7).
#
# The paper fixed $\lambda = 0.5$. Change `lam`, `K`, `ge_method` or `li_signal` here, e.g.
# `papermill notebooks/03_rrd_va.ipynb out.ipynb -p lam 0.5`.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
lam = 0.5
K = 32
ge_method = "rrd"
li_signal = "va"
seed = None  # None: every seed of the profile

# %%
from IPython.display import display

from geli_lib import experiments, figures
from geli_lib.params import load_params
from geli_lib.runs import timed

params = load_params(profile, corpus=corpus, data_path=data_path,
                     reward={"lam": lam, "K": K, "ge_method": ge_method, "li_signal": li_signal})
seeds = params.seeds if seed is None else [int(seed)]

# %%
with timed(profile, "03: prepare reward data"):
    data = experiments.prepare_reward_data(params)

# %% [markdown]
# ## Train GELI and evaluate
#
# A good GELI reward function has both a low $\mathcal{L}_{GE}$ (its turn rewards add up to the
# session score) and a large $\Delta\hat r_{LI}$ (eq. 8: it rewards more where the listener smiled).

# %%
with timed(profile, "03: train GELI"):
    rows, preds = experiments.run_methods(data, experiments.table1_specs(params, "geli"), seeds, params)
experiments.write_rows(profile, "geli", rows, data, preds)
display(experiments.table1(rows))

# %% [markdown]
# ## One held-out conversation, turn by turn
#
# Bars are the per-turn rewards of the first held-out conversation next to the planted truth
# (when the corpus has one).

# %%
pred_table = experiments.read_predictions(profile, ["geli"])
if len(pred_table):
    first = sorted(pred_table["convo_id"].unique())[0]
    fig = figures.unroll(pred_table, first, list(preds))
    figures.save_figure(fig, profile, "03_unroll")
