"""The alignment sections: RL of the dialogue policy and the evaluation of its generations."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from geli_lib.core.params.base import _check, _check_choices
from geli_lib.core.params.reward import RewardFunctionId

#: RL algorithms of the same TRL release (trl==1.12.0); PPO is the papers'.
RlAlgorithm = Literal["ppo", "rloo", "grpo"]
RL_ALGORITHMS: tuple[str, ...] = typing.get_args(RlAlgorithm)


@dataclass
class RLParams:
    """RL adaptation of the policy against a learned r_θ (GELI Sec. 5.3, App. F).

    Defaults are the paper's settings where they fit any machine; profiles shrink
    batch, steps and lengths. "gamma = 0.05" in GELI App. F is read as TRL's
    ``PPOConfig.gamma`` (the discount of GAE): App. F lists TRL 0.x PPOConfig
    field names (``batch_size``, ``cliprange``, ``learning_rate``, ``gamma``,
    ``use_score_norm``), and the KL weight of eq. 1 is the separate, adaptive
    ``init_kl_coef`` = 0.15 of the authors' script. Only the ``gpu`` profile
    uses 0.05; the others keep TRL's discount 1.0 (see :mod:`geli_lib.alignment.rl`).
    """

    algorithm: RlAlgorithm = "ppo"
    """ppo (``trl.experimental.ppo``, the papers'), rloo or grpo (same TRL release, same reward as a callable)."""
    reward_fns: list[RewardFunctionId] = field(default_factory=lambda: ["geli", "rrd_k32", "va", "ls"])
    """Reward functions (ids, :data:`RewardFunctionId`) adapted when the notebook asks for ``all`` (GELI Figs. 7-10)."""
    steps: int = 200
    """PPO updates (one rollout batch each); paper: 200."""
    batch_size: int = 24
    """Prompts per update (paper: 24)."""
    mini_batch_size: int = 4
    """Prompts per optimiser step inside an update (paper: 4); must divide ``batch_size``."""
    ppo_epochs: int = 4
    """Passes over each rollout batch (TRL default 4; 1 is ~2.5x faster on CPU)."""
    lr: float = 1.4e-5
    """Adam learning rate of the LoRA adapter and the value model (paper: 1.4e-5), constant schedule."""
    warmup_steps: int = 0
    """Updates over which the learning rate rises linearly from 0 (the first update takes no step) to ``lr``, then
    constant; 0: ``lr`` from the first update. Adam's first steps move every LoRA weight by about ``lr`` along one
    batch's gradient, whatever its size; during warm-up Adam's moments average several batches before a full
    step is taken (the variance of the adaptive step early on: Liu et al. 2020, RAdam)."""
    cliprange: float = 0.2
    """PPO ratio clip (paper: 0.2)."""
    cliprange_value: float = 0.2
    """Value-function clip (TRL default)."""
    vf_coef: float = 0.1
    """Weight of the value loss (TRL default)."""
    gamma: float = 1.0
    """Discount of GAE (TRL's ``gamma``); the paper's "gamma = 0.05" is this (gpu profile; see the class docstring)."""
    gae_lambda: float = 0.95
    """λ of GAE (TRL default)."""
    kl_coef: float = 0.15
    """Initial weight of the KL penalty to the reference policy (eq. 1's KL weight; authors: 0.15)."""
    adaptive_kl: bool = True
    """Adapt ``kl_coef`` towards ``kl_target`` (Ziegler et al. 2019, the authors' TRL 0.x default)."""
    kl_target: float = 6.0
    """Target KL (nats per response) of the adaptive controller (TRL 0.x default 6)."""
    kl_horizon: float = 10000.0
    """Horizon of the adaptive controller, in episodes (TRL 0.x default 10000)."""
    kl_coef_min: float = 0.0
    """Floor of the adaptive KL weight (0: none, as in Ziegler et al.'s controller). A short horizon lets the
    weight rise fast once the KL passes the target, but also lets it fall fast in the first updates, before the
    policy has moved at all; the floor bounds that fall."""
    score_norm: bool = True
    """Normalise r_θ's scores by their running mean and SD before the KL penalty (paper: use_score_norm = true), so
    the KL weight is in units of the score's SD whatever the reward function's range; for rloo / grpo also
    standardise the advantages (RLOO ``normalize_advantages``, GRPO ``scale_rewards="group"``)."""
    response_length: int = 48
    """Most new tokens per response during RL (paper: 32-128)."""
    temperature: float = 0.7
    """Sampling temperature of RL rollouts (TRL default)."""
    max_prompt_tokens: int = 512
    """Prompt budget: a longer dialogue history is left-truncated (oldest tokens dropped) to fit."""
    history_turns: int = 10
    """Turns of dialogue history shown to the policy (the reward model scores in its own ``data.history_turns``)."""
    lora_r: int = 24
    """LoRA rank (paper: 24)."""
    lora_alpha: int = 48
    """LoRA α (paper: 48)."""
    lora_dropout: float = 0.05
    """LoRA dropout (paper: 0.05; TRL switches dropout off in PPO, so it is inert there)."""
    group_size: int = 4
    """Completions per prompt for rloo / grpo (must divide ``batch_size``, which there counts completions: batch_size /
    group_size prompts per update)."""
    train_contexts: int = 0
    """RL prompts drawn from the rl split (0 = every AI turn of its training conversations)."""
    eval_conversations: int = 4
    """rl-split conversations held out of RL training; generations come from them."""
    eval_contexts: int = 8
    """Held-out contexts per corpus in generations.csv: the paired test of adapted vs base runs over them."""
    curve_contexts: int = 8
    """Fixed contexts of the held-out conversations, other than the ``eval_contexts``, that the evaluation curve
    scores, greedy, every ``eval_every`` updates."""
    eval_every: int = 10
    """Updates between two points of the evaluation curve (plus one before the first update)."""
    keep_uncollapsed: bool = True
    """Keep the adapter of the last evaluation at which the curve's responses had not collapsed (distinct-2 under
    half the base's, or one response for over half the contexts), not the last update's: reward bought by
    collapse does not count, and a learned reward's maximiser can be one sentence. False: the last update's."""
    gen_tokens: int = 64
    """Most new tokens of a generation in generations.csv."""
    gen_do_sample: bool = False
    """Sample generations (seeded) instead of greedy decoding."""
    save_every: int = 10
    """Save the adapter (and the resume state) every this many updates."""
    train_value_backbone: bool = True
    """Train the value model's whole SmolLM2 backbone (TRL's default); false trains only its scalar head on frozen
    features, which halves a CPU update and keeps checkpoints small."""
    bf16: bool = False
    """bf16 autocast of the policy (float32 master weights) in training, its evaluation curve and 08's
    generations; r̂ is always scored in float32. GPU: the paper's setting. CPU: an update ~22% faster where
    torch has fast bf16 kernels (AVX512 / AMX); on a CPU without them the run stays float32 and says so
    (:func:`geli_lib.core.models.bf16_in_effect`)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on GPU, slows CPU)."""
    threads: int = 0
    """torch threads of each adaptation, wherever it trains; 0: the process's own count. Part of a run's key:
    matrix products may sum in another order on another thread count, and a sampled run then goes elsewhere."""
    workers: int = 1
    """Adaptations trained at once on this machine when ``compute.scheduler`` is ``serial``, each in a worker
    process of a local Dask cluster with ``threads`` threads (:func:`geli_lib.alignment.rl.adapt_on_cluster`);
    1: one after the other in the notebook's process. Changes no result (so it needs ``threads`` >= 1), only
    the wall time: on 2 cores, two 1-thread adaptations train ~1.45x faster than one 2-thread one after the other."""

    def validate(self) -> None:
        _check_choices(self)
        _check(len(self.reward_fns) >= 1, "reward_fns", "must name at least one reward function", self.reward_fns)
        for name in (
            "steps",
            "batch_size",
            "mini_batch_size",
            "ppo_epochs",
            "response_length",
            "history_turns",
            "lora_r",
            "lora_alpha",
            "group_size",
            "eval_contexts",
            "gen_tokens",
            "save_every",
            "curve_contexts",
            "eval_every",
        ):
            _check(getattr(self, name) >= 1, name, "must be >= 1", getattr(self, name))
        _check(
            self.batch_size % self.mini_batch_size == 0,
            "mini_batch_size",
            "must divide batch_size",
            self.mini_batch_size,
        )
        _check(
            self.algorithm == "ppo" or self.batch_size % self.group_size == 0,
            "group_size",
            "must divide batch_size for rloo / grpo",
            self.group_size,
        )
        for name in ("lr", "temperature", "kl_target", "kl_horizon"):
            _check(getattr(self, name) > 0, name, "must be > 0", getattr(self, name))
        for name in ("cliprange", "cliprange_value", "vf_coef", "kl_coef", "kl_coef_min", "warmup_steps"):
            _check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            _check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]", getattr(self, name))
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)", self.lora_dropout)
        _check(
            self.max_prompt_tokens >= 96,
            "max_prompt_tokens",
            "must be >= 96 (the prompt's own template)",
            self.max_prompt_tokens,
        )
        _check(self.train_contexts >= 0, "train_contexts", "must be >= 0", self.train_contexts)
        _check(self.threads >= 0, "threads", "must be >= 0", self.threads)
        _check(self.workers >= 1, "workers", "must be >= 1", self.workers)
        _check(
            self.workers == 1 or self.threads >= 1,
            "threads",
            "must be >= 1 with workers > 1 (each adaptation's threads, so that its result does not depend on how "
            "many train at once)",
            self.threads,
        )
        _check(self.eval_conversations >= 1, "eval_conversations", "must be >= 1", self.eval_conversations)


@dataclass
class EvalParams:
    """Evaluation of the adapted agents' generations: automatic scores and the human-evaluation kit.

    See :mod:`geli_lib.alignment.generation_eval` (automatic) and :mod:`geli_lib.alignment.human_eval`
    (GELI App. B / Table 2; LLM-GELI App. A, Tables 1-3, Fig. 5).
    """

    base_model: str = "base"
    """Model name in generations.csv that significance tests compare against (the unadapted policy)."""
    distinct_n: list[int] = field(default_factory=lambda: [1, 2])
    """n of the distinct-n diversity scores (unique n-grams / all n-grams over a model's responses)."""
    repetition_n: int = 2
    """n of the repetition score: share of a response's word n-grams that repeat an earlier one in it."""
    human_items: int = 100
    """Contexts per seed sampled into the annotation kit (GELI: 100; LLM-GELI: 100-150)."""
    human_seed: int = 0
    """Seed of the item sample and of the per-item shuffle of model order (the blinding)."""
    human_spread: Literal["seed", "annotator"] = "seed"
    """What the ± of the human table spans: ``seed`` (per-seed percentages, as the papers) or ``annotator``."""
    permutations: int = 20000
    """Monte-Carlo sign flips of the paired permutation test when exact enumeration is too large."""
    best_of_n: int = 8
    """Draws per held-out context for 07's best-of-n control (best-of-1, 2, 4, … up to it, no training;
    :mod:`geli_lib.alignment.best_of_n`); 0 skips the control."""

    def validate(self) -> None:
        _check_choices(self)
        _check(
            len(self.distinct_n) >= 1 and all(n >= 1 for n in self.distinct_n),
            "distinct_n",
            "must list n >= 1",
            self.distinct_n,
        )
        _check(self.repetition_n >= 1, "repetition_n", "must be >= 1", self.repetition_n)
        _check(self.human_items >= 1, "human_items", "must be >= 1", self.human_items)
        _check(self.permutations >= 100, "permutations", "must be >= 100", self.permutations)
        _check(self.best_of_n >= 0, "best_of_n", "must be >= 0 (0: no best-of-n control)", self.best_of_n)
        _check(bool(self.base_model), "base_model", "must name a model", self.base_model)
