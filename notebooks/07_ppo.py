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
# the policy's tokens back to text and scores them (see `geli_lib.alignment.rl`). Scores are normalised by
# their running mean and SD (the paper's `use_score_norm`), so the KL weight is in units of the score's SD
# whatever the reward function's range; it starts at `rl.kl_coef` (0.15 in the authors' script) and
# adapts towards a target KL, as in the authors' TRL version.
#
# **One reward.** Training, the curves below and notebook 08's cross-scores call the same function,
# `generation_eval.PairScorer`, on (the dialogue before the turn, the policy's response): what the
# policy climbs is what we report. The policy is shown only the last `rl.history_turns` turns (a cost
# of generation); the reward function scores in the dialogue it was trained on, whose last
# `data.history_turns` turns are r_θ's s_t: shown only the policy's turns, its turn-level agreement with
# the planted truth halves (README, "One reward").
#
# **Learning, measured.** A batch's mean reward mostly says which contexts were drawn. So the
# policy is also evaluated on a *fixed* set of held-out contexts (greedy responses) before the first
# update and every `rl.eval_every` updates; the slope of that curve comes with a bootstrap CI over
# contexts. At the end, on all held-out contexts, each adapted model is compared with the base model
# under its own reward function by a paired sign-flip permutation test over contexts, with the KL to
# the reference beside it. The cpu profile's algorithm and knobs are in `params/cpu.yaml` (`rl:`),
# and named in every table and figure.
#
# **PPO or RLOO.** PPO (the papers' algorithm) needs a value model to tell a good response from a
# lucky context: $A_t = \hat r - V(s_t)$, and $V$ is learnt along the way. RLOO samples $k$ responses
# to the same context and uses the other $k-1$ as the baseline,
# $A_i = r_i - \frac{1}{k-1}\sum_{j \ne i} r_j$: exact from the first update, which is what a short
# CPU run needs; the KL to the reference enters its (normalised) reward, $r_i - \beta\,\mathrm{KL}_i$. Both clip the
# policy ratio at $1 \pm 0.2$ and update only the LoRA weights.
#
# Parameters: `reward_fn` (a reward-function id such as `geli`, `rrd_k32`, `va`, `ls`, a list of ids,
# or `"all"` for the profile's set; tables show their names),
# `steps`, `seed`, `algorithm` (`ppo`, `rloo`, `grpo`), and `esconv_path` / `soda_path` to add
# out-of-distribution contexts to the generations.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
reward_fn = "all"  # a reward-function id (e.g. "geli"), a list of ids, or "all" (the profile's rl.reward_fns)
steps = None  # None: the profile's rl.steps
seed = None  # None: the profile's seed
algorithm = None  # None: the profile's (ppo); or rloo / grpo
esconv_path = ""  # ESConv JSON: adds its contexts to the generations
soda_path = ""  # SODA JSON/JSONL: adds its contexts to the generations

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from geli_lib import figures
from geli_lib.alignment import best_of_n, generation_eval, rl
from geli_lib.core import load_params, results_dir, timed, write_csv
from geli_lib.corpus import data
from geli_lib.reward import experiments

overrides = {k: v for k, v in {"steps": steps, "algorithm": algorithm}.items() if v is not None}
params = load_params(profile, corpus=corpus, data_path=data_path, rl=overrides)
results = params.results_key  # results/<profile>[/<corpus>]: other corpora never overwrite the default
seed = params.seed if seed is None else int(seed)
with timed(results, "07: contexts"):
    dialogues = data.load_corpus(params)
    split = data.split_conversations(dialogues.conversations, params.splits)
    train, held_out, curve = rl.rl_contexts(dialogues, split, params.rl, seed)
print(
    f"{len(train)} RL contexts from the rl split; {len(held_out)} held-out contexts for generations, "
    f"{len(curve)} others of the same conversations for the curve"
)

# %% [markdown]
# ## What the policy sees
#
# The system prompt of GELI Fig. 3, then the last turns of the dialogue as the user message. A
# history longer than `rl.max_prompt_tokens` loses its oldest tokens (left truncation). The reward
# function reads the whole dialogue before the turn (`reward_history`), cut to its own training format.

# %%
from geli_lib.core import load_policy

_, tok = load_policy()
ids, shown = rl.encode_prompt(tok, train["history"].iloc[0], params.rl.max_prompt_tokens)
print(tok.decode(ids))

# %% [markdown]
# ## Adapt one policy per reward function
#
# Each run saves its adapter every `rl.save_every` updates and resumes from there if stopped; a
# finished run with the same inputs is reused. With `compute.scheduler` set to a Dask cluster (README,
# "More than one machine") the runs train there at once, and the loop below reads them back; so with
# `rl.workers` > 1, which trains that many at once in worker processes of this machine, each with
# `rl.threads` torch threads (the cpu profile: 2 × 1 on 2 cores).

# %%
saved = experiments.saved_reward_functions(profile, corpus, seed)
chosen = rl.select_reward_functions(saved, reward_fn, params.rl)
if rl.adaptations_compute(params.compute, params.rl).scheduler != "serial":
    with timed(results, f"07: {params.rl.algorithm} on the cluster"):
        rl.adapt_on_cluster(
            chosen,
            train,
            params.rl,
            profile,
            params.compute,
            corpus,
            seed,
            params.device,
            curve=curve,
            data=params.data,
            results_key=results,
        )
runs = {}
for name, folder in chosen.items():
    with timed(results, f"07: {params.rl.algorithm} {name}"):
        runs[name] = rl.train_rl(
            name,
            folder,
            train,
            params.rl,
            profile,
            corpus,
            seed,
            params.device,
            curve=curve,
            data=params.data,
            results_key=results,
        )
print(
    f"algorithm: {params.rl.algorithm}; {params.rl.steps} updates of {params.rl.batch_size} responses "
    f"(group size {params.rl.group_size} for rloo/grpo), {params.rl.response_length}-token responses, "
    f"lr {params.rl.lr:g}, KL target {params.rl.kl_target:g} nats"
)

# %% [markdown]
# ## Training curves (GELI Figs. 7-10)
#
# Top: the mean raw reward $\hat r$ of the fixed held-out contexts' greedy responses, with a 95%
# interval over contexts, and the batch means of the sampled training responses (thin line; noisy:
# each batch draws other contexts). Bottom: the KL between policy and reference on the held-out
# responses (nats per response). A curve that rises with a KL that stays bounded is the paper's
# picture of a reward the policy can climb without drifting far from the base model.
#
# A learned reward can be maximised by one sentence whatever was said (08's collapse control), and a
# policy that finds it gains reward by collapse, which does not count. So each run keeps the adapter
# of the last evaluation whose greedy responses to the curve's contexts have not collapsed (distinct-2
# under half the base's, or one response for over half the contexts; `rl.keep_uncollapsed`): a
# dotted line marks it where it is not the last update. The curve's contexts are other turns of the
# held-out conversations than the ones tested below, so the test never chose the update.

# %%
curves = pd.concat([r.curves for r in runs.values()], ignore_index=True)
evals = pd.concat([r.evals for r in runs.values()], ignore_index=True)
kept = {n: r.kept_step for n, r in runs.items()}
print("update kept:", ", ".join(f"{n} {k} of {params.rl.steps}" for n, k in kept.items()))
fig = figures.rl_eval_curves(evals, curves, kept)
figures.save_figure(fig, results, "07_ppo_curves")

# %% [markdown]
# ## Diversity against distance: which reward pays for collapse?
#
# Every run starts from the same base model, so the runs can be compared on one axis: how far the
# policy has moved (its KL to the reference) against how varied its greedy replies to the curve's
# contexts still are (distinct-2 as a share of the base's). A reward with gains in varied replies lets
# the policy move a few nats with its replies still varied; a reward whose maximiser is one sentence
# (08's modal probe) pulls distinct-2 down as the policy moves towards that sentence. The reading under
# the figure gives this run's numbers; the repository's `docs/rl_record.md` gives them over seeds. The
# crosses are evaluations that count as collapsed; the table gives, per run, the first update that
# collapsed and the KL it had reached. Written to `tables/rl_diversity.csv`.

# %%
path = rl.diversity_path(evals)
write_csv(results_dir(results, "tables") / "rl_diversity.csv", path)
onsets = rl.collapse_onsets(path)
display(onsets.round(2))
display(Markdown(rl.collapse_reading(onsets)))
fig = figures.diversity_vs_kl(path, rl.COLLAPSE_DISTINCT2)
figures.save_figure(fig, results, "07_diversity_vs_kl")

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
        contexts.append(
            rl.sample_contexts(
                rl.dialogue_contexts(other, history_turns=params.rl.history_turns), params.rl.eval_contexts, seed
            )
        )
with timed(results, "07: generations"):
    rows = rl.generations(
        pd.concat(contexts, ignore_index=True), {n: r.adapter for n, r in runs.items()}, params.rl, seed, params.device
    )
    rl.write_generations(results, rows)
first = rows["context_id"].iloc[0]
print(rows[rows["context_id"] == first]["history"].iloc[0], "\n")
display(rows[rows["context_id"] == first][["model", "response"]].set_index("model"))

# %% [markdown]
# ## Did each policy learn? Base vs adapted under its own reward
#
# On the held-out contexts of the simulated corpus: each adapted model's greedy responses and the
# base model's, scored by the reward function the model was adapted to (the same scoring as in
# training). `p` is the paired test over contexts named in `test`; `KL` is the KL to the
# reference at the kept update; the slope is that of the evaluation curve above up to the kept
# update, with its 95% bootstrap CI over contexts. A gain bought by collapsing onto a few phrases is not learning:
# `collapsed` marks a model whose distinct-2 falls below half the base model's or that gives one
# sentence to more than half of the contexts (`top response share`), and `learned` asks
# for all three (p < 0.05, a slope CI above 0, no collapse). Written to `tables/rl_summary.csv`; the reading
# under it gives each verdict with its numbers and, for a run that did not learn, the conditions it failed.

# %%
in_dist = rows[rows["corpus"] == held_out["corpus"].iloc[0]].reset_index(drop=True)
per = generation_eval.per_response(in_dist, params.eval, params.data, chosen, params.device)
stats = generation_eval.cross_reward_stats(in_dist, per, params.eval.base_model, params.eval.permutations)
summary = rl.rl_summary(stats, runs, params.eval.base_model, in_dist)
write_csv(results_dir(results, "tables") / "rl_summary.csv", summary)
display(summary.round(4))
display(Markdown(rl.summary_reading(summary)))
text = per.groupby(in_dist["model"])[["same_as_base", "empty", "repetition", "length"]].mean()
display(text.round(3))

# %% [markdown]
# ## A control: what selection alone buys (best-of-n)
#
# RL moves the policy's weights; the simplest way to please a reward function moves none. Sample $n$
# responses from the **base** policy for each held-out context (at RL's rollout temperature) and keep
# the one the reward function scores highest. The picks' distribution is at most
# $\log n - \frac{n-1}{n}$ nats from the base's (1.2 nats at $n = 8$), less than the KL of a run that moved.
# If best-of-n raises a reward with varied picks where RL collapsed, the reward has gains without
# collapse and the optimiser missed them; the oracle, trained on the simulation's planted truth, says
# whether the picks are better for the truth or only for the reward that picked them. Each panel
# compares with the base's greedy replies, as the table above does for RL (dashed line).
# `eval.best_of_n` draws per context; written to `tables/best_of_n.csv`.

# %%
if params.eval.best_of_n:
    truth = experiments.oracle_of(saved)
    with timed(results, "07: best-of-n control"):
        bon = best_of_n.control(held_out, chosen, truth, params.rl, params.data, params.eval.best_of_n, seed,
                                params.device, params.eval.permutations)  # fmt: skip
    write_csv(results_dir(results, "tables") / "best_of_n.csv", bon)
    display(Markdown(best_of_n.reading(bon, summary)))
    fig = figures.best_of_n(bon, summary, next(iter(truth), None))
    figures.save_figure(fig, results, "07_best_of_n")
