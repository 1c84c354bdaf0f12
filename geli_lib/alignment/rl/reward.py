"""The reward of RL: a trained r_θ on texts, its checks, running score normalisation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from geli_lib.alignment.generation_eval import PairScorer
from geli_lib.alignment.rl.prompt import _USER_RE, RLError, split_prompt_response, strip_role
from geli_lib.core.params import DataParams, RLParams
from geli_lib.reward.reward_model import (
    EncoderMismatchError,
    RewardModelError,
    TrainedReward,
    encoder_id,
)

# --------------------------------------------------------------------------- the reward


def across_processes(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every launched process, in rank order, concatenated along its last axis (``x`` itself in a
    single process).

    Under ``accelerate launch`` each process scores its share of an update; the running moments and the
    logged r̂ are of the whole update, so every process standardises alike (objects, not tensors: NCCL
    moves only GPU tensors, and these are a few floats)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x.detach().cpu())
    return torch.cat(parts, dim=-1)


@dataclass
class RunningMoments:
    """Running mean / SD of scores (TRL 0.x ``RunningMoments``, parallel-variance merge)."""

    mean: float = 0.0
    var: float = 1.0
    std: float = 1.0
    count: float = 1e-24

    def update(self, xs: torch.Tensor) -> None:
        x = xs.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        x_mean, x_var = float(x.mean()), float(x.var(unbiased=False))
        delta, tot = x_mean - self.mean, self.count + n
        m2 = self.var * self.count + x_var * n + delta**2 * self.count * n / tot
        self.mean += delta * n / tot
        self.var = m2 / tot
        self.std = float(np.sqrt(self.var * tot / max(tot - 1, 1e-12)))
        self.count = tot

    def normalise(self, xs: torch.Tensor) -> torch.Tensor:
        return (xs - self.mean) / (self.std + 1e-8)


def load_trained_reward(folder: str | Path) -> TrainedReward:
    """Load a saved reward function for RL, checking its files and that its encoder is the one installed.

    Raises :class:`RLError` naming the folder when files are missing or the
    features were built by another encoder (a frozen-encoder head only fits the
    encoder it was trained on).
    """
    folder = Path(folder)
    if not (folder / "reward.json").is_file():
        raise RLError(f"{folder}: no saved reward function (reward.json missing); run notebooks 02-04 first")
    try:
        trained = TrainedReward.load(folder)
    except (RewardModelError, OSError, ValueError, KeyError) as e:
        raise RLError(f"cannot load the reward function: {e}") from e
    if not trained.finetuned and trained.constant is None:
        want = encoder_id(trained.encoder_name, trained.params.max_tokens)
        if trained.encoder_id != want:
            raise RLError(
                f"{folder}: built for encoder {trained.encoder_id!r}, but the installed encoder is {want!r}; retrain it"
            ) from EncoderMismatchError(trained.encoder_id)
    return trained


#: Probe pairs that any non-constant reward function scores differently (see :func:`check_reward_for_rl`).
_PROBE = (
    ("User: I just got back from a trip to Peru.", "That sounds amazing! What was your favourite part?"),
    ("User: My cat is sick.\nAI: Oh no.\nUser: Yeah, it has been rough.", "ok"),
    ("User: What do you do for fun?", "I like hiking and reading. What about you?"),
    ("User: hi", ""),
)


def check_reward_for_rl(trained: TrainedReward, name: str, scorer: PairScorer) -> None:
    """Refuse a reward function RL cannot climb: constant (Mean, Mode, or a head that scores everything
    alike) or non-finite on probe pairs. Raises :class:`RLError` naming it and why."""
    if trained.constant is not None:
        raise RLError(
            f"reward function {name!r} ({trained.method}) is constant: every response scores "
            f"{trained.constant:.4g}, so RL has nothing to climb; choose a learned one "
            "(rl.reward_fns: a GELI, GE or LI id, e.g. geli, rrd_k32, va, ls)"
        )
    scores = scorer([h for h, _ in _PROBE], [r for _, r in _PROBE])
    if not np.isfinite(scores).all():
        raise RLError(
            f"reward function {name!r} ({trained.method}) returns non-finite scores "
            f"({scores.tolist()}) on probe pairs: its head is broken; retrain it"
        )
    if float(np.ptp(scores)) < 1e-6:
        raise RLError(
            f"reward function {name!r} ({trained.method}) scores every probe pair alike "
            f"({scores[0]:.4g}): its predictions are constant, so RL has nothing to climb"
        )


def check_adapter(folder: str | Path, rl: RLParams, base: str | Path) -> None:
    """Refuse a saved LoRA adapter built for another base model or LoRA rank / α (RLError naming the folder)."""
    folder = Path(folder)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise RLError(f"{folder}: no saved adapter (adapter_config.json missing)")
    cfg = json.loads(cfg_path.read_text())
    got_base = str(cfg.get("base_model_name_or_path") or "")
    if Path(got_base).name != Path(str(base)).name:
        raise RLError(
            f"{folder}: adapter saved for base model {got_base!r}, not {str(base)!r}; "
            "delete the folder (or pass another out_dir) to train afresh"
        )
    for key, want in (("r", rl.lora_r), ("lora_alpha", rl.lora_alpha)):
        if int(cfg.get(key, -1)) != int(want):
            raise RLError(
                f"{folder}: adapter saved with LoRA {key}={cfg.get(key)}, but rl.lora_"
                f"{'r' if key == 'r' else 'alpha'} is {want}; delete the folder (or pass another "
                "out_dir) to train afresh"
            )


class TextReward(nn.Module):
    """r_θ(s_t, a_t) on texts (:class:`~geli_lib.alignment.generation_eval.PairScorer`), plus running score
    normalisation.

    ``raw(histories, responses)`` gives r̂ on the reward table's scale (the
    history in the policy's line format); it is the very function notebook 08
    cross-scores with, given the same ``data`` parameters. Calling the module
    gives the normalised score PPO optimises and updates the running moments.
    The mean and SD of each batch's raw scores accumulate in ``log`` until
    :meth:`pop_log`. ``step`` (set by the trainer's monitor) names the update
    in errors. Histories are the dialogue state r_θ scores in (a context's
    ``reward_history``), not the policy's shorter prompt.
    """

    def __init__(
        self,
        trained: TrainedReward,
        name: str = "",
        normalise: bool = True,
        data: DataParams | None = None,
        device: str = "cpu",
    ):
        super().__init__()
        self.trained, self.name = trained, name or trained.method
        self.normalise = normalise
        self.scorer = PairScorer(trained, data, device)
        self.head = trained.head
        self.moments = RunningMoments()
        self.step = 1
        self.log: list[torch.Tensor] = []
        self.words: list[int] = []

    def raw(self, histories: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """r̂ (B,) float32 of each (history lines, response) pair; RLError on a non-finite score."""
        out = torch.from_numpy(self.scorer(list(histories), list(responses))).float()
        bad = ~torch.isfinite(out)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise RLError(
                f"update {self.step}: reward function {self.name!r} returned a non-finite reward for "
                f"{int(bad.sum())} of {len(out)} responses (first: {responses[i]!r})"
            )
        return out

    def forward(self, histories: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        r = self.raw(histories, responses)
        words = torch.tensor([len(x.split()) for x in responses], dtype=torch.float32)
        everyone = across_processes(torch.stack([r, words]))  # (2, B x processes): the whole update's
        self.log.append(everyone[0])
        self.words += everyone[1].int().tolist()
        if not self.normalise:
            return r
        self.moments.update(everyone[0])
        return self.moments.normalise(r).float()

    def pop_log(self) -> tuple[float, float, float]:
        """Mean and SD of the raw scores and mean response words since the last call (NaN when none)."""
        if not self.log:
            return float("nan"), float("nan"), float("nan")
        r, words = torch.cat(self.log), self.words
        self.log, self.words = [], []
        return float(r.mean()), float(r.std()) if len(r) > 1 else 0.0, float(np.mean(words)) if words else np.nan

    def reward_func(
        self, prompts: list[Any], completions: list[Any], history: list[str] | None = None, **_: Any
    ) -> list[float]:
        """The same r_θ as a TRL reward callable (RLOO / GRPO), normalised like PPO's score (``normalise``).

        TRL's RLOO subtracts β·KL from this score before its leave-one-out baseline,
        so β is in the score's units: on raw r̂ a reward function with a wide range
        pays less for the same KL (on cpu a batch's SD of r̂ is ~1.8 for Language
        Sentiment, ~0.75 for GELI, GE: RRD and Visual Affect). Standardised, β
        means the same for every reward function.
        ``history`` comes from the dataset column of the same name; conversational
        completions are lists of messages.
        """
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        if history is None:
            history = [_USER_RE.search(str(p)).group(1) if isinstance(p, str) else p[-1]["content"] for p in prompts]
        return self([str(h) for h in history], [strip_role(t) for t in texts]).tolist()


class _ScoreBackbone(nn.Module):
    """Decodes the policy's ids, scores them with r_θ, returns the score as ``hidden_states[-1]`` (B, L, 1).

    The ids hold only the prompt the policy was shown; ``histories``
    (:func:`reward_histories`) gives back the dialogue state r_θ scores in. When set, a
    prompt outside it is an error rather than a silently shorter s_t.
    """

    def __init__(self, reward: TextReward, tok: Any, histories: dict[str, str] | None = None):
        super().__init__()
        self.reward, self.tok, self.histories = reward, tok, histories or {}

    def _state(self, shown: str) -> str:
        if not self.histories:
            return shown
        if shown not in self.histories:
            raise RLError(
                f"update {self.reward.step}: reward function {self.reward.name!r} was given a prompt that is "
                f"not one of the RL contexts' (its history ends: {shown[-120:]!r})"
            )
        return self.histories[shown]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        texts = [
            self.tok.decode(ids[m.bool()].tolist(), skip_special_tokens=False)
            for ids, m in zip(input_ids, attention_mask)
        ]
        pairs = [split_prompt_response(t, self.tok.eos_token) for t in texts]
        score = self.reward([self._state(h) for h, _ in pairs], [r for _, r in pairs]).to(input_ids.device)
        hidden = score.view(-1, 1, 1).expand(input_ids.shape[0], input_ids.shape[1], 1)
        return SimpleNamespace(hidden_states=(hidden,))


class RewardAdapter(nn.Module):
    """r_θ in the ``*ForSequenceClassification`` shape TRL's PPOTrainer calls.

    TRL calls ``getattr(model, model.base_model_prefix)(input_ids=…,
    attention_mask=…)`` and reads ``model.score(out.hidden_states[-1])`` at the
    last response token; the backbone puts the (normalised) score at every position.
    """

    base_model_prefix = "backbone"

    def __init__(self, reward: TextReward, tok: Any, histories: dict[str, str] | None = None):
        super().__init__()
        self.backbone = _ScoreBackbone(reward, tok, histories)
        self.score = nn.Identity()
