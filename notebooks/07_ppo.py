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
# # 07 · Adapting the dialogue model with PPO + LoRA against each reward function
#
# A reward function is only useful if it makes a better conversational agent. GELI (Sec. 5.3,
# App. F) adapts a chat LM with PPO, using the learned $r_\theta(s_t, a_t)$ as the reward and a KL
# penalty that keeps the policy $\pi_\phi$ near the reference $\pi_\eta$ (eq. 1):
#
# $$\max_\phi\; \mathbb{E}\big[r_\theta(s_t, a_t)\big] - \gamma\, D_{KL}\big(\pi_\phi(\cdot\mid s_t)\,\|\,\pi_\eta(\cdot\mid s_t)\big)$$
#
# Here the policy is SmolLM2-135M-Instruct (the papers used LLaMA-2 7B) with a LoRA adapter
# (r = 24, α = 48); the reference is the same model with the adapter switched off. Each context is
# an AI turn of a conversation the reward functions never saw (the `rl` split), shown to the
# policy with GELI Fig. 3's prompt. The reward function keeps its own encoder: an adapter decodes
# the policy's tokens back to text and scores them (see `geli_lib.rl`). Scores are normalised by
# their running mean and SD (the paper's `use_score_norm`), and the KL weight starts at 0.15 and
# adapts towards a target KL, as in the authors' TRL version.
#
# Parameters: `reward_fn` (a reward-table row name, a list, or `"all"` for the profile's set),
# `steps`, `seed`, `algorithm` (`ppo`, `rloo`, `grpo`), and `esconv_path` / `soda_path` to add
# out-of-distribution contexts to the generations.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
reward_fn = "all"  # a reward-table row name, a list of names, or "all" (the profile's rl.reward_fns)
steps = None  # None: the profile's rl.steps
seed = None  # None: the profile's seed
algorithm = None  # None: the profile's (ppo); or rloo / grpo
esconv_path = ""  # ESConv JSON: adds its contexts to the generations
soda_path = ""  # SODA JSON/JSONL: adds its contexts to the generations

# %%
from IPython.display import display
import pandas as pd

from geli_lib import data, experiments, figures, generation_eval, rl
from geli_lib.params import load_params
from geli_lib.runs import timed

overrides = {k: v for k, v in {"steps": steps, "algorithm": algorithm}.items() if v is not None}
params = load_params(profile, corpus=corpus, data_path=data_path, rl=overrides)
seed = params.seed if seed is None else int(seed)
with timed(profile, "07: contexts"):
    dialogues = data.load_corpus(params)
    split = data.split_conversations(dialogues.conversations, params.splits)
    train, held_out = rl.rl_contexts(dialogues, split, params.rl, seed)
print(f"{len(train)} RL contexts from the rl split; {len(held_out)} held-out contexts for generations")

# %% [markdown]
# ## What the policy sees
#
# The system prompt of GELI Fig. 3, then the last turns of the dialogue as the user message. A
# history longer than `rl.max_prompt_tokens` loses its oldest tokens (left truncation).

# %%
from geli_lib.models import load_policy

_, tok = load_policy()
ids, shown = rl.encode_prompt(tok, train["history"].iloc[0], params.rl.max_prompt_tokens)
print(tok.decode(ids))

# %% [markdown]
# ## Adapt one policy per reward function
#
# Each run saves its adapter every `rl.save_every` updates and resumes from there if stopped; a
# finished run with the same inputs is reused.

# %%
chosen = rl.select_reward_functions(experiments.saved_reward_functions(profile, corpus, seed), reward_fn,
                                    params.rl)
runs = {}
for name, folder in chosen.items():
    with timed(profile, f"07: {params.rl.algorithm} {name}"):
        runs[name] = rl.train_rl(name, folder, train, params.rl, profile, corpus, seed, params.device)
summary = pd.DataFrame([{
    "reward function": name, "updates": int(r.curves["step"].max()),
    "r̂ first": r.curves["reward_mean"].iloc[0], "r̂ last": r.curves["reward_mean"].iloc[-1],
    "r̂ best": r.curves["reward_mean"].max(), "KL last": r.curves["kl"].iloc[-1],
    "β last": r.curves["kl_coef"].iloc[-1], "s / update": r.seconds_per_step} for name, r in runs.items()])
display(summary.round(3))

# %% [markdown]
# ## Training curves (GELI Figs. 7-10)
#
# Top: the mean raw reward $\hat r$ of the batch's responses, on the reward table's scale
# (before normalisation). Bottom: the KL between policy and reference, summed over the
# response's tokens. A curve that rises with a KL that stays small is the paper's picture of a
# reward the policy can climb without drifting far from the base model.

# %%
curves = pd.concat([r.curves for r in runs.values()], ignore_index=True)
fig = figures.ppo_curves(curves)
figures.save_figure(fig, profile, "07_ppo_curves")

# %% [markdown]
# ## Generations side by side (GELI App. H)
#
# For held-out contexts: the base model, every adapted model, and the real AI utterance. ESConv
# and SODA contexts join when their paths are given (out-of-distribution: no reward function was
# trained on them).

# %%
contexts = [held_out]
for name, path, loader in (("esconv", esconv_path, data.load_esconv), ("soda", soda_path, data.load_soda)):
    if path:
        other = loader(path, params.data)
        contexts.append(rl.sample_contexts(rl.dialogue_contexts(other, history_turns=params.rl.history_turns),
                                           params.rl.eval_contexts, seed))
with timed(profile, "07: generations"):
    rows = rl.generations(pd.concat(contexts, ignore_index=True), {n: r.adapter for n, r in runs.items()},
                          params.rl, seed, params.device)
    rl.write_generations(profile, rows)
first = rows["context_id"].iloc[0]
print(rows[rows["context_id"] == first]["history"].iloc[0], "\n")
display(rows[rows["context_id"] == first][["model", "response"]].set_index("model"))

# %% [markdown]
# ## Does each adapted model score higher than the base?
#
# Mean $\hat r$ of each model's generations (rows) under each reward function (columns). An
# adapted model should gain most under its own reward function; the ground truth shows where the
# real utterances sit. With few updates on a CPU the gains are small and noisy: read them as a
# check of the pipeline, not as the paper's result.

# %%
scores = generation_eval.cross_scores(rows, chosen, params.data)
display(scores.groupby(rows["model"]).mean().round(3))
