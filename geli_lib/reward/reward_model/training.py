"""Training a reward function: targets, one step of every method (GELI eq. 2), the loop, its cache and grid."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence, cast

import torch

from geli_lib.core.compute import grid_results
from geli_lib.core.io import cache_dir, content_key, file_key, progress_bar
from geli_lib.core.params import GE_METHODS, REWARD_METHODS, ComputeParams, RewardParams, to_dict
from geli_lib.reward import losses
from geli_lib.reward.reward_model.encoder import RewardModelError, _embed_tensor, _load_encoder, encoder_id
from geli_lib.reward.reward_model.head import METHOD_FAMILY, RewardHead, TrainedReward
from geli_lib.reward.reward_model.train_data import TrainData

#: The ``TrainData.li`` key of LLM-GELI's per-turn labels (:func:`geli_lib.reward.llm.labels_for_pairs`).
LLM_LABELS = "llm"


# --------------------------------------------------------------------------- training


def resolve_T_bar(train: TrainData, params: RewardParams) -> float | None:
    """T̄ of the mean form (``params.T_bar``, or 0 = the training conversations' mean AI-turn count),
    None for the sum form (``params.ge_form: sum``)."""
    if params.ge_form == "sum":
        return None
    if params.T_bar > 0:
        return float(params.T_bar)
    return round(float(train.lengths.float().mean()), 2)


def turn_unit(lengths: torch.Tensor, T_bar: float | None) -> torch.Tensor:
    """(C, 1): what a conversation's score is divided by to give one turn's even share.

    T̄ in the mean form (the same for every conversation: length-free), the
    conversation's own length T_b in the sum form. So R / unit is the share
    IRCR and the constant baselines give each turn, a planted truth on the
    score scale (R = mean_t truth_t) becomes per-turn targets truth / unit, and
    labels that sum to R over the T_b turns (an LLM's, RUDDER's) become
    labels · T_b / unit.
    """
    T = lengths.to(torch.float32)[:, None]
    return T if T_bar is None else torch.full_like(T, float(T_bar))


def auto_scale(
    train: TrainData, params: RewardParams, method: str, targets: torch.Tensor | None = None, T_bar: float | None = None
) -> float:
    """The head's output scale: ``params.output_scale``, or the automatic rule of the module docstring.

    The share is R / :func:`turn_unit`. Methods that regress the head on
    per-turn targets whose range is known before training (``oracle``: the
    planted rewards; ``rudder``: the redistributed rewards) also keep those
    targets inside the range. An LLM's labels do not stretch it: they are
    clipped into it (:func:`_clip_to_range`).
    """
    if params.output_scale > 0:
        return float(params.output_scale)
    share = (train.R[:, None] / turn_unit(train.lengths, T_bar)).abs()
    top = float(share.max())
    if targets is not None:
        t = targets[train.mask & torch.isfinite(targets)]
        if len(t):
            top = max(top, float(t.abs().max()))
    return params.auto_scale_margin * max(top, 1e-6)


def _li_targets(train: TrainData, signal: str, scale: float, params: RewardParams) -> torch.Tensor:
    """r_LI = Γ · li_positive · scale (NaN where Γ is missing); errors when every label is missing."""
    if signal not in train.li:
        raise RewardModelError(f"no {signal!r} labels in the training data (pass li_labels={{{signal!r}: …}})")
    g = train.li[signal]
    if not torch.isfinite(g[train.mask]).any():
        raise RewardModelError(
            f"every {signal!r} label of the training conversations is NaN (no face window / no timing): "
            f"an LI method cannot train on this corpus"
        )
    return g * (params.li_positive * scale)


def _llm_targets(train: TrainData, T_bar: float | None) -> torch.Tensor:
    """LLM-GELI's r_LI (eq. 5): the LLM's labels (which sum to R over a conversation, Sec. 4.1's
    prompt) in the unit of r̂, labels · T_b / :func:`turn_unit` (NaN = a failed chunk)."""
    if LLM_LABELS not in train.li:
        raise RewardModelError(
            f"no {LLM_LABELS!r} labels in the training data: decompose with geli_lib.reward.llm "
            f"and pass li_labels={{{LLM_LABELS!r}: llm.labels_for_pairs(pairs, labels)}}"
        )
    g = train.li[LLM_LABELS]
    if not torch.isfinite(g[train.mask]).any():
        raise RewardModelError(
            "every LLM label of the training conversations is missing (no annotation or "
            "failed chunks): nothing to distil"
        )
    return g * train.lengths.to(g.dtype)[:, None] / turn_unit(train.lengths, T_bar)


def _clip_to_range(targets: torch.Tensor, mask: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """Targets moved into the head's range [-scale, scale] keeping each conversation's sum, and the
    share of valid labels that lay outside it.

    An LLM's labels only have to add up to the score: a small model often gives one
    turn nearly all of it. The head keeps the range every reward function has (set by
    the session scores, :func:`auto_scale`), so distilled rewards stay on the scale of
    the others (PPO and cross-scoring compare them). Clipping alone would drop the
    excess and break eq. 5's premise that the labels add up to R, so the clipped labels
    of a conversation are shifted by one constant that restores their sum (the sum
    itself is capped at what T turns in range can hold). Failed chunks (NaN) stay NaN.
    """
    ok = mask & torch.isfinite(targets)
    outside = ok & (targets.abs() > scale)
    share = float(outside.sum()) / max(int(ok.sum()), 1)
    x = torch.where(ok, targets, torch.zeros_like(targets)).to(torch.float64)
    n = ok.sum(1).to(x.dtype)
    goal = x.sum(1).clamp(-n * scale, n * scale)
    # Σ_t clip(x_t + c) rises monotonically with c: bisection finds the shift, per conversation
    lo = torch.full_like(goal, -2 * scale) - x.abs().amax(1)
    hi = -lo
    for _ in range(60):
        mid = (lo + hi) / 2
        low = torch.where(ok, (x + mid[:, None]).clamp(-scale, scale), 0.0).sum(1) < goal
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    moved = (x + ((lo + hi) / 2)[:, None]).clamp(-scale, scale).to(targets.dtype)
    return torch.where(ok, moved, targets), share


def _masked_mse(r_hat: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over the turns where ``mask`` holds and ``target`` is finite (eq. 6 form), via losses.li_loss.

    No such turn: ValueError, as :func:`~geli_lib.reward.losses.li_loss` (a caller whose batch may
    legitimately carry no label decides what that means, see :func:`step_loss`)."""
    return losses.li_loss(r_hat, mask & torch.isfinite(target), torch.nan_to_num(target))


#: ``feature_fn(conv (b,), idx (b, K), valid (b, K)) -> (b, T_max, d)``: features of the batch
#: with at least the sampled turns filled in (other positions are never read by the loss).
FeatureFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cached_features(train: TrainData) -> FeatureFn:
    """The batch's features read from the cached tensor (all turns present)."""

    def fn(conv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return train.X[conv]

    return fn


class EncoderFeatures:
    """Features of chosen turns computed by a trainable encoder, with gradients (fine-tuning).

    ``turns(b, sel)`` encodes the history and response texts of the turns where
    ``sel`` (b, T_max) holds, through the encoder on ``device`` (in chunks of
    ``batch_size`` texts, gradients kept), pools them as :func:`_embed` does and
    returns (b, T_max, 2d) features on the CPU in the [history | response]
    layout, zero elsewhere. Calling the object is the RRD :data:`FeatureFn`: only
    the K sampled turns are encoded.
    """

    def __init__(
        self, train: TrainData, tok: Any, model: Any, encoder: str, max_tokens: int, device: str, batch_size: int
    ):
        if not train.texts:
            raise RewardModelError("fine-tuning the encoder needs the pairs' texts (TrainData.texts is empty)")
        self.train, self.tok, self.model = train, tok, model
        self.encoder, self.max_tokens, self.device, self.batch_size = encoder, max_tokens, device, batch_size

    def _encode(self, texts: list[str]) -> torch.Tensor:
        parts = [
            _embed_tensor(
                texts[i : i + self.batch_size], self.tok, self.model, self.encoder, self.max_tokens, self.device
            )
            for i in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(parts).to("cpu")

    def turns(self, b: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        sel = sel & self.train.mask[b]
        bi, ti = sel.nonzero(as_tuple=True)
        rows = self.train.rows[b][bi, ti].tolist()
        hist = [self.train.texts[r][0] for r in rows]
        resp = [self.train.texts[r][1] for r in rows]
        emb = self._encode(hist + resp)
        feats = torch.cat([emb[: len(rows)], emb[len(rows) :]], dim=1)
        out = torch.zeros(len(b), sel.shape[1], feats.shape[1], dtype=feats.dtype)
        return out.index_put((bi, ti), feats)  # out of place: gradients reach the encoder

    def __call__(self, conv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        sel = torch.zeros(len(conv), self.train.mask.shape[1], dtype=torch.bool)
        bi = torch.arange(len(conv)).unsqueeze(1).expand_as(idx)
        sel[bi[valid], idx[valid]] = True  # repeated samples are encoded once
        return self.turns(conv, sel)


def _head_on_turns(head: RewardHead, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """r̂ (b, T_max) of the valid turns only (0 on padding, which no loss reads): about a third of a
    padded batch is padding, and the head's forward and backward are most of a step."""
    return torch.zeros(mask.shape, dtype=X.dtype).masked_scatter(mask, head(X[mask]))


def step_loss(
    r_hat: torch.Tensor | None,
    mask: torch.Tensor,
    lam: float,
    l_ge: Callable[[], torch.Tensor] | None,
    li_target: torch.Tensor | None,
) -> torch.Tensor:
    """The loss of one training step on a batch of conversations: GELI eq. 2, every method a case of it.

    ``r_hat`` (b, T_max): r_θ of the batch's turns; ``l_ge``: computes the batch's L_GE (eq. 9 for RRD,
    eq. 4 for the exact sum, IRCR's or RUDDER's targets), called only when λ > 0; ``li_target``
    (b, T_max): the per-turn proxy reward r_LI (eq. 6; NaN = no label), or the planted truth for the
    oracle and the LLM's labels for LLM-GELI (eq. 5). λ = 1 is a GE method alone, λ = 0 an LI one.
    A batch without any labelled turn contributes an LI term of 0 (the step still runs).
    """
    l_global = l_ge() if l_ge is not None and lam > 0 else None  # sampled first: the RNG order of every run
    l_local = None
    if r_hat is not None and li_target is not None and lam < 1:
        if bool((mask & torch.isfinite(li_target)).any()):
            l_local = _masked_mse(r_hat, mask, li_target)
        else:  # no labelled turn in this batch (no face frames, failed LLM chunks): its LI term is 0
            l_local = r_hat.sum() * 0.0
    if l_local is None:
        if l_global is None:
            raise RewardModelError(
                f"no loss term: λ = {lam}, GE term {'given' if l_ge else 'none'}, "
                f"LI targets {'given' if li_target is not None else 'none'}"
            )
        return l_global
    if l_global is None:
        return l_local
    return losses.geli_loss(l_global, l_local, lam)  # eq. 2: λ·L_GE + (1 − λ)·L_LI


def _ge_loss(
    kind: str,
    head: RewardHead,
    train: TrainData,
    b: torch.Tensor,
    params: RewardParams,
    gen: torch.Generator,
    targets: torch.Tensor | None,
    feature_fn: FeatureFn,
    r_b: torch.Tensor | None = None,
    T_bar: float | None = None,
) -> torch.Tensor:
    """L_GE of one batch of conversations ``b`` for GE method ``kind``, in the form ``T_bar`` says.

    ``r_b``: r̂ of every turn of the batch when the step has it already (one forward pass serves
    GELI's two terms); otherwise RRD scores ``feature_fn``'s sampled turns.
    """
    mask, R = train.mask[b], train.R[b]
    if kind == "rrd":  # eq. 9; idx are ranks among valid turns = columns (left-aligned padding)
        idx, valid = losses.sample_rrd_indices(train.lengths[b], params.K, params.rrd_sampling, gen)
        r_hat = r_b if r_b is not None else head(feature_fn(b, idx, valid))
        return losses.rrd_loss(r_hat, mask, R, idx, valid, T_bar, params.rrd_bias_correction, params.rrd_sampling)
    r_hat = r_b if r_b is not None else _head_on_turns(head, train.X[b], mask)
    if kind == "sum":
        return losses.sum_decomposition_loss(r_hat, mask, R, T_bar)
    if kind == "ircr":
        assert targets is not None
        return losses.ircr_loss(r_hat, mask, targets[b])
    if kind == "rudder":  # regress the head on the redistributed rewards
        assert targets is not None
        return _masked_mse(r_hat, mask, targets[b])
    raise RewardModelError(f"unknown GE method {kind!r}")


def _rudder_targets(
    train: TrainData, params: RewardParams, seed: int, T_bar: float | None
) -> tuple[torch.Tensor, list[float]]:
    """RUDDER: fit the LSTM return predictor, return its redistributed rewards (C, T_max) in the
    unit of r̂ (they sum to the final prediction ≈ R, so · T_b / :func:`turn_unit`) and its losses."""
    torch.manual_seed(seed + 7919)
    gen = torch.Generator().manual_seed(seed + 7919)
    model = losses.ReturnPredictor(train.d, params.rudder_hidden)
    with torch.no_grad():  # start at the mean return: Adam's small steps never walk 0 -> ~70 otherwise
        model.head.bias.fill_(float(train.R.mean()))
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    hist = []
    for _ in range(params.rudder_epochs or params.epochs):
        tot = 0.0
        for b in torch.randperm(len(train), generator=gen).split(params.batch_conversations):
            pred = model(train.X[b])
            loss = losses.rudder_loss(pred, train.mask[b], train.R[b], params.rudder_aux_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        hist.append(tot / len(train))
    model.eval()
    with torch.no_grad():
        red = losses.rudder_redistribution(model(train.X), train.mask)
    red = red * train.lengths.to(red.dtype)[:, None] / turn_unit(train.lengths, T_bar)
    return red.masked_fill(~train.mask, float("nan")), hist


def _constant(method: str, train: TrainData, T_bar: float | None) -> float:
    """Mean: mean_i(R_i / unit_i); Mode: mode_i(R_i) · mean_i(1 / unit_i) (:func:`turn_unit`)."""
    R, unit = train.R.double(), turn_unit(train.lengths, T_bar).double()[:, 0]
    if method == "mean":
        return float((R / unit).mean())
    vals, counts = torch.unique(R, return_counts=True)
    mode = float(vals[torch.argmax(counts)])  # ties: the smallest score
    return mode * float((1.0 / unit).mean())


def split_train_data(train: TrainData, fraction: float, seed: int) -> tuple[TrainData, TrainData]:
    """(fit, validation): a ``fraction`` of the conversations (at least one) held out, drawn by ``seed``."""
    n_val = max(1, round(fraction * len(train)))
    if n_val >= len(train):
        raise RewardModelError(
            f"cannot hold out {fraction:.0%} of {len(train)} training conversations "
            "for validation and keep any to train on"
        )
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 104729))
    return train.subset(perm[n_val:].sort().values), train.subset(perm[:n_val].sort().values)


def train_reward_function(
    method: str,
    train: TrainData,
    params: RewardParams,
    seed: int = 0,
    encoder: str | None = None,
    feature_fn: FeatureFn | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> TrainedReward:
    """Train reward function ``method`` (one of :data:`METHOD_FAMILY`) on cached features.

    Deterministic per ``seed`` (torch.manual_seed for the head's init and
    dropout, a torch.Generator for batch order and RRD samples). Batches are
    ``params.batch_conversations`` whole conversations, padded with a mask.
    ``feature_fn`` replaces the cached-feature lookup of the RRD samples (the
    benchmark passes one that re-encodes, as the authors' code does).

    Per-turn rewards add up to R in the form ``params.ge_form`` says (T̄ from
    :func:`resolve_T_bar`, kept with the result). ``params.select_best`` holds
    out ``val_fraction`` of the conversations and keeps the epoch with the
    lowest validation L_GE; ``params.warm_start`` first trains that method's
    head on the same conversations and continues from it for
    ``finetune_epochs`` (the GELI authors' recipe: VA, then GELI).

    ``params.finetune_encoder`` (every method but ``mean``/``mode``): the text
    encoder is loaded trainable on ``device`` and fine-tuned jointly with the
    head (AdamW groups: encoder ``params.encoder_lr``, head ``params.lr``).
    Each step re-encodes, with gradients, the turns its loss reads: the K
    sampled turns for RRD, every valid turn of the batch for per-turn losses
    (LI, oracle, sum, IRCR, RUDDER, and GELI's LI part, whose features RRD then
    reuses). The head stays on the CPU; the features come back to it. Scale,
    output init and RUDDER's targets still use the cached features. The
    result carries the encoder: score it with :func:`predict_pairs`.
    """
    params.validate()
    if method not in REWARD_METHODS:
        raise RewardModelError(f"method {method!r} unknown: choose one of {REWARD_METHODS}")
    enc_name = encoder or params.encoder
    enc_id = encoder_id(enc_name, params.max_tokens)
    T_bar = resolve_T_bar(train, params)
    if method in ("mean", "mode"):
        return TrainedReward(
            method=method,
            params=params,
            encoder_id=enc_id,
            d=train.d,
            scale=auto_scale(train, params, method, T_bar=T_bar),
            seed=seed,
            constant=_constant(method, train, T_bar),
            T_bar=T_bar,
            info={"n_conversations": len(train)},
        )
    val = None
    if params.select_best:
        train, val = split_train_data(train, params.val_fraction, seed)
    start = None
    if params.warm_start:  # same conversations, same T̄; the start itself is not selected on validation
        pinned = dataclasses.replace(params, warm_start="", select_best=False, T_bar=T_bar or params.T_bar)
        start = train_reward_function(params.warm_start, train, pinned, seed, encoder, feature_fn, progress, device)
    return _train_head(method, train, params, seed, enc_name, enc_id, T_bar, feature_fn, progress, device, start, val)


def _labels_read(method: str, params: RewardParams) -> list[str]:
    """The ``TrainData.li`` labels :func:`train_reward_function` reads for ``method`` (warm start included)."""
    names = {"va": ["va"], "ls": ["ls"], "llm": [LLM_LABELS]}.get(method, [])
    if method == "geli" and params.lam < 1:
        names = [params.li_signal]
    if params.warm_start:
        names = names + _labels_read(params.warm_start, dataclasses.replace(params, warm_start=""))
    return sorted(set(names))


def training_key(method: str, train: TrainData, params: RewardParams, seed: int) -> str:
    """Content key of one head training: method, parameters, seed, the training code, and the bytes of
    exactly the tensors it reads (features, mask, lengths, scores; the planted truth for the oracle;
    the LI labels of :func:`_labels_read`). Re-simulating the listener's face changes the VA labels
    only, so RRD's key, hence its trained head, stays the same."""
    h = hashlib.sha256()
    tensors = [train.X, train.mask, train.lengths, train.R]
    if method == "oracle":
        tensors.append(train.truth)
    tensors += [train.li[k] for k in _labels_read(method, params) if k in train.li]
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    code = file_key([*sorted(Path(__file__).parent.glob("*.py")), Path(losses.__file__)])
    return content_key(method, to_dict(params), seed, list(train.convo_ids), h.hexdigest(), code, torch.__version__)


def trained_folder(method: str, train: TrainData, params: RewardParams, seed: int) -> Path | None:
    """Where :func:`train_cached` keeps this training (``cache_dir("trained")/<training_key>``), or None
    for what is never cached: fine-tuned encoders (hundreds of MB each) and the constant baselines (instant)."""
    if params.finetune_encoder or method in ("mean", "mode"):
        return None
    return cache_dir("trained") / training_key(method, train, params, seed)


def _keep(trained: TrainedReward, folder: Path | None) -> TrainedReward:
    """``trained`` saved to ``folder`` and read back (what a later cache hit returns), or as is without one."""
    return trained if folder is None else TrainedReward.load(trained.save(folder))


def train_cached(
    method: str, train: TrainData, params: RewardParams, seed: int = 0, progress: bool = False, device: str = "cpu"
) -> TrainedReward:
    """:func:`train_reward_function`, read back from :func:`trained_folder` when the same training
    ran before (a sweep point equal to a Table 1 row, RRD in the face-noise sweep).

    A hit returns the saved head, bit for bit what re-training gives.
    """
    folder = trained_folder(method, train, params, seed)
    if folder is not None and (folder / "reward.json").is_file():
        return TrainedReward.load(folder)
    return _keep(train_reward_function(method, train, params, seed, progress=progress, device=device), folder)


def _train_task(train: TrainData, method: str, params: RewardParams, seed: int, device: str) -> TrainedReward:
    """One training of :func:`train_grid`, where the task runs; returned with everything on the CPU
    (the caller's machine may have no GPU)."""
    trained = train_reward_function(method, train, params, seed, device=device)
    if trained.finetuned:
        trained.text_encoder.to("cpu")
    return trained


def train_grid(
    train: TrainData,
    runs: Sequence[tuple[str, RewardParams, int]],
    compute: ComputeParams,
    device: str = "cpu",
    progress: bool = False,
) -> list[TrainedReward]:
    """:func:`train_cached` of each ``(method, params, seed)`` in ``runs``, the misses trained where
    ``compute`` says, in the order of ``runs``.

    Cache hits are read here; only the misses become tasks (:func:`geli_lib.core.compute.grid_results`).
    Their results come back to this process, which writes the cache: a worker on
    another machine has another disk. The serial path is :func:`train_cached` itself.
    """
    if compute.scheduler == "serial":
        return [train_cached(m, train, p, s, progress=progress, device=device) for m, p, s in runs]
    folders = [trained_folder(m, train, p, s) for m, p, s in runs]
    todo = [i for i, f in enumerate(folders) if f is None or not (f / "reward.json").is_file()]
    calls = [(*runs[i], device) for i in todo]
    fresh = {todo[j]: r for j, r in grid_results(_train_task, train, calls, compute, device, progress)}
    # a run not in ``fresh`` was a cache hit, so it has a folder
    return [_keep(fresh[i], f) if i in fresh else TrainedReward.load(cast(Path, f)) for i, f in enumerate(folders)]


@torch.no_grad()
def _val_l_ge(head: RewardHead, X: torch.Tensor, val: TrainData, T_bar: float | None) -> float:
    """L_GE (eq. 4, in the training form) of the head on the validation conversations."""
    head.eval()
    est = losses.session_estimate(head(X), val.mask, T_bar)
    head.train()
    return float(((val.R - est) ** 2).mean())


def _train_head(
    method: str,
    train: TrainData,
    params: RewardParams,
    seed: int,
    enc_name: str,
    enc_id: str,
    T_bar: float | None,
    feature_fn: FeatureFn | None,
    progress: bool,
    device: str,
    start: TrainedReward | None,
    val: TrainData | None,
) -> TrainedReward:
    """The training loop of :func:`train_reward_function` (from scratch, or continuing ``start``)."""
    t0 = time.perf_counter()
    ge = method if method in GE_METHODS else (params.ge_method if method == "geli" else None)
    li = method if method in ("va", "ls") else (params.li_signal if method == "geli" else None)
    lam = params.lam if method == "geli" else (1.0 if ge else 0.0)
    ge_targets = li_targets = None
    info: dict[str, Any] = {"n_conversations": len(train), "ge": ge, "li": li, "lam": lam, "T_bar": T_bar}
    if ge == "ircr":
        ge_targets = losses.ircr_targets(train.R, train.lengths, train.mask.shape[1], T_bar).to(torch.float32)
    elif ge == "rudder":
        ge_targets, info["rudder_loss"] = _rudder_targets(train, params, seed, T_bar)
    oracle = None
    if method == "oracle":  # the planted truth is on the score scale (R = mean_t truth_t)
        if not torch.isfinite(train.truth[train.mask]).any():
            raise RewardModelError(
                "oracle needs the planted per-turn reward (simulated corpus only): every true_reward is NaN"
            )
        oracle = train.truth / turn_unit(train.lengths, T_bar)
    scale = (
        start.scale
        if start is not None
        else auto_scale(train, params, method, ge_targets if method == "rudder" else oracle, T_bar)
    )
    if method == "llm":  # eq. 5 of LLM-GELI is the oracle's per-turn MSE with the LLM's labels as targets
        oracle, info["labels_clipped"] = _clip_to_range(_llm_targets(train, T_bar), train.mask, scale)
    if li is not None and (lam < 1 or method in ("va", "ls")):
        li_targets = _li_targets(train, li, scale, params)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if start is not None:
        assert start.head is not None
        head = copy.deepcopy(start.head)
        info["warm_start"] = {"method": start.method, "loss": start.info.get("loss", [])}
    else:
        head = RewardHead(train.d, params.hidden, params.dropout, scale)
        head.init_output(float((train.R[:, None] / turn_unit(train.lengths, T_bar)).mean()))
    tok = model = enc_feats = val_feats = None
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": params.lr}]
    if params.finetune_encoder:
        if feature_fn is not None:
            raise RewardModelError(
                "feature_fn and finetune_encoder exclude each other: fine-tuning "
                "computes the features itself (pass finetune_encoder=False)"
            )
        tok, model = (
            (start.tokenizer, start.text_encoder)
            if start is not None and start.finetuned
            else _load_encoder(enc_name, device)
        )
        model.train()
        # Every step encodes a batch's turns with gradients: recompute activations in the
        # backward pass instead of holding them (memory, not speed, limits fine-tuning).
        model.activation_checkpointing_enable()
        enc_feats = EncoderFeatures(train, tok, model, enc_name, params.max_tokens, device, params.encode_batch_size)
        if val is not None:
            val_feats = EncoderFeatures(val, tok, model, enc_name, params.max_tokens, device, params.encode_batch_size)
        groups.append({"params": [q for q in model.parameters() if q.requires_grad], "lr": params.encoder_lr})
        info["finetuned"] = True
    opt = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    every_turn = feature_fn is None  # cached features hold every turn: score them all, once per step
    feature_fn = enc_feats or feature_fn or cached_features(train)
    per_turn = (
        oracle is not None or (li_targets is not None and lam < 1) or (ge is not None and ge != "rrd" and lam > 0)
    )

    def val_loss() -> float:
        assert val is not None
        if val_feats is None:
            return _val_l_ge(head, val.X, val, T_bar)
        with torch.no_grad():
            X = val_feats.turns(torch.arange(len(val)), val.mask)
        return _val_l_ge(head, X, val, T_bar)

    def snapshot() -> dict[str, dict[str, torch.Tensor]]:
        out = {"head": {k: v.detach().clone() for k, v in head.state_dict().items()}}
        if model is not None:
            out["encoder"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return out

    epochs = params.finetune_epochs if start is not None else params.epochs
    hist: list[float] = []
    val_hist: list[float] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    if val is not None and start is not None:  # the start itself is a candidate checkpoint
        val_hist.append(val_loss())
        best = (val_hist[-1], 0, snapshot())
    bar = progress_bar(epochs, f"train {method}", progress, unit="epoch")
    head.train()
    for epoch in range(1, epochs + 1):
        tot = 0.0
        for b in torch.randperm(len(train), generator=gen).split(params.batch_conversations):
            r_b = None
            if enc_feats is not None and per_turn:  # every valid turn encoded once; RRD reads its samples
                r_b = _head_on_turns(head, enc_feats.turns(b, train.mask[b]), train.mask[b])
            elif enc_feats is None and (per_turn or every_turn):
                r_b = _head_on_turns(head, train.X[b], train.mask[b])
            target = oracle if oracle is not None else li_targets
            l_ge = (
                (lambda: _ge_loss(ge, head, train, b, params, gen, ge_targets, feature_fn, r_b, T_bar))
                if ge is not None
                else None
            )
            loss = step_loss(r_b, train.mask[b], lam, l_ge, None if target is None else target[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        hist.append(tot / len(train))
        if val is not None:
            val_hist.append(val_loss())
            if best is None or val_hist[-1] < best[0]:
                best = (val_hist[-1], epoch, snapshot())
        bar.update(1)
    bar.close()
    if best is not None:
        head.load_state_dict(best[2]["head"])
        if model is not None:
            model.load_state_dict(best[2]["encoder"])
        info.update(best_epoch=best[1], val_l_ge=val_hist, n_validation=len(val) if val is not None else 0)
    head.eval()
    if model is not None:
        model.eval()
    info.update(loss=hist, seconds=time.perf_counter() - t0)
    return TrainedReward(
        method=method,
        params=params,
        encoder_id=enc_id,
        d=train.d,
        scale=scale,
        seed=seed,
        head=head,
        info=info,
        text_encoder=model,
        tokenizer=tok,
        T_bar=T_bar,
    )


def family(method: str) -> str:
    """The results-contract family of a method (baseline, GE, LI, GELI, oracle)."""
    return METHOD_FAMILY[method]
