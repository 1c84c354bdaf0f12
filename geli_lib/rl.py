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
   reward model sees exactly the history the policy saw.
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
   discount (see :class:`geli_lib.params.RLParams`); it is used by the gpu profile.
5. **Logging and checkpoints**: per update, the mean raw r̂, the KL (summed over
   the response, nats) and more go to ``tables/ppo_curves.csv`` and to
   TensorBoard (``results/<results key>/tensorboard/<run>``). Every ``save_every``
   updates the adapter is saved (``adapter-step<N>``) with the resume state
   (value model, optimiser, score moments, β, RNG, curves). A run that stops
   resumes from its last state; a finished run (``done.json``) is not redone
   unless its inputs change. TRL's PPOTrainer cannot resume by itself: the
   trainer is rebuilt for the remaining updates and the state loaded into it
   (its prompt order then differs: the data loader is re-seeded with seed + step).
6. **RLOO / GRPO** (option ``algorithm``): the same prompts and the same r_θ as
   a plain reward callable (:meth:`TextReward.reward_func`), the TRL trainers'
   own checkpoints and ``resume_from_checkpoint``.

Multi-GPU: the same entry point runs under ``accelerate launch`` (TRL shards the
rollouts over processes); see the README.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental.ppo is TRL 1.12's PPO, chosen knowingly

import contextlib  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from geli_lib.experiments import slug  # noqa: E402
from geli_lib.generation_eval import GENERATION_COLUMNS, PairScorer, reward_history  # noqa: E402
from geli_lib.io import cache_dir, content_key, file_key, progress_enabled, write_csv, write_json  # noqa: E402
from geli_lib.params import ComputeParams, DataParams, RLParams, to_dict  # noqa: E402
from geli_lib.reward_model import (
    EncoderMismatchError,
    RewardModelError,
    TrainedReward,  # noqa: E402
    encoder_id,
)

#: GELI Fig. 3 (and LLM-GELI): the policy's system prompt.
SYSTEM_PROMPT = (
    "You are AI. You are having a casual social conversation with a User. AI is polite, kind, "
    "obedient, honest, and does not swear. You are given the dialogue history, generate the "
    "response to the User in under 100 words."
)
#: The chat template's opening of the assistant turn: where the prompt ends and the response starts.
ASSISTANT_HEADER = "<|im_start|>assistant\n"
_ROLE_RE = re.compile(r"^\s*AI\s*:\s*")
_USER_RE = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
#: LoRA targets: every attention and MLP projection of the Llama-style SmolLM2.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CURVE_COLUMNS = (
    "reward_fn",
    "seed",
    "step",
    "reward_mean",
    "kl",
    "corpus",
    "algorithm",
    "reward_sd",
    "score_norm_mean",
    "kl_coef",
    "entropy",
    "response_words",
    "seconds",
)


class RLError(RuntimeError):
    """RL adaptation cannot go on: bad reward function, NaN reward, bad contexts; the message says where."""


# --------------------------------------------------------------------------- contexts and prompt


def _clean(text: str) -> str:
    """One line per utterance: newlines and runs of spaces become one space."""
    return " ".join(str(text).split())


def dialogue_contexts(corpus: Any, convo_ids: Sequence[str] | None = None, history_turns: int = 10) -> pd.DataFrame:
    """One row per AI turn with at least one turn before it: the policy's context and the real reply.

    Columns: ``corpus, convo_id, turn_idx, context_id`` (``"<convo_id>:<turn_idx>"``),
    ``history`` (the last ``history_turns`` turns, one per line, ``User: …`` /
    ``AI: …``) and ``response`` (the corpus' real AI utterance: the ground truth).
    """
    t = corpus.turns
    if convo_ids is not None:
        t = t[t["convo_id"].isin(set(map(str, convo_ids)))]
    t = t.sort_values(["convo_id", "turn_idx"], kind="stable")
    names = corpus.conversations.set_index("convo_id")["corpus"]
    rows = []
    for cid, g in t.groupby("convo_id", sort=True):
        lines = [("AI: " if a else "User: ") + _clean(u) for a, u in zip(g["is_ai"], g["utterance"])]
        for i, (ai, idx, utt) in enumerate(zip(g["is_ai"], g["turn_idx"], g["utterance"])):
            if ai and i > 0:
                rows.append(
                    {
                        "corpus": str(names.get(cid, "")),
                        "convo_id": str(cid),
                        "turn_idx": int(idx),
                        "context_id": f"{cid}:{int(idx)}",
                        "history": "\n".join(lines[max(0, i - history_turns) : i]),
                        "response": _clean(utt),
                    }
                )
    return pd.DataFrame(rows, columns=["corpus", "convo_id", "turn_idx", "context_id", "history", "response"])


def rl_contexts(corpus: Any, split: pd.Series, rl: RLParams, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held_out) contexts of the ``rl`` split: ``eval_conversations`` conversations are held out.

    The held-out side keeps ``eval_contexts`` contexts (seeded choice); the train
    side keeps ``train_contexts`` (0 = all). Raises :class:`RLError` when the split
    has too few conversations.
    """
    ids = sorted(split[split == "rl"].index.astype(str))
    if len(ids) < rl.eval_conversations + 1:
        raise RLError(
            f"the rl split has {len(ids)} conversations; need eval_conversations "
            f"({rl.eval_conversations}) + 1 at least (raise splits.rl or lower rl.eval_conversations)"
        )
    rng = np.random.default_rng(seed)
    held = set(rng.choice(ids, rl.eval_conversations, replace=False).tolist())
    train = dialogue_contexts(corpus, [c for c in ids if c not in held], rl.history_turns)
    test = dialogue_contexts(corpus, sorted(held), rl.history_turns)
    if rl.train_contexts and len(train) > rl.train_contexts:
        train = train.sample(rl.train_contexts, random_state=seed).sort_index()
    return train.reset_index(drop=True), sample_contexts(test, rl.eval_contexts, seed)


def sample_contexts(contexts: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` contexts, a seeded choice spread over conversations (round robin), in a stable order."""
    if len(contexts) <= n:
        return contexts.reset_index(drop=True)
    shuffled = contexts.sample(frac=1.0, random_state=seed)
    shuffled = shuffled.assign(_k=shuffled.groupby("convo_id").cumcount())
    return (
        shuffled.sort_values("_k", kind="stable")
        .head(n)
        .drop(columns="_k")
        .sort_values(["convo_id", "turn_idx"])
        .reset_index(drop=True)
    )


def chat_messages(history: str) -> list[dict[str, str]]:
    """The policy's chat: GELI Fig. 3's system prompt, then the dialogue history as the user message."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": history}]


def _prompt_ids(tok: Any, history: str) -> list[int]:
    text = tok.apply_chat_template(chat_messages(history), tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_prompt(tok: Any, history: str, max_prompt_tokens: int) -> tuple[list[int], str]:
    """Token ids of the prompt and the history actually shown, left-truncated to ``max_prompt_tokens``.

    The template and system prompt always stay; the history loses its oldest
    tokens until the whole prompt fits.
    """
    ids = _prompt_ids(tok, history)
    if len(ids) <= max_prompt_tokens:
        return ids, history
    budget = max_prompt_tokens - len(_prompt_ids(tok, ""))
    if budget < 1:
        raise RLError(
            f"max_prompt_tokens={max_prompt_tokens} leaves no room for the history "
            f"(the template alone takes {max_prompt_tokens - budget} tokens)"
        )
    hist_ids = tok(history, add_special_tokens=False)["input_ids"]
    while budget > 0:  # decode / re-encode can merge tokens differently: shrink until it fits
        cut = tok.decode(hist_ids[-budget:])
        ids = _prompt_ids(tok, cut)
        if len(ids) <= max_prompt_tokens:
            return ids, cut
        budget -= 1
    raise RLError(f"could not fit the history into max_prompt_tokens={max_prompt_tokens}")


def strip_role(text: str) -> str:
    """A response without a leading role label (``AI:``): the policy sees history lines in that
    format and sometimes echoes it; the label is not part of what the AI says."""
    return _ROLE_RE.sub("", text, count=1).strip()


def split_prompt_response(text: str, eos: str) -> tuple[str, str]:
    """(history, response) of a decoded prompt + response.

    The history is the user message; the response is the text after the
    assistant header, up to EOS, without a leading ``AI:`` (:func:`strip_role`).
    """
    head, sep, tail = text.partition(ASSISTANT_HEADER)
    if not sep:
        raise RLError(f"no assistant header {ASSISTANT_HEADER!r} in the sequence given to the reward: {text[:120]!r}…")
    m = _USER_RE.search(head)
    history = m.group(1) if m else ""
    return history, strip_role(tail.split(eos, 1)[0])


# --------------------------------------------------------------------------- the reward


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
            "(rl.reward_fns: GELI, GE, LI rows of the reward table)"
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
    """r_θ(s_t, a_t) on texts (:class:`geli_lib.generation_eval.PairScorer`), plus running score normalisation.

    ``raw(histories, responses)`` gives r̂ on the reward table's scale (the
    history in the policy's line format); it is the very function notebook 08
    cross-scores with, given the same ``data`` parameters. Calling the module
    gives the normalised score PPO optimises and updates the running moments.
    The mean and SD of each batch's raw scores accumulate in ``log`` until
    :meth:`pop_log`. ``step`` (set by the trainer's monitor) names the update
    in errors.
    """

    def __init__(
        self,
        trained: TrainedReward,
        name: str = "",
        normalise: bool = True,
        batch_size: int = 64,
        data: DataParams | None = None,
        device: str = "cpu",
    ):
        super().__init__()
        self.trained, self.name = trained, name or trained.method
        self.normalise, self.batch_size = normalise, batch_size
        self.scorer = PairScorer(trained, data, device, batch_size)
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
        self.log.append(r)
        self.words += [len(x.split()) for x in responses]
        if not self.normalise:
            return r
        self.moments.update(r)
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
        """The same r_θ as a TRL reward callable (RLOO / GRPO): raw r̂ per completion.

        ``history`` comes from the dataset column of the same name; conversational
        completions are lists of messages.
        """
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        if history is None:
            history = [_USER_RE.search(str(p)).group(1) if isinstance(p, str) else p[-1]["content"] for p in prompts]
        texts = [strip_role(t) for t in texts]
        r = self.raw([str(h) for h in history], texts)
        self.log.append(r)
        self.words += [len(x.split()) for x in texts]
        return r.tolist()


class _ScoreBackbone(nn.Module):
    """Decodes the policy's ids, scores them with r_θ, returns the score as ``hidden_states[-1]`` (B, L, 1)."""

    def __init__(self, reward: TextReward, tok: Any):
        super().__init__()
        self.reward, self.tok = reward, tok

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        texts = [
            self.tok.decode(ids[m.bool()].tolist(), skip_special_tokens=False)
            for ids, m in zip(input_ids, attention_mask)
        ]
        pairs = [split_prompt_response(t, self.tok.eos_token) for t in texts]
        score = self.reward([h for h, _ in pairs], [r for _, r in pairs]).to(input_ids.device)
        hidden = score.view(-1, 1, 1).expand(input_ids.shape[0], input_ids.shape[1], 1)
        return SimpleNamespace(hidden_states=(hidden,))


class RewardAdapter(nn.Module):
    """r_θ in the ``*ForSequenceClassification`` shape TRL's PPOTrainer calls.

    TRL calls ``getattr(model, model.base_model_prefix)(input_ids=…,
    attention_mask=…)`` and reads ``model.score(out.hidden_states[-1])`` at the
    last response token; the backbone puts the (normalised) score at every position.
    """

    base_model_prefix = "backbone"

    def __init__(self, reward: TextReward, tok: Any):
        super().__init__()
        self.backbone = _ScoreBackbone(reward, tok)
        self.score = nn.Identity()


# --------------------------------------------------------------------------- the evaluation curve

#: Columns of ``tables/rl_eval_curves.csv``: one row per (run, evaluation step, held-out context).
EVAL_COLUMNS = ("reward_fn", "seed", "corpus", "algorithm", "step", "context_id", "reward", "kl", "words", "response")


@torch.no_grad()
def evaluate_policy(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    histories: Sequence[str],
    reward: TextReward,
    max_new_tokens: int,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Greedy responses of a LoRA policy to fixed prompts, their r̂ and their KL to the reference.

    ``kl``: Σ over the response's tokens (up to and including EOS) of the exact
    KL(π_φ(·|s, a_<k) ‖ π_η(·|s, a_<k)) over the vocabulary, π_η being the same
    model with the adapter off: nats per response, ≥ 0, comparable across
    algorithms (TRL's own logs estimate it from samples, per token or per response).
    Columns: ``reward, kl, words, response``, one row per prompt. The model's
    train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    try:
        for i in range(0, len(prompts), batch_size):
            batch = tok.pad({"input_ids": [list(p) for p in prompts[i : i + batch_size]]}, return_tensors="pt")
            batch = {k: v.to(model.device) for k, v in batch.items()}
            seq = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                top_k=None,
                top_p=None,
                temperature=None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            n_prompt = batch["input_ids"].shape[1]
            resp = seq[:, n_prompt:]
            eos = (resp == tok.eos_token_id).long()
            keep = (eos.cumsum(1) - eos) == 0  # tokens up to and including the first EOS
            attn = torch.cat([batch["attention_mask"], keep.long()], 1)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            lp = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, n_prompt - 1 : -1]
            if hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    lq = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, n_prompt - 1 : -1]
                lp, lq = lp.float().log_softmax(-1), lq.float().log_softmax(-1)
                kl = ((lp.exp() * (lp - lq)).sum(-1) * keep).sum(1).cpu().numpy()
            else:
                kl = np.full(len(seq), np.nan)
            texts = [strip_role(t) for t in tok.batch_decode(resp, skip_special_tokens=True)]
            r = reward.raw(list(histories[i : i + batch_size]), texts).numpy()
            rows += [
                {"reward": float(a), "kl": float(b), "words": len(t.split()), "response": t}
                for a, b, t in zip(r, kl, texts)
            ]
    finally:
        model.train(was_training)
    return pd.DataFrame(rows, columns=["reward", "kl", "words", "response"])


def curve_slope(
    evals: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Least-squares slope of the mean evaluation reward over steps (r̂ per update), with a bootstrap CI.

    ``evals``: rows of one run (``step``, ``context_id``, ``reward``). The
    contexts are the independent units: the CI is the percentile interval of
    the slope over ``n_boot`` resamples of contexts (seeded). NaN with fewer
    than two steps.
    """
    wide = evals.pivot_table(index="context_id", columns="step", values="reward", aggfunc="mean")
    steps = wide.columns.to_numpy(dtype=float)
    if len(steps) < 2:
        return math.nan, math.nan, math.nan
    x = steps - steps.mean()
    w = x / (x**2).sum()  # slope = Σ w_k · mean_reward(step_k)
    y = wide.to_numpy(dtype=float)
    per_context = np.nansum(y * w, axis=1)  # each context's own slope; the mean of them is the slope of the mean
    slope = float(per_context.mean())
    rng = np.random.default_rng(seed)
    boots = per_context[rng.integers(0, len(per_context), size=(n_boot, len(per_context)))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return slope, float(lo), float(hi)


# --------------------------------------------------------------------------- run folders, curves


def run_dir(results_key: str, name: str, seed: int, algorithm: str = "ppo") -> Path:
    """Cache folder of one adaptation: adapters, resume state, ``done.json``; keyed like the results
    (:attr:`StudyParams.results_key`), so an ad-hoc or other-corpus run never replaces the study's."""
    return cache_dir(f"rl/{results_key}/{algorithm}") / slug(name) / f"seed{seed}"


#: RLParams fields that do not change a training run (which functions, generations, checkpoint spacing).
_NOT_TRAINING = ("reward_fns", "eval_contexts", "gen_tokens", "gen_do_sample", "save_every")


def tensorboard_dir(results_key: str, algorithm: str, name: str, seed: int) -> Path:
    """``results/<results_key>/tensorboard/<algorithm>-<name>-seed<seed>``: one adaptation's TensorBoard log."""
    from geli_lib.runs import results_dir

    return results_dir(results_key, f"tensorboard/{algorithm}-{slug(name)}-seed{seed}")


def run_key(
    rl: RLParams,
    reward_folder: Path,
    train: pd.DataFrame,
    seed: int,
    curve_ids: Sequence[str] = (),
    data: DataParams | None = None,
) -> str:
    """What an adaptation's outputs are valid for: its training parameters, the reward function's files,
    its prompts, the evaluation contexts and r_θ's history cut."""
    files = [p for p in sorted(reward_folder.rglob("*")) if p.is_file()]
    fields = {k: v for k, v in to_dict(rl).items() if k not in _NOT_TRAINING}
    d = data or DataParams()
    return content_key(
        fields, file_key(files), train["context_id"].tolist(), seed, list(curve_ids), [d.history_turns, d.history_chars]
    )


def finished_run(run: Path, key: str) -> dict[str, Any] | None:
    """``done.json`` of the adaptation in ``run`` when it finished with the inputs of ``key`` (its adapter
    saved), else None."""
    done_path = run / "done.json"
    if not done_path.exists() or not (run / "adapter").is_dir():
        return None
    done = json.loads(done_path.read_text())
    return done if done.get("key") == key else None


def _folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its path relative to it (what a Dask task sends or returns)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _unpack(files: dict[str, bytes], folder: Path) -> Path:
    """Write :func:`_folder_files`' files under ``folder``, in their (sorted) order."""
    for rel, blob in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return folder


def _adapt_task(
    train: pd.DataFrame,
    name: str,
    reward_files: dict[str, bytes],
    rl: RLParams,
    profile: str,
    corpus: str,
    seed: int,
    device: str,
    curve: pd.DataFrame | None,
    data: DataParams | None,
) -> dict[str, bytes]:
    """One adaptation of :func:`adapt_on_cluster`, where the Dask task runs: from the reward function's files,
    in a temporary folder that goes with the task. Returns the run's adapter, ``done.json`` and TensorBoard
    log (``tensorboard/…``) for the client to write; nothing stays on the worker."""
    with tempfile.TemporaryDirectory(prefix="geli-rl-") as tmp:
        run = Path(tmp) / "run"
        train_rl(
            name,
            _unpack(reward_files, Path(tmp) / "reward"),
            train,
            rl,
            profile,
            corpus,
            seed,
            device,
            out_dir=run,
            curve=curve,
            data=data,
            write_results=False,
        )
        return {
            rel: blob
            for rel, blob in _folder_files(run).items()
            if rel == "done.json" or rel.split("/")[0] in ("adapter", "tensorboard")
        }


def adapt_on_cluster(
    chosen: dict[str, Path],
    train: pd.DataFrame,
    rl: RLParams,
    profile: str,
    compute: ComputeParams,
    corpus: str = "simulated",
    seed: int = 0,
    device: str = "cpu",
    curve: pd.DataFrame | None = None,
    data: DataParams | None = None,
    results_key: str | None = None,
) -> list[str]:
    """Run the adaptations of ``chosen`` (name -> reward-function folder) that have not finished as Dask tasks,
    where ``compute`` says; return their names. ``serial``: nothing (:func:`train_rl` trains them here).

    Each task gets the reward function's files and trains in a temporary folder of its
    worker (:func:`_adapt_task`, the same :func:`train_rl`, with this process's torch
    threads; with ``device`` cuda, on a worker offering ``GPU``). This process writes
    what comes back into :func:`run_dir` and :func:`tensorboard_dir`, so :func:`train_rl`
    with the same arguments then reads the finished run (and writes its table rows)
    like any finished one. An interrupted task starts over: its resume state was on the worker.
    """
    from geli_lib.compute import run_grid

    if compute.scheduler == "serial":
        return []
    key_of = results_key or profile
    curve_ids = [] if curve is None else curve["context_id"].tolist()
    todo = [
        n
        for n, folder in chosen.items()
        if finished_run(run_dir(key_of, n, seed, rl.algorithm), run_key(rl, folder, train, seed, curve_ids, data))
        is None
    ]
    calls = [(n, _folder_files(chosen[n]), rl, profile, corpus, seed, device, curve, data) for n in todo]
    for name, files in zip(todo, run_grid(_adapt_task, train, calls, compute, device)):
        run = run_dir(key_of, name, seed, rl.algorithm)
        shutil.rmtree(run, ignore_errors=True)  # a partial run of this process: the worker's is complete
        _unpack(
            {rel.split("/", 1)[1]: b for rel, b in files.items() if rel.startswith("tensorboard/")},
            tensorboard_dir(key_of, rl.algorithm, name, seed),
        )
        # adapter/ before done.json (sorted order): done.json, the completeness marker, last
        _unpack({rel: b for rel, b in files.items() if not rel.startswith("tensorboard/")}, run)
    return todo


def merge_rows(path: Path, rows: pd.DataFrame, keys: list[str], columns: Sequence[str]) -> pd.DataFrame:
    """Replace in the CSV at ``path`` the rows whose ``keys`` values appear in ``rows``; write atomically."""
    rows = rows.reindex(columns=list(dict.fromkeys([*columns, *rows.columns])))
    if path.exists() and path.stat().st_size:
        old = pd.read_csv(path, keep_default_na=False, na_values=[""])
        for k in keys:  # same dtype on both sides before comparing
            old[k], rows[k] = old[k].astype(str), rows[k].astype(str)
        drop = old.set_index(keys).index.isin(rows.set_index(keys).index.unique())
        rows = pd.concat([old[~drop], rows], ignore_index=True)
    for k in ("seed", "step", "turn_idx"):
        if k in rows:
            rows[k] = pd.to_numeric(rows[k]).astype(int)
    write_csv(path, rows)
    return rows


# --------------------------------------------------------------------------- PPO


def _lora_config(rl: RLParams) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=rl.lora_r,
        lora_alpha=rl.lora_alpha,
        lora_dropout=rl.lora_dropout,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence transformers' loading bars and reports and its deprecation chatter, unless progress is on.

    The value model's fresh ``score`` head is reported as MISSING on every load,
    and TRL 1.12 passes arguments transformers 5 calls deprecated: neither is news.
    """
    from transformers.utils import logging as hf_logging

    if progress_enabled():
        yield
        return
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="var\\(\\): degrees of freedom")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _value_model(path: Path, pad_id: int, device: str, train_backbone: bool) -> Any:
    """SmolLM2 with a fresh scalar ``.score`` head: PPO's value model (backbone frozen unless ``train_backbone``)."""
    from transformers import AutoModelForSequenceClassification

    value = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, local_files_only=True, dtype=torch.float32
    )
    value.config.pad_token_id = pad_id
    if not train_backbone:
        getattr(value, value.base_model_prefix).requires_grad_(False)
    return value.to(device)


def _trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of ``module`` (what a resume state must keep)."""
    return {k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad}


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@dataclass
class RunInfo:
    """What :func:`train_rl` did: where the adapter is, its curves, time per update and peak memory."""

    name: str
    seed: int
    adapter: Path
    curves: pd.DataFrame
    seconds_per_step: float
    resumed_from: int
    reused: bool
    peak_rss_gb: float
    evals: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=list(EVAL_COLUMNS)))
    """Rows of :data:`EVAL_COLUMNS`: the policy on the fixed held-out contexts (empty without ``curve``)."""


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _tensorboard(tb_dir: Path) -> Any:
    """transformers' TensorBoard callback writing to ``tb_dir`` (its own default is under output_dir)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(tb_dir)))


def _monitor(
    name: str,
    seed: int,
    corpus: str,
    rl: RLParams,
    reward: TextReward,
    start: int,
    curves: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    save: Any,
    evaluate: Any,
    holder: dict[str, Any],
) -> Any:
    """The callback that logs each update, adapts the KL weight, evaluates on the fixed contexts every
    ``eval_every`` updates (and before the first), and saves every ``save_every`` updates."""
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()

        def _evaluate(self, step: int) -> None:
            if evaluate is None or any(e["step"] == step for e in evals):
                return
            t = time.perf_counter()
            evals.extend(evaluate(step))
            self.t0 += time.perf_counter() - t  # evaluation time is not update time

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero:
                self._evaluate(start)
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            kl = logs.get("objective/kl", logs.get("kl"))
            if kl is None:
                return
            kl = float(kl)
            if rl.algorithm != "ppo":  # TRL logs the mean per-token KL: make it nats per response like PPO's
                kl *= float(logs.get("completions/mean_length", 1.0))
            mean, sd, words = reward.pop_log()
            step = start + state.global_step
            now = time.perf_counter()
            beta_holder = args if rl.algorithm == "ppo" else holder.get("trainer")
            attr = "kl_coef" if rl.algorithm == "ppo" else "beta"
            curves.append(
                {
                    "reward_fn": name,
                    "seed": seed,
                    "step": step,
                    "reward_mean": mean,
                    "kl": kl,
                    "corpus": corpus,
                    "algorithm": rl.algorithm,
                    "reward_sd": sd,
                    "score_norm_mean": logs.get("objective/scores", np.nan),
                    "kl_coef": float(getattr(beta_holder, attr, np.nan)),
                    "entropy": logs.get("objective/entropy", logs.get("entropy", np.nan)),
                    "response_words": words,
                    "seconds": round(now - self.t0, 3),
                }
            )
            self.t0 = now
            if rl.adaptive_kl and beta_holder is not None:  # Ziegler et al. 2019 / TRL 0.x AdaptiveKLController
                err = float(np.clip(kl / rl.kl_target - 1, -0.2, 0.2))
                setattr(beta_holder, attr, getattr(beta_holder, attr) * (1 + err * rl.batch_size / rl.kl_horizon))
            reward.step = step + 1

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            step = start + state.global_step
            if state.is_world_process_zero and (step % rl.eval_every == 0 or step == rl.steps):
                self._evaluate(step)
            if save is not None and state.is_world_process_zero and (step % rl.save_every == 0 or step == rl.steps):
                save(step, args)

    return Monitor()


def _ppo_config(rl: RLParams, out: Path, seed: int, updates: int, kl_coef: float, device: str) -> Any:
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=str(out / "trl"),
        seed=seed,
        learning_rate=rl.lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=rl.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=rl.batch_size // rl.mini_batch_size,
        total_episodes=updates * rl.batch_size,
        local_rollout_forward_batch_size=rl.batch_size,
        num_ppo_epochs=rl.ppo_epochs,
        response_length=rl.response_length,
        temperature=rl.temperature,
        stop_token="eos",
        cliprange=rl.cliprange,
        cliprange_value=rl.cliprange_value,
        vf_coef=rl.vf_coef,
        gamma=rl.gamma,
        lam=rl.gae_lambda,
        kl_coef=kl_coef,
        kl_estimator="k1",
        whiten_rewards=False,
        missing_eos_penalty=None,
        num_sample_generations=0,
        bf16=rl.bf16,
        gradient_checkpointing=rl.gradient_checkpointing,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        disable_tqdm=not progress_enabled(),
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )


def _evaluator(
    holder: dict[str, Any],
    tok: Any,
    curve: pd.DataFrame | None,
    reward: TextReward,
    rl: RLParams,
    name: str,
    seed: int,
    corpus: str,
) -> Any:
    """``evaluate(step) -> rows`` of :data:`EVAL_COLUMNS` on the fixed held-out contexts (None without any)."""
    if curve is None or curve.empty:
        return None
    enc = [encode_prompt(tok, h, rl.max_prompt_tokens) for h in curve["history"]]
    prompts, shown = [e[0] for e in enc], [e[1] for e in enc]

    def evaluate(step: int) -> list[dict[str, Any]]:
        trainer = holder["trainer"]
        model = trainer.accelerator.unwrap_model(trainer.policy_model if rl.algorithm == "ppo" else trainer.model)
        out = evaluate_policy(model, tok, prompts, shown, reward, rl.response_length)
        meta = {"reward_fn": name, "seed": seed, "corpus": corpus, "algorithm": rl.algorithm, "step": step}
        return [{**meta, "context_id": c, **row} for c, row in zip(curve["context_id"], out.to_dict("records"))]

    return evaluate


def _score_norm_option(rl: RLParams) -> dict[str, Any]:
    """``rl.score_norm`` for RLOO / GRPO: standardised advantages (RLOO's ``normalize_advantages``; GRPO's
    ``scale_rewards`` by the group's SD, or none). Without it RLOO's advantages stay on r̂'s scale, whose
    within-context differences are small, and the LoRA barely moves."""
    if rl.algorithm == "rloo":
        return {"normalize_advantages": rl.score_norm}
    return {"scale_rewards": "group" if rl.score_norm else "none"}


def curve_contexts(held_out: pd.DataFrame, rl: RLParams) -> pd.DataFrame:
    """The fixed held-out contexts of the evaluation curve: the first ``rl.curve_contexts`` of ``held_out``."""
    return held_out.head(rl.curve_contexts).reset_index(drop=True)


@_quiet()
def train_rl(
    name: str,
    reward_folder: str | Path,
    train: pd.DataFrame,
    rl: RLParams,
    profile: str,
    corpus: str = "simulated",
    seed: int = 0,
    device: str = "cpu",
    callbacks: Sequence[Any] = (),
    out_dir: str | Path | None = None,
    curve: pd.DataFrame | None = None,
    data: DataParams | None = None,
    results_key: str | None = None,
    write_results: bool = True,
) -> RunInfo:
    """Adapt SmolLM2 + LoRA to the reward function saved in ``reward_folder`` (steps 2-6 of the module docstring).

    ``train`` holds the RL contexts (:func:`rl_contexts`); ``curve`` the fixed
    held-out contexts the policy is evaluated on before the first update and
    every ``rl.eval_every`` updates (:func:`curve_contexts`; None: no evaluation
    curve); ``data`` the data parameters that cut r_θ's history (the ones 08
    cross-scores with; default ``DataParams()``). Writes the curves to
    ``results/<results_key>/tables/ppo_curves.csv`` (default key: ``profile``;
    notebooks pass :attr:`StudyParams.results_key`) and the evaluation rows to
    ``tables/rl_eval_curves.csv`` (rows of this reward function, seed, corpus
    and algorithm replaced) and returns a :class:`RunInfo`. A finished run with
    the same inputs is reused; an interrupted one resumes. ``callbacks`` are
    extra ``transformers.TrainerCallback`` objects; ``out_dir`` replaces the
    cache folder of adapters and resume state (:func:`run_dir`). Without
    ``write_results`` nothing goes to the results folder: the TensorBoard log
    stays in ``out_dir/tensorboard`` and the tables are left to the caller (a
    Dask task of :func:`train_rl_runs`, whose client writes them).
    """
    from geli_lib.models import load_policy, smollm2_path
    from geli_lib.runs import results_dir

    rl.validate()
    if train.empty:
        raise RLError("no RL contexts to train on (train is empty)")
    reward_folder = Path(reward_folder)
    trained = load_trained_reward(reward_folder)
    reward = TextReward(trained, name, normalise=rl.score_norm, data=data, device=device)
    check_reward_for_rl(trained, name, reward.scorer)
    run = Path(out_dir) if out_dir else run_dir(results_key or profile, name, seed, rl.algorithm)
    curve_ids = [] if curve is None else curve["context_id"].tolist()
    key = run_key(rl, reward_folder, train, seed, curve_ids, data)
    run_keys = ["reward_fn", "seed", "corpus", "algorithm"]

    def write_tables(frame: pd.DataFrame, ev: pd.DataFrame) -> None:
        if not write_results:  # a Dask task: its client writes the tables
            return
        tables = results_dir(results_key or profile, "tables")
        merge_rows(tables / "ppo_curves.csv", frame, run_keys, CURVE_COLUMNS)
        if not ev.empty:
            merge_rows(tables / "rl_eval_curves.csv", ev, run_keys, EVAL_COLUMNS)

    done_path = run / "done.json"
    done = finished_run(run, key)
    if done is not None:
        check_adapter(run / "adapter", rl, smollm2_path())
        curves, evals = pd.DataFrame(done["curves"]), pd.DataFrame(done.get("evals", []))
        write_tables(curves, evals)
        return RunInfo(name, seed, run / "adapter", curves, done["seconds_per_step"], 0, True, _peak_rss_gb(), evals)
    key_path = run / "key.json"
    if run.exists() and (not key_path.exists() or json.loads(key_path.read_text()).get("key") != key):
        shutil.rmtree(run)  # outputs of other inputs: start clean
    run.mkdir(parents=True, exist_ok=True)
    write_json(key_path, {"key": key})
    state_dir = run / "state"
    if not state_dir.exists() and (run / ".state.old").exists():  # stopped while swapping states
        os.replace(run / ".state.old", state_dir)
    start, state = 0, None
    if (state_dir / "state.json").exists():
        state = json.loads((state_dir / "state.json").read_text())
        if state.get("key") == key and state["step"] < rl.steps:
            start = int(state["step"])
            check_adapter(run / f"adapter-step{start}", rl, smollm2_path())
        else:
            state = None

    torch.manual_seed(seed + start)
    np.random.seed(seed + start)
    random.seed(seed + start)
    policy, tok = load_policy(device)
    policy.generation_config.pad_token_id = tok.pad_token_id
    reward.step = start + 1
    curves: list[dict[str, Any]] = list(state["curves"]) if state else []
    evals: list[dict[str, Any]] = list(state.get("evals", [])) if state else []
    tb_dir = tensorboard_dir(results_key or profile, rl.algorithm, name, seed) if write_results else run / "tensorboard"
    holder: dict[str, Any] = {}
    evaluate = _evaluator(holder, tok, curve, reward, rl, name, seed, corpus)

    def finish(trainer: Any, model: Any, t_train: float, first: int) -> RunInfo:
        seconds = t_train / max(rl.steps - first, 1)
        frame, ev = pd.DataFrame(curves), pd.DataFrame(evals, columns=list(EVAL_COLUMNS))
        if trainer.accelerator.is_main_process:  # under `accelerate launch`, one writer
            model.save_pretrained(run / "adapter")
            write_tables(frame, ev)
            write_json(done_path, {"key": key, "curves": curves, "evals": evals, "seconds_per_step": seconds})
            shutil.rmtree(state_dir, ignore_errors=True)  # only for resuming (a trained value backbone: ~1.6 GB)
        return RunInfo(name, seed, run / "adapter", frame, seconds, first, False, _peak_rss_gb(), ev)

    if rl.algorithm != "ppo":
        return _train_group(
            name,
            reward,
            policy,
            tok,
            train,
            rl,
            corpus,
            seed,
            device,
            run,
            tb_dir,
            callbacks,
            curves,
            evals,
            evaluate,
            holder,
            finish,
        )

    from datasets import Dataset
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.ppo import PPOTrainer

    prompts = [encode_prompt(tok, h, rl.max_prompt_tokens)[0] for h in train["history"]]
    dataset = Dataset.from_dict({"input_ids": prompts})
    kl_coef = float(state["kl_coef"]) if state else rl.kl_coef
    # Re-seeded per start step: a resumed run draws fresh prompt batches instead of replaying the first ones.
    config = _ppo_config(rl, run, seed + start, rl.steps - start, kl_coef, device)
    value = _value_model(smollm2_path(), tok.pad_token_id, device, rl.train_value_backbone)
    adapter_reward = RewardAdapter(reward, tok)

    def save(step: int, args: Any) -> None:
        trainer = holder["trainer"]
        trainer.policy_model.save_pretrained(run / f"adapter-step{step}")
        if step >= rl.steps:  # done.json follows: nothing left to resume
            return
        tmp = run / ".state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(
            {
                "value": _trainable(value),
                "optimizer": trainer.optimizer.state_dict(),
                "adapter": get_peft_model_state_dict(trainer.policy_model),
                "moments": dataclasses.asdict(reward.moments),
                "rng": _rng_state(),
            },
            tmp / "tensors.pt",
        )
        write_json(
            tmp / "state.json",
            {"key": key, "step": step, "kl_coef": float(args.kl_coef), "curves": curves, "evals": evals},
        )
        old = run / ".state.old"
        shutil.rmtree(old, ignore_errors=True)
        if state_dir.exists():
            os.replace(state_dir, old)
        os.replace(tmp, state_dir)  # the new state is complete before the old one goes
        shutil.rmtree(old, ignore_errors=True)

    trainer = PPOTrainer(
        args=config,
        processing_class=tok,
        model=policy,
        ref_model=None,
        reward_model=adapter_reward,
        train_dataset=dataset,
        value_model=value,
        eval_dataset=dataset.select(range(min(len(dataset), rl.batch_size))),
        peft_config=_lora_config(rl),
    )
    holder["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)  # our curves replace its per-step dict dumps
    trainer.add_callback(_monitor(name, seed, corpus, rl, reward, start, curves, evals, save, evaluate, holder))
    trainer.add_callback(_tensorboard(tb_dir))
    for cb in callbacks:
        trainer.add_callback(cb)
    if state:
        blob = torch.load(state_dir / "tensors.pt", map_location=device, weights_only=False)
        try:
            set_peft_model_state_dict(trainer.policy_model, blob["adapter"])
        except RuntimeError as e:  # shapes of another rank
            raise RLError(f"{state_dir}: the saved adapter does not fit rl.lora_r={rl.lora_r}: {e}") from e
        value.load_state_dict(blob["value"], strict=False)  # only its trainable part was saved
        trainer.optimizer.load_state_dict(blob["optimizer"])
        reward.moments = RunningMoments(**blob["moments"])
        _set_rng_state(blob["rng"])
        print(f"{name} (seed {seed}): resuming from update {start} of {rl.steps}", flush=True)
    trainer.train()
    t_train = sum(c["seconds"] for c in curves if c["step"] > start)  # evaluation time excluded (Monitor)
    return finish(trainer, trainer.policy_model, t_train, start)


def _train_group(
    name: str,
    reward: TextReward,
    policy: Any,
    tok: Any,
    train: pd.DataFrame,
    rl: RLParams,
    corpus: str,
    seed: int,
    device: str,
    run: Path,
    tb_dir: Path,
    callbacks: Sequence[Any],
    curves: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    evaluate: Any,
    holder: dict[str, Any],
    finish: Any,
) -> RunInfo:
    """RLOO or GRPO (``rl.algorithm``) with r_θ as a plain reward callable; TRL's own checkpoints and resume.

    ``rl.batch_size`` counts completions: ``batch_size / group_size`` prompts per
    update, ``group_size`` sampled responses each. The KL weight β starts at
    ``kl_coef`` and follows the same adaptive controller as PPO.
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from geli_lib.models import smollm2_path

    histories = [encode_prompt(tok, h, rl.max_prompt_tokens)[1] for h in train["history"]]
    dataset = Dataset.from_dict({"prompt": [chat_messages(h) for h in histories], "history": histories})
    Config, Trainer = (RLOOConfig, RLOOTrainer) if rl.algorithm == "rloo" else (GRPOConfig, GRPOTrainer)
    last = sorted((run / "trl").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    start = int(last[-1].name.split("-")[1]) if last else 0
    progress = run / "progress.json"
    if last:
        check_adapter(last[-1], rl, smollm2_path())
        if progress.exists():  # curves and evaluations up to the checkpoint
            saved = json.loads(progress.read_text())
            curves += [c for c in saved["curves"] if c["step"] <= start]
            evals += [e for e in saved["evals"] if e["step"] <= start]
    config = Config(
        output_dir=str(run / "trl"),
        seed=seed,
        learning_rate=rl.lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=rl.batch_size,
        gradient_accumulation_steps=1,
        max_steps=rl.steps,
        num_generations=rl.group_size,
        max_completion_length=rl.response_length,
        temperature=rl.temperature,
        beta=float(curves[-1]["kl_coef"]) if curves else rl.kl_coef,
        logging_steps=1,
        save_strategy="steps",
        save_steps=rl.save_every,
        report_to=[],
        disable_tqdm=not progress_enabled(),
        bf16=rl.bf16,
        gradient_checkpointing=rl.gradient_checkpointing,
        use_cpu=device == "cpu",
        log_completions=False,
        **_score_norm_option(rl),
    )
    trainer = Trainer(
        model=policy,
        reward_funcs=reward.reward_func,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=_lora_config(rl),
    )
    holder["trainer"] = trainer

    def save(step: int, args: Any) -> None:
        write_json(progress, {"curves": curves, "evals": evals})

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_monitor(name, seed, corpus, rl, reward, 0, curves, evals, save, evaluate, holder))
    trainer.add_callback(_tensorboard(tb_dir))
    for cb in callbacks:
        trainer.add_callback(cb)
    if last:
        print(f"{name} (seed {seed}): resuming from {last[-1].name}", flush=True)
    trainer.train(resume_from_checkpoint=str(last[-1]) if last else None)
    t_train = sum(c["seconds"] for c in curves if c["step"] > start)
    return finish(trainer, trainer.accelerator.unwrap_model(trainer.model), t_train, start)


# --------------------------------------------------------------------------- generations


@torch.no_grad()
def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    do_sample: bool = False,
    seed: int = 0,
    batch_size: int = 8,
) -> list[str]:
    """Responses of ``model`` to token-id prompts (left-padded batches), decoded without special tokens."""
    model.eval()
    out: list[str] = []
    torch.manual_seed(seed)
    for i in range(0, len(prompts), batch_size):
        batch = tok.pad({"input_ids": [list(p) for p in prompts[i : i + batch_size]]}, return_tensors="pt")
        batch = {k: v.to(model.device) for k, v in batch.items()}
        kw = (
            {"do_sample": True, "top_k": 0, "top_p": 1.0}
            if do_sample
            else {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
        )
        seq = model.generate(
            **batch, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw
        )
        out += [
            strip_role(t) for t in tok.batch_decode(seq[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        ]
    return out


def load_adapted(adapter: str | Path, device: str = "cpu", rl: RLParams | None = None) -> Any:
    """The policy with a saved LoRA adapter (a fresh base underneath), eval mode.

    With ``rl``, an adapter of another base model or LoRA rank is refused (:func:`check_adapter`).
    """
    from peft import PeftModel

    from geli_lib.models import load_policy, smollm2_path

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise RLError(f"{adapter}: no saved adapter (adapter_config.json missing); run the adaptation first")
    if rl is not None:
        check_adapter(adapter, rl, smollm2_path())
    base, _ = load_policy(device)
    return PeftModel.from_pretrained(base, adapter).eval()


@_quiet()
def generations(
    contexts: pd.DataFrame, adapters: dict[str, Path], rl: RLParams, seed: int = 0, device: str = "cpu"
) -> pd.DataFrame:
    """Side-by-side responses (GELI App. H): ``base``, every adapted model, and the ``ground truth``.

    ``contexts``: rows of :func:`dialogue_contexts` (any corpus). One row per
    (context, model) in the :data:`GENERATION_COLUMNS` contract; the history is
    the one shown to the models (left-truncated to ``max_prompt_tokens``).
    """
    from geli_lib.models import load_policy

    base, tok = load_policy(device)
    enc = [encode_prompt(tok, h, rl.max_prompt_tokens) for h in contexts["history"]]
    prompts, shown = [e[0] for e in enc], [e[1] for e in enc]
    models: dict[str, list[str]] = {"ground truth": contexts["response"].astype(str).tolist()}
    models["base"] = generate(base, tok, prompts, rl.gen_tokens, rl.gen_do_sample, seed)
    for name, folder in adapters.items():
        models[name] = generate(load_adapted(folder, device, rl), tok, prompts, rl.gen_tokens, rl.gen_do_sample, seed)
    meta = contexts[["corpus", "context_id", "convo_id", "turn_idx"]].assign(seed=seed, history=shown)
    rows = [meta.assign(model=m, response=r) for m, r in models.items()]
    return pd.concat(rows, ignore_index=True)[list(GENERATION_COLUMNS)]


def write_generations(profile: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Merge ``rows`` into ``results/<profile>/tables/generations.csv`` (same corpus, seed, context, model replaced)."""
    from geli_lib.runs import results_dir

    return merge_rows(
        results_dir(profile, "tables") / "generations.csv",
        rows,
        ["corpus", "seed", "context_id", "model"],
        GENERATION_COLUMNS,
    )


def rl_summary(stats: pd.DataFrame, runs: dict[str, RunInfo], base: str = "base") -> pd.DataFrame:
    """Per adapted model: base vs adapted under its **own** reward on the held-out contexts, KL, slope.

    ``stats``: :func:`geli_lib.generation_eval.cross_reward_stats` of the
    generations (models named by their reward function). Columns: reward
    function, algorithm, updates, base / adapted mean and sd over contexts, the
    gain, its p and the test's name, n contexts, the KL to the reference at the
    last evaluation (mean over the curve's contexts; nats per greedy response),
    the slope of the evaluation curve (r̂ per update) with its 95% bootstrap CI
    over contexts (:func:`curve_slope`), seconds per update.
    """
    rows = []
    for name, info in runs.items():
        own = stats[(stats["model"] == name) & (stats["reward_fn"] == name)]
        ref = stats[(stats["model"] == base) & (stats["reward_fn"] == name)]
        ev = info.evals
        slope, lo, hi = curve_slope(ev) if not ev.empty else (math.nan,) * 3
        last = ev[ev["step"] == ev["step"].max()] if not ev.empty else ev
        o = own.iloc[0] if len(own) else None
        b = ref.iloc[0] if len(ref) else None
        rows.append(
            {
                "reward function": name,
                "algorithm": str(info.curves["algorithm"].iloc[0]) if len(info.curves) else "",
                "updates": int(info.curves["step"].max()) if len(info.curves) else 0,
                "base r̂": b["mean"] if b is not None else math.nan,
                "base sd": b["sd_contexts"] if b is not None else math.nan,
                "adapted r̂": o["mean"] if o is not None else math.nan,
                "adapted sd": o["sd_contexts"] if o is not None else math.nan,
                "gain": o["diff"] if o is not None else math.nan,
                "p": o["p"] if o is not None else math.nan,
                "test": o["test"] if o is not None else "",
                "n contexts": int(o["n"]) if o is not None else 0,
                "KL (nats)": float(last["kl"].mean()) if len(last) else math.nan,
                "slope (r̂/update)": slope,
                "slope 95% CI low": lo,
                "slope 95% CI high": hi,
                "s / update": info.seconds_per_step,
            }
        )
    return pd.DataFrame(rows)


def select_reward_functions(available: dict[str, Path], wanted: str | Sequence[str], rl: RLParams) -> dict[str, Path]:
    """The reward functions a notebook asks for: a name, a list of names, or ``all`` (the profile's ``rl.reward_fns``).

    With ``all``, a function the corpus could not train (VA and GELI need video)
    is skipped with a message; a name asked for explicitly must exist, else
    :class:`RLError` lists what is available.
    """
    names = list(rl.reward_fns) if wanted == "all" else [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [n for n in names if n not in available]
    if wanted == "all" and missing and len(missing) < len(names):
        print(f"skipped (not trained on this corpus): {missing}")
        names = [n for n in names if n in available]
    elif missing:
        raise RLError(
            f"reward function(s) {missing} not saved; available: {sorted(available)} "
            "(run notebooks 02-04 of this profile and corpus first)"
        )
    return {n: available[n] for n in names}


def main(argv: list[str] | None = None) -> int:
    """``python -m geli_lib.rl`` / ``accelerate launch -m geli_lib.rl``: notebook 07's adaptations and generations.

    Every process runs the rollouts of its share of each batch (TRL); only the
    main process writes checkpoints, curves and generations.
    """
    import argparse

    from geli_lib import data, experiments
    from geli_lib.params import load_params

    ap = argparse.ArgumentParser(prog="python -m geli_lib.rl", description=main.__doc__)
    ap.add_argument("--profile", default="gpu", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--reward-fn", nargs="+", default=["all"], help="reward-table row names, or all")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--algorithm", choices=["ppo", "rloo", "grpo"])
    ap.add_argument("--corpus")
    ap.add_argument("--data-path")
    ap.add_argument(
        "--scheduler",
        help="run the adaptations on a Dask cluster first: local, tcp://HOST:PORT or "
        "slurm (compute.scheduler; not with accelerate launch)",
    )
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in {"steps": args.steps, "algorithm": args.algorithm}.items() if v is not None}
    params = load_params(
        args.profile, corpus=args.corpus, data_path=args.data_path, rl=overrides, compute={"scheduler": args.scheduler}
    )
    seed = params.seed if args.seed is None else args.seed
    dialogues = data.load_corpus(params)
    split = data.split_conversations(dialogues.conversations, params.splits)
    train, held_out = rl_contexts(dialogues, split, params.rl, seed)
    wanted = "all" if args.reward_fn == ["all"] else args.reward_fn
    chosen = select_reward_functions(
        experiments.saved_reward_functions(args.profile, params.corpus, seed), wanted, params.rl
    )
    curve = curve_contexts(held_out, params.rl)
    if params.compute.scheduler != "serial" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RLError(
            "compute.scheduler (--scheduler) and accelerate launch exclude each other: "
            "every process would submit the same runs"
        )
    adapt_on_cluster(
        chosen,
        train,
        params.rl,
        args.profile,
        params.compute,
        params.corpus,
        seed,
        params.device,
        curve=curve,
        data=params.data,
    )
    runs = {
        n: train_rl(
            n, f, train, params.rl, args.profile, params.corpus, seed, params.device, curve=curve, data=params.data
        )
        for n, f in chosen.items()
    }
    for n, r in runs.items():
        print(
            f"{n}: {len(r.curves)} updates, {r.seconds_per_step:.1f} s/update, r̂ "
            f"{r.curves['reward_mean'].iloc[0]:.3f} -> {r.curves['reward_mean'].iloc[-1]:.3f}"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        write_generations(
            args.profile, generations(held_out, {n: r.adapter for n, r in runs.items()}, params.rl, seed, params.device)
        )
    return 0


__all__ = [
    "ASSISTANT_HEADER",
    "CURVE_COLUMNS",
    "GENERATION_COLUMNS",
    "RLError",
    "RewardAdapter",
    "RunInfo",
    "RunningMoments",
    "SYSTEM_PROMPT",
    "TextReward",
    "adapt_on_cluster",
    "chat_messages",
    "dialogue_contexts",
    "encode_prompt",
    "finished_run",
    "generate",
    "generations",
    "load_adapted",
    "load_trained_reward",
    "merge_rows",
    "reward_history",
    "rl_contexts",
    "run_dir",
    "sample_contexts",
    "select_reward_functions",
    "EVAL_COLUMNS",
    "check_adapter",
    "check_reward_for_rl",
    "curve_contexts",
    "curve_slope",
    "evaluate_policy",
    "rl_summary",
    "split_prompt_response",
    "strip_role",
    "tensorboard_dir",
    "train_rl",
    "write_generations",
]


if __name__ == "__main__":
    raise SystemExit(main())
