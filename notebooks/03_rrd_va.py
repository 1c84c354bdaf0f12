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
# # 03 · GELI: RRD (global explicit) + visual affect (local implicit)
#
# GELI (eq. 2) trains one reward function on both signals:
#
# $$\mathcal{L}(\theta) = \lambda\,\mathcal{L}_{GE}(\theta) + (1-\lambda)\,\mathcal{L}_{LI}(\theta)$$
#
# - $\mathcal{L}_{GE}$: the RRD estimate of the decomposition loss (eq. 9), $K$ turns sampled per conversation;
# - $\mathcal{L}_{LI}$: the MSE between $r_\theta$ and the local implicit proxy reward (eq. 6), here
#   visual affect: $\Gamma = 1$ when the listener's most frequent facial emotion during the AI's
#   utterance is happiness (eq. 7).
#
# **How turn rewards add up.** Eq. 3 writes $R_{GE}(\tau) \approx \sum_t r_\theta(s_t, a_t)$, but then
# a turn's reward shrinks as $1/T$ in longer conversations, and $r_\theta$ never sees $T$. The
# authors' training script uses the fixed-$T$ mean form
# $R_{GE}(\tau) \approx \frac{\bar T}{T} \sum_t r_\theta(s_t, a_t)$ ($\bar T = 160$ there), in which a
# turn's reward does not depend on the conversation's length; $\bar T$ is only the unit of $r_\theta$.
# The study trains and evaluates in that form (`reward.ge_form: mean`; $\bar T$ defaults to the mean
# number of AI turns; `ge_form: sum` keeps eq. 3 as written).
#
# The paper does not state $\lambda$; the authors' training script sets $\lambda = 0.5$, the profiles'
# value. Change `lam`, `K`, `ge_method` or `li_signal`, e.g.
# `papermill notebooks/03_rrd_va.ipynb out.ipynb -p lam 0.1`.
#
# Next to GELI as parameterised, three variants test *why* GELI may behave as RRD alone:
#
# - **RRD-L_RD (bias-corrected).** Ren et al. show that the RRD loss is eq. 4 plus the variance of its
#   Monte-Carlo estimate, $\mathcal{L}_{RRD} = \mathcal{L}_{RD} + \mathrm{Var}_I(\hat S)$: a penalty on
#   any contrast between the turns of a conversation, whatever the face says. Subtracting the
#   sample-variance term gives an unbiased estimate of eq. 4.
# - **Exact sum.** Eq. 4 itself, every turn, no sampling.
# - **The authors' recipe.** A visual-affect head first, then GELI ($\lambda = 0.5$) continued from it
#   for a few epochs, keeping the epoch with the best L_GE on held-out training conversations.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
# None: the profile's value. Any other value makes this an ad-hoc run, whose results go to
# results/<profile>/adhoc/<the changed parameters>/, never over the study's.
lam = None  # λ of eq. 2 (reward.lam)
K = None  # RRD sample size (reward.K)
ge_method = None  # rrd, ircr, rudder or sum (reward.ge_method)
li_signal = None  # va or ls (reward.li_signal)
seed = None  # one seed instead of every seed of the profile

# %%
from IPython.display import display

from geli_lib import experiments, figures
from geli_lib.params import load_params
from geli_lib.runs import timed

params = load_params(profile, corpus=corpus, data_path=data_path, seeds=None if seed is None else [seed],
                     reward={"lam": lam, "K": K, "ge_method": ge_method, "li_signal": li_signal})
results = params.results_key  # results/<profile>[/<corpus>][/adhoc/…]: never over another run's results
seeds = params.seeds

# %%
with timed(results, "03: prepare reward data"):
    data = experiments.prepare_reward_data(params)

# %% [markdown]
# ## Train GELI and evaluate
#
# A good GELI reward function has both a low $\mathcal{L}_{GE}$ (its turn rewards add up to the
# session score) and a large $\Delta\hat r_{LI}$ (eq. 8: it rewards more where the listener smiled):
#
# $$\Delta\hat r_{LI} = \mathbb{E}[\hat r \mid \Gamma = 1] - \mathbb{E}[\hat r \mid \Gamma = 0].$$
#
# The listener's mood moves both $\Gamma$ and the score, so a model that only gets each
# conversation's level right already earns $\Delta\hat r_{LI} > 0$. The column "Δr̂_LI within" computes
# eq. 8 on predictions demeaned inside each conversation: the part that favours the smiled-at turns.

# %%
with timed(results, "03: train GELI"):
    rows, preds = experiments.run_methods(data, experiments.table1_specs(params, "geli"), seeds, params)
experiments.write_rows(results, "geli", rows, data, preds)
display(experiments.table1(rows))

# %% [markdown]
# ## One held-out conversation, turn by turn
#
# Bars are the per-turn rewards of the first held-out conversation next to the planted truth
# (when the corpus has one).

# %%
pred_table = experiments.read_predictions(results, ["geli"])
if len(pred_table):
    first = sorted(pred_table["convo_id"].unique())[0]
    fig = figures.unroll(pred_table, first, list(preds))
    figures.save_figure(fig, results, "03_unroll")
