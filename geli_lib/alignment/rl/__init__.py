"""RL adaptation: PPO + LoRA on SmolLM2 against a learned reward function r_θ (GELI Sec. 5.3, App. F).

The objective is GELI eq. 1: max_φ E[r_θ(s_t, a_t)] − γ·D_KL(π_φ(·|s_t) ‖ π_η(·|s_t)),
with π_η the reference policy (the base model: the LoRA adapter switched off).
One call of :func:`train_rl` adapts the policy to one reward function; it reads
top to bottom:

1. **Contexts** (:func:`dialogue_contexts`): every AI turn of the ``rl`` split
   (``data.split_conversations``) with its last ``history_turns`` turns, one
   utterance per line as ``User: …`` / ``AI: …``. ``eval_conversations`` of the
   rl conversations are held out of training; generations come from them.
2. **Prompt** (:func:`encode_prompt`): the policy's chat template with GELI
   Fig. 3's system prompt (:data:`SYSTEM_PROMPT`) and the history as the user
   message. A history longer than ``max_prompt_tokens`` allows is
   **left-truncated** at the token level: the oldest tokens go (the first line
   may then start mid-utterance), the template and the latest turns stay. The
   reward model does not see that cut: it scores the response in the dialogue
   so far (``reward_history``, :func:`scoring_histories`), the s_t of its training
   pairs; with only the policy's 2-turn history on cpu, its turn-level validity halves.
3. **Reward** (:class:`TextReward`): r_θ keeps its own encoder and tokenizer
   (MiniLM, or its fine-tuned encoder). TRL 1.12's PPOTrainer wants a
   ``*ForSequenceClassification`` model that reads the policy's token ids, so
   :class:`RewardAdapter` decodes the ids back to text, splits prompt and
   response at the assistant header, scores (history, response) with r_θ and
   returns the score as a (B, L, 1) "hidden state" behind an identity
   ``.score``. TRL replaces pad ids by 0 before the call, so tokens are chosen
   by the attention mask. **Score normalisation** (paper: ``use_score_norm``):
   scores are standardised by their running mean and SD (TRL 0.x
   ``use_score_scaling`` + ``use_score_norm``, :class:`RunningMoments`); the
   curves keep the raw r̂ on the reward table's scale. An empty response (EOS at
   once) is scored as the empty utterance, like any other; a NaN score stops
   the run with :class:`RLError` naming the update.
4. **PPO** (``trl.experimental.ppo.PPOTrainer``): LoRA (r, α, dropout of App. F)
   on the attention and MLP projections, ``ref_model=None`` (reference = base
   with the adapter off), a SmolLM2 value model with a fresh scalar head,
   ``stop_token="eos"``, constant learning rate. TRL 1.12 keeps its KL weight
   fixed, so :class:`_Monitor` implements the **adaptive KL controller** of the
   authors' TRL 0.x (Ziegler et al. 2019): β ← β·(1 + clip(KL/target − 1,
   ±0.2)·n/horizon) after every update. "gamma = 0.05" (App. F) is TRL's GAE
   discount (see :class:`geli_lib.core.params.RLParams`); it is used by the gpu profile.
5. **The update kept** (``rl.keep_uncollapsed``, :func:`kept_step`): every
   evaluation's adapter is saved; the run keeps the last one whose greedy
   responses to the curve contexts have not collapsed against the base's
   (:func:`collapsed`: distinct-2 under half, or one response for over half the
   contexts). Training runs all ``steps`` updates and the curves show them all;
   only the adapter 08 generates with, and the summary's slope and KL, stop at
   the kept update. The curve contexts are other contexts of the held-out
   conversations than the ones 08 tests on, so the test never chose the update.
6. **Logging and checkpoints**: per update, the mean raw r̂, the KL (summed over
   the response, nats) and more go to ``tables/ppo_curves.csv`` and to
   TensorBoard (``results/<results key>/tensorboard/<run>``). Every ``save_every``
   updates the adapter is saved (``adapter-step<N>``) with the resume state
   (value model, optimiser, score moments, β, RNG, curves). A run that stops
   resumes from its last state; a finished run (``done.json``) is not redone
   unless its inputs change. TRL's PPOTrainer cannot resume by itself: the
   trainer is rebuilt for the remaining updates and the state loaded into it
   (its prompt order then differs: the data loader is re-seeded with seed + step).
7. **RLOO / GRPO** (option ``algorithm``): the same prompts and the same r_θ as
   a plain reward callable (:meth:`TextReward.reward_func`), standardised by the
   same running moments before TRL subtracts β·KL (so β is in units of the
   score's SD for every reward function, as in PPO), the TRL trainers' own
   checkpoints and ``resume_from_checkpoint`` (the moments resume from
   ``progress.json``). The trainers run through :func:`group_trainer`
   (``rl/group.py``): each distinct prompt is run once per log-probability pass
   and its states shared by its group's completions (:func:`shared_prompt_logps`),
   and completions are sampled under the run's bf16 autocast, with the frozen
   base stored in bf16 (:func:`geli_lib.core.models.base_linears_to_bf16`).

Multi-GPU: the same entry point runs under ``accelerate launch`` (TRL shards the
rollouts over processes, ``rl.batch_size`` each, for ``rl.steps`` updates); r̂ is
standardised by the whole update's scores, the run checks that every process ends with
the same adapter and moments (:func:`check_processes_agree`), and only the main process
writes; see the README.
"""

from geli_lib.alignment.rl.cluster import adapt_on_cluster, adapt_task, adaptations_compute, folder_files, unpack
from geli_lib.alignment.rl.curve import (
    COLLAPSE_DISTINCT2,
    COLLAPSE_TOP_SHARE,
    EVAL_COLUMNS,
    RUN_KEYS,
    PolicyEvaluator,
    at_base,
    collapse_onsets,
    collapse_reading,
    collapsed,
    curve_slope,
    diversity_path,
    kept_step,
    top_share,
)
from geli_lib.alignment.rl.generations import (
    generate,
    generations,
    load_adapted,
    main,
    rl_summary,
    select_reward_functions,
    summary_reading,
    write_generations,
)
from geli_lib.alignment.rl.group import group_trainer, shared_prompt_logps
from geli_lib.alignment.rl.ppo import CURVE_COLUMNS, LORA_TARGETS, RunInfo, check_processes_agree, train_rl
from geli_lib.alignment.rl.prompt import (
    ASSISTANT_HEADER,
    SYSTEM_PROMPT,
    RLError,
    chat_messages,
    dialogue_contexts,
    encode_prompt,
    reward_histories,
    rl_contexts,
    sample_contexts,
    scoring_histories,
    split_prompt_response,
    strip_role,
)
from geli_lib.alignment.rl.reward import (
    RewardAdapter,
    RunningMoments,
    TextReward,
    check_adapter,
    check_reward_for_rl,
    load_trained_reward,
)
from geli_lib.alignment.rl.runs import (
    finished_run,
    launched_processes,
    launched_rank,
    merge_rows,
    prepare_run_dir,
    run_dir,
    run_key,
    tensorboard_dir,
)

__all__ = [
    "SYSTEM_PROMPT",
    "ASSISTANT_HEADER",
    "RLError",
    "dialogue_contexts",
    "rl_contexts",
    "sample_contexts",
    "chat_messages",
    "encode_prompt",
    "reward_histories",
    "scoring_histories",
    "strip_role",
    "split_prompt_response",
    "RunningMoments",
    "load_trained_reward",
    "check_processes_agree",
    "launched_processes",
    "launched_rank",
    "prepare_run_dir",
    "check_reward_for_rl",
    "check_adapter",
    "TextReward",
    "RewardAdapter",
    "EVAL_COLUMNS",
    "PolicyEvaluator",
    "at_base",
    "curve_slope",
    "collapsed",
    "top_share",
    "kept_step",
    "RUN_KEYS",
    "diversity_path",
    "collapse_onsets",
    "collapse_reading",
    "COLLAPSE_TOP_SHARE",
    "run_dir",
    "tensorboard_dir",
    "run_key",
    "finished_run",
    "merge_rows",
    "LORA_TARGETS",
    "CURVE_COLUMNS",
    "RunInfo",
    "train_rl",
    "group_trainer",
    "shared_prompt_logps",
    "adapt_on_cluster",
    "adaptations_compute",
    "adapt_task",
    "folder_files",
    "unpack",
    "generate",
    "load_adapted",
    "generations",
    "write_generations",
    "COLLAPSE_DISTINCT2",
    "rl_summary",
    "summary_reading",
    "select_reward_functions",
    "main",
]
