"""The reward model r_θ(s_t, a_t) and the training of every reward function (GELI Sec. 4-5).

r_θ is a frozen text encoder plus a small head (the authors' architecture). Because the
encoder is frozen, each (history, response) pair is encoded **once** and its
features are cached by content; every method and every seed then trains only
the head on tensors, which is what makes a three-seed Table 1 cheap
(``benchmarks/bench_reward.py`` times it against re-encoding at every step, as
the authors' code does).

Decisions (all parameters of :class:`~geli_lib.core.params.RewardParams`):

**Text of a pair.** Two encoder inputs: the history s_t in the authors' format
(the last 20 turns as ``" User: …"`` / ``" AI: …"``, see
:func:`geli_lib.corpus.data.build_pairs`) and the response a_t as ``" AI: " + response``;
the features are their two embeddings concatenated (d = 2 × 384). The authors
fine-tuned BART on one concatenated text; with a FROZEN encoder, one
mean-pooled embedding of history + response lets ~20 turns of history drown
the one utterance being scored (measured: the oracle head reached a
within-conversation Spearman of 0.08 with it). Each text sees at most
``max_tokens`` (256, MiniLM's trained length) tokens, cut from the LEFT
(tokenizer ``truncation_side="left"``), so the most recent history is kept.

**Fine-tuning (option).** ``finetune_encoder`` (the gpu profile) trains the
encoder jointly with the head, as the authors fine-tuned BART: every step
re-encodes, with gradients, the turns its loss reads (:class:`EncoderFeatures`),
and the trained reward function carries its encoder (:func:`predict_pairs`).

**Features.** MiniLM: mean of the last hidden states over the attention mask,
then L2-normalised, i.e. exactly the sentence-transformers embedding of
all-MiniLM-L6-v2 (d = 384 per text). SmolLM2 (option): the mean of the backbone's last
hidden state over the mask (d = 576), not normalised.

**How turn rewards add up** (``ge_form``). Eq. 3 as written, R ≈ Σ_t r̂_t, makes a
turn's reward scale with 1/T, a length no per-turn model r_θ(s_t, a_t) sees: it
puts a floor under L_GE and makes pooled correlations with a turn truth
meaningless. The default is the GELI authors' fixed-T mean form R ≈ (T̄/T)·Σ_t r̂_t
(their script: T̄ = 160), in which a turn's reward does not depend on the
conversation's length; T̄ (``T_bar``, default the training conversations' mean
AI-turn count) is only the unit of r̂. Training (L_GE, RRD, IRCR, the constant
baselines, the oracle's and LLM labels' targets, RUDDER's redistribution) and
evaluation (:func:`geli_lib.reward.evaluation.evaluate_reward`) use the same form, and
each trained function carries its T̄ (:func:`turn_unit` is the conversion).

**Output scale.** The head ends in tanh ∈ [-1, 1], the score R is on 0-100. So
r̂_t = ``output_scale`` · tanh(·). The authors kept scale 1 (with T̄ = 160 the
mean per-turn share sat at ≈ 0.46 of the range). Ours is data-driven: by default
(``output_scale: 0``) the scale is ``auto_scale_margin`` (1.25) × the largest
per-turn share R/T̄ (sum form: R/T) among the training conversations, so every
training conversation's score is reachable with |tanh| ≤ 0.8. ``oracle``,
``rudder`` and ``llm`` regress the head on per-turn targets, so their scale
also covers the largest |target|. The scale is stored with the trained head,
so predictions are always in the unit of the score.

**LI labels.** Γ ∈ {0, 1} (eq. 7) becomes r_LI = Γ · ``li_positive`` ·
``output_scale`` (default: Γ = 1 ↦ the top of the head's range, Γ = 0 ↦ 0),
which is the authors' mapping (their tanh output was regressed on Γ directly).
Language sentiment (LS) uses the same mapping with Γ_LS = 1 when VADER's
compound score of the AI utterance is ≥ ``ls_threshold`` (0.05). Turns without
a label (NaN: no timing, so no face window) are left out of L_LI.

**Methods** (:data:`METHOD_FAMILY`): ``mean`` / ``mode`` (constant per-turn
predictions: mean_i(R_i/T̄), and mode_i(R_i)/T̄; sum form: R_i/T_i and
mode_i(R_i)·mean_i(1/T_i)); GE ``sum`` (eq. 4), ``rrd`` (eq. 9), ``ircr`` (per-turn
targets R/T̄, or R/T), ``rudder`` (an LSTM return
predictor is trained on the feature sequences, its differences of consecutive
predictions are the redistributed rewards, and the head is regressed on them,
because r_θ must score one (s_t, a_t) pair at RL time); LI ``va`` and ``ls``
(eq. 6); ``geli`` = λ·L_GE(``ge_method``) + (1-λ)·L_LI(``li_signal``) (eq. 2);
``oracle`` (MSE on the planted per-turn reward: the ceiling, simulated corpus
only); ``llm`` (LLM-GELI eq. 5: MSE on an LLM's per-turn labels, passed as
``li_labels[LLM_LABELS]``; only failed chunks are masked, see :mod:`geli_lib.reward.llm`).
Any trainable method can continue from another's head (``warm_start``, the
authors' VA-then-GELI recipe) and keep its best validation epoch (``select_best``). Losses come from
:mod:`geli_lib.reward.losses`.
"""

from geli_lib.reward.reward_model.encoder import (
    CHUNK_PAIRS,
    MAX_CHUNKS,
    RESPONSE_PREFIX,
    TEXT_FORMAT_VERSION,
    EncoderMismatchError,
    FeatureCache,
    RewardModelError,
    encode_pairs,
    encode_texts,
    encoder_id,
    pair_features,
    pair_texts,
    text_key,
)
from geli_lib.reward.reward_model.head import (
    METHOD_FAMILY,
    RewardHead,
    TrainedReward,
    load_reward_function,
    predict,
    predict_pairs,
)
from geli_lib.reward.reward_model.train_data import TrainData, make_train_data, sentiment_labels, visual_affect_labels
from geli_lib.reward.reward_model.training import (
    LLM_LABELS,
    EncoderFeatures,
    FeatureFn,
    auto_scale,
    cached_features,
    family,
    resolve_T_bar,
    split_train_data,
    step_loss,
    train_cached,
    train_grid,
    train_reward_function,
    trained_folder,
    training_key,
    turn_unit,
)

__all__ = [
    "TEXT_FORMAT_VERSION",
    "RESPONSE_PREFIX",
    "CHUNK_PAIRS",
    "MAX_CHUNKS",
    "RewardModelError",
    "EncoderMismatchError",
    "pair_texts",
    "text_key",
    "encoder_id",
    "pair_features",
    "FeatureCache",
    "encode_pairs",
    "encode_texts",
    "visual_affect_labels",
    "sentiment_labels",
    "TrainData",
    "make_train_data",
    "METHOD_FAMILY",
    "RewardHead",
    "TrainedReward",
    "load_reward_function",
    "predict",
    "predict_pairs",
    "LLM_LABELS",
    "resolve_T_bar",
    "turn_unit",
    "auto_scale",
    "FeatureFn",
    "cached_features",
    "EncoderFeatures",
    "step_loss",
    "split_train_data",
    "train_reward_function",
    "training_key",
    "trained_folder",
    "train_cached",
    "train_grid",
    "family",
]
