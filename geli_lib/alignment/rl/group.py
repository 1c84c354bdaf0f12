"""TRL's RLOO and GRPO trainers as the cpu profile runs them: each prompt run once per group, in bf16.

RLOO and GRPO sample ``group_size`` completions per prompt, and TRL scores each
(prompt + completion) row on its own: three passes per update (the sampling
policy's log-probs, the reference's for the KL term, and the policy's again with
gradients for the loss) each run every prompt ``group_size`` times. On the cpu
profile a row is ~128 prompt tokens and 12 completion tokens, so most of that
work repeats a prompt already run. :func:`shared_prompt_logps` runs each distinct
prompt once; its key and value states are indexed out to the rows that share it
(gradients flow back through the indexing to the one prompt pass) and the
completions run over them. Positions, masks and causal attention are those of the
full row, so the log-probabilities equal the full forward's up to floating-point
rounding (tests/test_rl.py checks values, entropies and LoRA gradients against
TRL's own per-row forward).

TRL samples its completions with the bare model, outside the autocast that
accelerate puts around the model's forward: in a bf16 run the policy sampled in
float32 and scored its samples in bf16. :class:`GroupTrainer` samples under the
same autocast, so the frozen base can be stored in bf16
(:func:`geli_lib.core.models.base_linears_to_bf16`) and samples and scores come
from one policy.
"""

from __future__ import annotations

from typing import Any

import torch

from geli_lib.core.models import autocast

#: Part of a run's key (:func:`runs.run_key`): an adaptation trained by TRL's own trainers (per-row log-probs,
#: float32 sampling), or by this trainer before its rows took their prompt's states by a one-hot product (whose
#: runs parted from a rerun after a few updates), is not taken for one trained by :class:`GroupTrainer` now.
GROUP_TRAINER = "prompt once per group, rows by one-hot product; sampling under autocast"


def _to_rows(values: torch.Tensor, rows_of: torch.Tensor) -> torch.Tensor:
    """``values`` (prompts, ...) as (rows, ...), each row its prompt's: a product with the one-hot ``rows_of``
    (rows, prompts), exact in any dtype. Not indexing: on CPU its backward adds float32 rows with atomic adds in
    an order that changes from run to run, and two runs of one seed parted after a few updates."""
    flat = values.reshape(values.shape[0], -1)
    return (rows_of.to(flat.dtype) @ flat).reshape(rows_of.shape[0], *values.shape[1:])


def shared_prompt_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log π(a_k | s, a_<k) of the last ``logits_to_keep`` tokens of each row, and (optionally) the
    entropy of each of those distributions, the prompt (all earlier tokens) run once per distinct prompt.

    ``input_ids`` / ``attention_mask``: (rows, prompt + completion), prompts left-padded to a common length as
    TRL pads them. Logits are divided by ``temperature`` (as TRL does, the sampling temperature).
    """
    # lazy: TRL's helpers only where a trainer is
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    prompt_len = input_ids.size(1) - logits_to_keep
    prompt = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len]], dim=1)
    prompts, row_to_prompt = torch.unique(prompt, dim=0, return_inverse=True)
    rows_of = torch.nn.functional.one_hot(row_to_prompt, len(prompts))  # (rows, prompts)
    head = model(
        input_ids=prompts[:, :prompt_len],
        attention_mask=prompts[:, prompt_len:],
        use_cache=True,
        logits_to_keep=1,  # only the last prompt position predicts a completion token
    )
    logits = [_to_rows(head.logits[:, -1:], rows_of)]
    if logits_to_keep > 1:
        cache = head.past_key_values
        for layer in cache.layers:  # each row gets its prompt's states, gradients included
            layer.keys, layer.values = _to_rows(layer.keys, rows_of), _to_rows(layer.values, rows_of)
        tail = model(
            input_ids=input_ids[:, prompt_len:-1],  # the last token predicts nothing that is scored
            attention_mask=attention_mask[:, :-1],
            past_key_values=cache,
            use_cache=True,
        )
        logits.append(tail.logits)
    scores = torch.cat(logits, dim=1) / temperature
    logps = selective_log_softmax(scores, input_ids[:, prompt_len:])
    entropies = None
    if compute_entropy:
        with torch.no_grad():
            entropies = entropy_from_logits(scores)
    return logps, entropies


class GroupTrainer:
    """Mixin for TRL's ``RLOOTrainer`` / ``GRPOTrainer`` (:func:`group_trainer`): per-token log-probabilities
    through :func:`shared_prompt_logps` and sampling under the run's bf16 autocast (``args.bf16``).

    Multimodal inputs and MoE auxiliary losses go to the trainer's own method. ``batch_size`` (TRL's chunking of
    rows to bound memory) is not used: all rows run at once."""

    temperature: float  # the trainer's sampling temperature
    args: Any  # the trainer's config
    accelerator: Any

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        with autocast(bool(self.args.bf16), self.accelerator.device.type):
            return super()._generate_single_turn(*args, **kwargs)  # type: ignore[misc]

    def _get_per_token_logps_and_entropies(  # noqa: PLR0913 (TRL's signature)
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **extra: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if compute_aux_loss or any(v is not None for v in extra.values()):
            return super()._get_per_token_logps_and_entropies(  # type: ignore[misc]
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **extra
            )
        logps, entropies = shared_prompt_logps(
            model, input_ids, attention_mask, logits_to_keep, self.temperature, compute_entropy
        )
        return logps, entropies, None


def group_trainer(trainer_cls: type) -> type:
    """``trainer_cls`` (TRL's ``RLOOTrainer`` or ``GRPOTrainer``) with :class:`GroupTrainer`'s passes."""
    return type(f"Group{trainer_cls.__name__}", (GroupTrainer, trainer_cls), {})
