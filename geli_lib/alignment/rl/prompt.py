"""The RL contexts and the chat prompt of the policy."""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from geli_lib.core.params import RLParams

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


class RLError(RuntimeError):
    """RL adaptation cannot go on: bad reward function, NaN reward, bad contexts; the message says where."""


# --------------------------------------------------------------------------- contexts and prompt


def _clean(text: str) -> str:
    """One line per utterance: newlines and runs of spaces become one space."""
    return " ".join(str(text).split())


#: Columns of :func:`dialogue_contexts`.
CONTEXT_COLUMNS = ("corpus", "convo_id", "turn_idx", "context_id", "history", "reward_history", "response")


def dialogue_contexts(corpus: Any, convo_ids: Sequence[str] | None = None, history_turns: int = 10) -> pd.DataFrame:
    """One row per AI turn with at least one turn before it: the policy's context and the real reply.

    Columns: ``corpus, convo_id, turn_idx, context_id`` (``"<convo_id>:<turn_idx>"``),
    ``history`` (the last ``history_turns`` turns, one per line, ``User: …`` /
    ``AI: …``: what the policy is shown), ``reward_history`` (every earlier turn
    in the same format: the dialogue state s_t that r_θ scores the response in,
    cut like its training pairs by :func:`~geli_lib.alignment.generation_eval.reward_history`)
    and ``response`` (the corpus' real AI utterance: the ground truth).
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
                        "reward_history": "\n".join(lines[:i]),
                        "response": _clean(utt),
                    }
                )
    return pd.DataFrame(rows, columns=list(CONTEXT_COLUMNS))


def rl_contexts(
    corpus: Any, split: pd.Series, rl: RLParams, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, held_out, curve) contexts of the ``rl`` split: ``eval_conversations`` conversations are held out.

    The held-out side keeps ``eval_contexts`` contexts (seeded choice): the paired test of adapted vs base runs
    on them. ``curve``: ``curve_contexts`` other contexts of the same held-out conversations, the fixed contexts
    the evaluation curve scores during training; disjoint from ``held_out``, because the curve also chooses the
    update a run keeps (:func:`geli_lib.alignment.rl.curve.kept_step`), so the test's contexts never chose it.
    The train side keeps ``train_contexts`` (0 = all). Raises :class:`RLError` when the split has too few
    conversations, or the held-out conversations too few contexts for both.
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
    held_contexts = dialogue_contexts(corpus, sorted(held), rl.history_turns)
    if rl.train_contexts and len(train) > rl.train_contexts:
        train = train.sample(rl.train_contexts, random_state=seed).sort_index()
    test = sample_contexts(held_contexts, rl.eval_contexts, seed)
    rest = held_contexts[~held_contexts["context_id"].isin(test["context_id"])]
    if rl.curve_contexts and rest.empty:
        raise RLError(
            f"the {rl.eval_conversations} held-out conversations have {len(held_contexts)} contexts, all taken by "
            f"eval_contexts ({rl.eval_contexts}); the curve needs curve_contexts ({rl.curve_contexts}) others "
            "(raise eval_conversations or lower eval_contexts)"
        )
    return train.reset_index(drop=True), test, sample_contexts(rest, rl.curve_contexts, seed)


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


def scoring_histories(contexts: pd.DataFrame) -> pd.Series:
    """The dialogue state r_θ scores each context's response in: ``reward_history``
    (``history`` for a frame without it).

    The policy sees the last ``rl.history_turns`` turns, cut to ``max_prompt_tokens``
    (a cost of generation); r_θ was trained on (s_t, a_t) with s_t the dialogue so far
    (``data.history_turns`` turns), and scores every response in that s_t. With only the
    shown turns, its turn-level Spearman with the planted truth over 600 real AI turns of the
    cpu profile's rl split halves (GELI 0.19 -> 0.09, GE: RRD 0.19 -> 0.09; README, "One reward").
    """
    return contexts["reward_history"] if "reward_history" in contexts else contexts["history"]


def reward_histories(tok: Any, contexts: pd.DataFrame, max_prompt_tokens: int) -> dict[str, str]:
    """Prompt history shown to the policy (:func:`encode_prompt`) -> the context's dialogue state
    (:func:`scoring_histories`), for PPO, whose reward model sees only the policy's token ids.

    Contexts whose shown prompts are identical (a short reply after the same two turns:
    18 of 2,986 cpu training contexts) share the state of the last of them.
    """
    states = scoring_histories(contexts)
    return {encode_prompt(tok, h, max_prompt_tokens)[1]: str(s) for h, s in zip(contexts["history"], states)}


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
