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

# %% tags=["hide-input"]
import inspect

import torch
from IPython.display import Code, display

from geli_lib import figures
from geli_lib.core import load_params, timed
from geli_lib.reward import experiments, losses, reward_model

params = load_params(
    profile,
    corpus=corpus,
    data_path=data_path,
    seeds=None if seed is None else [seed],
    reward={"lam": lam, "K": K, "ge_method": ge_method, "li_signal": li_signal},
)
results = params.results_key  # results/<profile>[/<corpus>][/adhoc/…]: never over another run's results
seeds = params.seeds

# %% [markdown]
# ## One GELI step, by hand
#
# Two conversations of 5 and 3 AI turns, the rewards $\hat r_t = r_\theta(s_t, a_t)$ the head gives
# their turns at some step of training, and their session scores $R$. With $\bar T = 4$ the exact
# decomposition loss (eq. 4, every turn) compares $R$ with $\frac{\bar T}{T}\sum_t \hat r_t$:

# %%
mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])  # two conversations: 5 and 3 AI turns
r_hat = torch.tensor([[15.0, 20.0, 10.0, 25.0, 10.0], [20.0, 10.0, 15.0, 0.0, 0.0]])  # r_θ(s_t, a_t) at this step
R = torch.tensor([65.0, 55.0])  # their session scores
T_bar, K = 4.0, 2  # the unit of r̂ (R ≈ (T̄/T)·Σ_t r̂_t), and RRD's sample size
print("(T̄/T)·Σ_t r̂_t per conversation:", losses.session_estimate(r_hat, mask, T_bar).tolist())
print("L_GE, eq. 4 (every turn):", losses.sum_decomposition_loss(r_hat, mask, R, T_bar).item())

# %% [markdown]
# RRD (eq. 9) reads only $K$ turns per conversation, drawn uniformly without replacement, and
# scales their mean back up: $\hat S = \frac{\bar T}{K}\sum_{t \in I} \hat r_t$ is unbiased for
# $\frac{\bar T}{T}\sum_t \hat r_t$.

# %%
gen = torch.Generator().manual_seed(0)
idx, valid = losses.sample_rrd_indices(mask.sum(1), K, generator=gen)  # I ~ ρ_T: K distinct turns each
S_hat = T_bar * r_hat.gather(1, idx).mean(1)  # (T̄/K)·Σ_{t∈I} r̂_t
print("sampled turns:", idx.tolist(), " Ŝ:", S_hat.tolist())
print(
    "L_RRD by hand:",
    ((R - S_hat) ** 2).mean().item(),
    " losses.rrd_loss:",
    losses.rrd_loss(r_hat, mask, R, idx, valid, T_bar).item(),
)

# %% [markdown]
# Unbiased for the estimate is not unbiased for the loss. Over many draws the RRD loss is eq. 4
# **plus** the variance of $\hat S$ (Ren et al., 2021), $\mathrm{Var}_I(\hat S) = \bar T^2 (1 - K/T)\, s^2_{\hat r} / K$,
# with $s^2_{\hat r}$ the variance of a conversation's turn rewards: RRD also pushes the turns of a
# conversation towards each other, whatever the listener shows. The bias-corrected RRD-L_RD
# subtracts the sample-variance term and averages back to eq. 4.

# %%
draws = [losses.sample_rrd_indices(mask.sum(1), K, generator=gen) for _ in range(10000)]
plain = torch.stack([losses.rrd_loss(r_hat, mask, R, i, v, T_bar) for i, v in draws]).mean()
corrected = torch.stack([losses.rrd_loss(r_hat, mask, R, i, v, T_bar, bias_correction=True) for i, v in draws])
T = mask.sum(1)
var = T_bar**2 * (1 - K / T) * torch.stack([r_hat[b, :t].var() for b, t in enumerate(T.tolist())]) / K
print(
    f"mean of 10,000 draws: L_RRD {plain:.1f} ≈ eq. 4 + mean Var_I(Ŝ) = "
    f"{losses.sum_decomposition_loss(r_hat, mask, R, T_bar):.1f} + {var.mean():.1f}; "
    f"bias-corrected {corrected.mean():.1f}"
)

# %% [markdown]
# The local term (eq. 6) regresses each turn on the listener's signal: $r_{LI} = \Gamma \cdot s$,
# with $\Gamma = 1$ where the listener smiled (eq. 7) and $s$ the head's output scale (here 40); a
# turn without a face window (NaN) is left out. Eq. 2 mixes the two losses, which live on different
# scales: λ is not a share.

# %%
gamma = torch.tensor([[0.0, 1.0, 0.0, 1.0, float("nan")], [1.0, 0.0, 0.0, 0.0, 0.0]])  # Γ of each turn (eq. 7)
l_li = losses.li_loss(r_hat, mask, gamma * 40.0)  # eq. 6
l_ge = losses.rrd_loss(r_hat, mask, R, idx, valid, T_bar)  # eq. 9, the draw above
print(f"L_LI {l_li:.1f}, L_GE {l_ge:.1f}; eq. 2 at λ = 0.5: {losses.geli_loss(l_ge, l_li, 0.5):.1f}")

# %% [markdown]
# That is the whole training step. The library's, which every method of Table 1 goes through
# (λ = 1 is a GE method alone, λ = 0 an LI one), is this function:

# %%
display(Code(inspect.getsource(reward_model.step_loss), language="python"))

# %% tags=["hide-input"]
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
    specs = experiments.table1_specs(params, "geli")
    rows, preds = experiments.run_methods(data, specs, seeds, params)
experiments.write_rows(results, "geli", rows, data, preds)
display(experiments.table1(rows))

# %% [markdown]
# ## Training curves
#
# The loss of eq. 2 per epoch (mean over the training conversations), one line per seed. The
# authors' recipe shows only its fine-tuning epochs (its VA start is trained first).

# %%
fig = figures.loss_curves(experiments.loss_curves(params, specs, seeds))
figures.save_figure(fig, results, "03_loss_curves")

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
