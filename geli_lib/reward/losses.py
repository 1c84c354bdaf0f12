"""Reward-decomposition losses: GE (sum, RRD, IRCR, RUDDER), LI, and GELI (GELI §4, App. A).

Small pure torch functions, each named after the maths and citing its equation
(grep "eq. 4", "eq. 6", "eq. 9", "eq. 2"). The only class is RUDDER's return
predictor, an ``nn.Module``.

Shared conventions
------------------
* ``r_hat`` (B, T_max) float: per-turn predictions r_θ(s_t, a_t) of the AI turns,
  padded. ``mask`` (B, T_max) bool: True on valid AI turns. Padded entries are
  never read into a loss, not even as ``0 * value``: they may hold NaN or
  garbage without changing the loss or its gradient (every function selects
  with :func:`torch.where` before doing arithmetic).
* ``R`` (B,) float: the session score R_GE(τ) (e.g. CANDOR overall_affect × 10).
* T_b, a conversation's length, is its number of valid AI turns, ``mask.sum(1)``.
* How per-turn rewards add up to R (``T_bar``): eq. 3 as written is the *sum
  form* R ≈ Σ_t r̂_t (``T_bar=None``), under which a turn's reward scales with
  1/T_b, a length no per-turn model r_θ(s_t, a_t) sees. The GELI authors'
  training script uses the *fixed-T mean form* R ≈ (T̄/T_b) Σ_t r̂_t (T̄ = 160
  there), under which a turn's reward does not depend on the conversation's
  length; T̄ is then only the unit of r̂ (a turn's share of the score in a
  T̄-turn conversation). :func:`session_estimate` is the one place the two forms
  differ.
* RRD indices (:func:`sample_rrd_indices`) are *ranks among the valid turns*
  of a row (0 = its first valid turn). With the usual left-aligned padding
  (valid turns first) a rank is the column itself; :func:`rrd_loss` maps ranks
  to columns, so masks with holes work too. RUDDER is sequential and needs
  left-aligned masks (checked).
* Every loss returns a 0-dim tensor averaged over the batch (conversations
  weigh equally) except the per-turn losses :func:`li_loss` and
  :func:`ircr_loss`, which average over all valid turns of the batch (eq. 6's
  expectation is over (s_t, a_t) pairs).
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor, nn

from geli_lib.core.params import RrdSampling

__all__ = [
    "masked_sum",
    "masked_mean",
    "session_estimate",
    "sum_decomposition_loss",
    "sample_rrd_indices",
    "rrd_loss",
    "ircr_targets",
    "ircr_loss",
    "ReturnPredictor",
    "rudder_loss",
    "rudder_redistribution",
    "li_loss",
    "geli_loss",
]


# --------------------------------------------------------------------------- helpers


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ of ``x`` over the entries where ``mask`` is True (all entries, or along ``dim``).

    Entries outside the mask are replaced by 0 *before* summing, so NaN/inf
    padding neither leaks into the value nor into the gradient.
    """
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True (all entries, or along ``dim``).

    ``dim=None``: the pooled mean; an all-False mask raises ValueError (a mean of
    nothing is a bug upstream, not 0). With ``dim``: one mean per slice; a slice
    with no True entry gives 0 (callers that must not see empty slices check first).
    """
    if dim is None:
        n = mask.sum()
        if int(n) == 0:
            raise ValueError("masked_mean: the mask selects no entry")
        return masked_sum(x, mask) / n.to(x.dtype)
    n = mask.sum(dim).to(x.dtype)
    return masked_sum(x, mask, dim) / n.clamp(min=1)


def _masked_sample_var(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Unbiased sample variance s² = Σ (x - x̄)² / (n - 1) along ``dim`` over the masked entries.

    Slices with n < 2 get 0 (the caller decides whether that is allowed).
    """
    n = mask.sum(dim).to(x.dtype)
    mean = masked_mean(x, mask, dim).unsqueeze(dim)
    ss = masked_sum((x - mean) ** 2, mask, dim)
    return ss / (n - 1).clamp(min=1)


def _check_turns(r_hat: Tensor, mask: Tensor, R: Tensor | None = None) -> None:
    """Shapes and dtypes shared by every loss: r_hat (B, T), mask (B, T) bool, R (B,)."""
    if r_hat.dim() != 2:
        raise ValueError(f"r_hat must be (B, T_max), got shape {tuple(r_hat.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != r_hat.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != r_hat shape {tuple(r_hat.shape)}")
    if R is not None and R.shape != (r_hat.shape[0],):
        raise ValueError(f"R must be (B,) = ({r_hat.shape[0]},), got shape {tuple(R.shape)}")


def _check_left_aligned(mask: Tensor) -> None:
    """RUDDER reads turns in order: valid turns must come first in every row."""
    if mask.shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be left-aligned (valid turns first, padding after) for RUDDER")
    if bool((mask.sum(1) == 0).any()):
        raise ValueError("every conversation needs at least one valid turn for RUDDER")


# --------------------------------------------------------------------------- GE: sum decomposition


def session_estimate(r_hat: Tensor, mask: Tensor, T_bar: float | None = None) -> Tensor:
    """The session score the per-turn rewards add up to, GELI eq. 3, per conversation (B,).

    ``T_bar=None``: the sum form Σ_t r̂_t. A number T̄: the authors' fixed-T mean
    form (T̄/T_b) Σ_t r̂_t = T̄ · mean_t r̂_t, which makes a turn's reward
    independent of the conversation's length (module docstring).
    """
    total = masked_sum(r_hat, mask, dim=1)
    if T_bar is None:
        return total
    if not float(T_bar) > 0:
        raise ValueError(f"T_bar must be a positive number or None (sum form), got T_bar={T_bar!r}")
    return float(T_bar) * total / mask.sum(1).clamp(min=1).to(r_hat.dtype)


def sum_decomposition_loss(r_hat: Tensor, mask: Tensor, R: Tensor, T_bar: float | None = None) -> Tensor:
    """Least-squares decomposition, GELI eq. 4 (eq. 3 is the approximation it fits).

    L_GE(θ) = E_τ[(R_GE(τ) - Ŝ(τ))²], the expectation taken as the mean over the B
    conversations of the batch, with Ŝ = Σ_{t<T} r_θ(s_t, a_t) (``T_bar=None``, eq. 4
    as written) or the fixed-T mean form (T̄/T) Σ_t r_θ (:func:`session_estimate`);
    Σ_t runs over valid turns only.
    """
    _check_turns(r_hat, mask, R)
    return ((R.to(r_hat.dtype) - session_estimate(r_hat, mask, T_bar)) ** 2).mean()


# --------------------------------------------------------------------------- GE: RRD


def _with_replacement(K: Tensor | int, T: Tensor, sampling: RrdSampling) -> Tensor:
    """Per conversation: was (or is) the RRD sample drawn with replacement?

    ``"ren"``: Ren et al.'s rule, without replacement unless K > T.
    ``"with_replacement"``: always (the GELI authors' code).
    ``"without_replacement"``: never (a conversation shorter than K contributes all its T turns once).
    """
    if sampling not in get_args(RrdSampling):
        raise ValueError(f"sampling must be one of {', '.join(map(repr, get_args(RrdSampling)))}, got {sampling!r}")
    if sampling == "ren":
        return torch.as_tensor(K, device=T.device) > T
    return torch.full_like(T, sampling == "with_replacement", dtype=torch.bool)


def sample_rrd_indices(
    lengths: Tensor, K: int, sampling: RrdSampling = "ren", generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw the RRD index subsets I ~ ρ_T(·) of GELI eq. 9 / App. A (Ren et al., 2021).

    Returns ``idx`` (B, K) long and ``valid`` (B, K) bool. ``idx[b, k]`` is a rank
    among conversation b's valid turns, in [0, T_b); entries with ``valid`` False
    are padding (idx 0) and are ignored by :func:`rrd_loss`.

    Sampling convention (each index has the same inclusion probability, so the
    scaled sum in eq. 9 is unbiased for Σ_t r̂_t):

    * ``sampling="ren"`` (default, Ren et al.): K *distinct* indices drawn uniformly
      (GELI App. A: "uniformly sampling K distinct indices") when K <= T_b;
      when a conversation is shorter than K (K > T_b), K indices *with*
      replacement, as in Ren et al.'s code. Every entry is valid.
    * ``"with_replacement"``: K indices with replacement for every conversation, the
      GELI authors' code. Every entry is valid.
    * ``"without_replacement"``: without replacement always; a conversation shorter than
      K contributes each of its T_b turns once (``valid`` has T_b True entries),
      so its RRD estimate is its exact sum.

    ``K < 1`` raises ValueError; so does a conversation with no valid turn
    (``lengths`` < 1), which has nothing to sample; so does an unknown ``sampling``. Pass the same ``sampling`` to
    :func:`rrd_loss` when ``bias_correction=True``.
    """
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ValueError(f"K (the RRD sample size) must be an integer >= 1, got K={K!r}")
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be (B,), got shape {tuple(lengths.shape)}")
    if bool((lengths < 1).any()):
        raise ValueError(f"every conversation needs >= 1 turn to sample RRD indices, lengths={lengths.tolist()}")
    device = lengths.device
    B = lengths.shape[0]
    width = max(int(lengths.max()) if B else 0, K)
    ar_w = torch.arange(width, device=device)
    ar_k = torch.arange(K, device=device)
    # without replacement: a uniform random permutation of [0, T_b) (padding sorted last)
    keys = torch.rand(B, width, generator=generator, device=device)
    keys = keys.masked_fill(ar_w[None, :] >= lengths[:, None], 2.0)
    perm = keys.argsort(dim=1)[:, :K]
    # with replacement: K i.i.d. uniform ranks in [0, T_b)
    u = torch.rand(B, K, generator=generator, device=device)
    iid = (u * lengths[:, None]).long().clamp(max=(lengths[:, None] - 1))
    with_repl = _with_replacement(K, lengths, sampling)
    valid = with_repl[:, None] | (ar_k[None, :] < lengths[:, None])
    idx = torch.where(with_repl[:, None], iid, perm)
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    return idx, valid


def rrd_loss(
    r_hat: Tensor,
    mask: Tensor,
    R: Tensor,
    idx: Tensor,
    valid: Tensor,
    T_bar: float | None = None,
    bias_correction: bool = False,
    sampling: RrdSampling = "ren",
) -> Tensor:
    """Randomized return decomposition, GELI eq. 9 (App. A; Ren et al., 2021).

    Plain loss (``bias_correction=False``), averaged over the batch:

        L_RRD = E_τ E_{I~ρ_T} [(R(τ) - (T/|I|) Σ_{t∈I} r̂_t)²]        (eq. 9)

    with |I| = K_b = ``valid[b].sum()`` and T = each conversation's own length T_b
    (``T_bar=None``, the sum form; Ŝ = (T_b/K_b) Σ_I r̂ is unbiased for Σ_t r̂_t) or
    the fixed T̄ = ``T_bar`` (the GELI authors' code, T̄ = 160; Ŝ is unbiased for the
    mean form (T̄/T_b) Σ_t r̂_t of :func:`session_estimate`).

    Bias (Ren et al., 2021: the Rand-RD loss equals the deterministic RD loss
    plus the variance of the Monte-Carlo estimate of the return, which makes it
    an upper bound of L_RD). Write x_t = r̂_t for t < T_b, S = Σ_t x_t,
    S_x² = Σ_t (x_t - S/T_b)² / (T_b - 1) and Ŝ = c · x̄_I with c = T_b or T̄. Then
    E_I[(R - Ŝ)²] = (R - E Ŝ)² + Var_I(Ŝ), and

        Var_I(Ŝ) = c² · f · S_x² / K,    f = 1 - K/T_b  without replacement (finite-
                                          population correction; f = 0 when K = T_b),
                                     f = (T_b - 1)/T_b  with replacement (i.i.d. draws).

    The sample variance s² = Σ_{k∈I} (x_k - x̄_I)² / (K - 1) has E[s²] = S_x² without
    replacement and E[s²] = (T_b - 1)/T_b · S_x² (the population variance) with it, so

        L_RRD-bc = (R - Ŝ)² - c² · g · s² / K,    g = 1 - K/T_b without, g = 1 with replacement,

    is an unbiased estimator of (R - E Ŝ)²: the exact loss of eq. 4
    (:func:`sum_decomposition_loss` with the same ``T_bar``). This is the "RRD-L_RD" variant of Ren
    et al.'s code (``rrd_bias_correction``, coefficient 1 - K/T, or 1 when
    sampling with replacement), written here on the return scale (their code
    works on the per-step scale R/T, i.e. divided by T²). The corrected loss can
    be negative for one sample; only its expectation is a squared error. Its
    gradient is an unbiased estimate of eq. 4's gradient.

    ``sampling`` must say how ``idx`` was drawn (same meaning as in
    :func:`sample_rrd_indices`); it matters only for the correction. The
    correction needs K_b >= 2 in every conversation whose correction factor g is
    non-zero (ValueError otherwise); g = 0 when K_b = T_b without replacement
    and when T_b = 1 (Ŝ is then exact / has no variance).
    """
    _check_turns(r_hat, mask, R)
    if idx.shape != valid.shape or idx.dim() != 2 or idx.shape[0] != r_hat.shape[0]:
        raise ValueError(
            f"idx and valid must both be (B, K) with B={r_hat.shape[0]}, "
            f"got {tuple(idx.shape)} and {tuple(valid.shape)}"
        )
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
    T = mask.sum(1)
    K_b = valid.sum(1)
    if bool((K_b == 0).any()):
        raise ValueError("every conversation needs at least one valid RRD index (valid.sum(1) >= 1)")
    if bool(((idx < 0) | (idx >= T[:, None]))[valid].any()):
        raise ValueError("idx holds a rank outside [0, T_b) for some conversation (T_b = mask.sum(1))")
    # rank among valid turns -> column: stable sort puts valid columns first, in order
    cols = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    picked_cols = cols.gather(1, idx.clamp(min=0, max=r_hat.shape[1] - 1))
    x = torch.where(valid, r_hat.gather(1, picked_cols), torch.zeros((), dtype=r_hat.dtype, device=r_hat.device))
    dtype = r_hat.dtype
    if T_bar is None:
        c = T.to(dtype)
    else:
        if not float(T_bar) > 0:
            raise ValueError(f"T_bar must be a positive number or None (sum form), got T_bar={T_bar!r}")
        c = torch.full_like(T, 0, dtype=dtype) + float(T_bar)
    n = K_b.to(dtype)
    estimate = c * masked_sum(x, valid, dim=1) / n
    loss = (R.to(dtype) - estimate) ** 2
    if bias_correction:
        with_repl = _with_replacement(K_b, T, sampling)
        g = torch.where(with_repl, torch.ones_like(n), 1.0 - n / T.to(dtype))
        g = g.clamp(min=0.0)  # without replacement, K > T_b: all turns taken once, exact sum
        g = torch.where(T == 1, torch.zeros_like(g), g)  # one turn: every draw is the same turn
        if bool(((K_b < 2) & (g > 0)).any()):
            raise ValueError(
                "bias_correction needs at least 2 sampled turns (K >= 2) in every "
                "conversation that is not fully enumerated"
            )
        s2 = _masked_sample_var(x, valid, dim=1)
        loss = loss - c**2 * g * s2 / n
    return loss.mean()


# --------------------------------------------------------------------------- GE: IRCR


def ircr_targets(R: Tensor, lengths: Tensor, t_max: int | None = None, T_bar: float | None = None) -> Tensor:
    """IRCR uniform redistribution (Gangwani et al., 2020; GELI §5 baselines): R spread evenly.

    Each of the T_b turns of conversation b gets the proxy reward R_b / T_b
    (``T_bar=None``: Σ_t target = R_b, the sum form of eq. 3) or R_b / T̄ (the
    fixed-T mean form: (T̄/T_b) Σ_t target = R_b, see :func:`session_estimate`);
    padding positions (t >= T_b) get 0.
    Gangwani et al. further min-max normalise returns over their replay buffer;
    that rescaling is not applied here (it would change the scale that L_GE
    and ΔR_LI are reported on). Returns (B, t_max), t_max defaulting to max T_b.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=R.device)
    if R.dim() != 1 or lengths.shape != R.shape:
        raise ValueError(f"R and lengths must both be (B,), got {tuple(R.shape)} and {tuple(lengths.shape)}")
    if bool((lengths < 1).any()):
        raise ValueError(f"every conversation needs >= 1 turn for IRCR targets, lengths={lengths.tolist()}")
    width = int(lengths.max()) if t_max is None else int(t_max)
    if width < int(lengths.max()):
        raise ValueError(f"t_max={t_max} is shorter than the longest conversation ({int(lengths.max())})")
    dtype = R.dtype if R.is_floating_point() else torch.get_default_dtype()
    per_turn = R.to(dtype) / (lengths.to(dtype) if T_bar is None else float(T_bar))
    inside = torch.arange(width, device=R.device)[None, :] < lengths[:, None]
    return torch.where(inside, per_turn[:, None], torch.zeros((), dtype=dtype, device=R.device))


def ircr_loss(r_hat: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
    """IRCR regression: MSE between r̂_t and the :func:`ircr_targets` over all valid turns of the batch."""
    _check_turns(r_hat, mask)
    if targets.shape != r_hat.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != r_hat shape {tuple(r_hat.shape)}")
    zero = torch.zeros((), dtype=r_hat.dtype, device=r_hat.device)
    diff = torch.where(mask, targets.to(r_hat.dtype), zero) - torch.where(mask, r_hat, zero)
    return masked_mean(diff**2, mask)


# --------------------------------------------------------------------------- GE: RUDDER


class ReturnPredictor(nn.Module):
    """RUDDER's return predictor (Arjona-Medina et al., 2019): an LSTM over per-turn features.

    ``forward(features (B, T, D)) -> (B, T)``: at every turn t, the predicted final
    return g(s_0..t, a_0..t) from the turns so far. The LSTM is causal, so with
    left-aligned padding the predictions at valid turns never see the padding.
    """

    def __init__(self, in_dim: int, hidden: int = 64, num_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, features: Tensor) -> Tensor:
        out, _ = self.lstm(features)
        return self.head(out).squeeze(-1)


def _last_valid(pred: Tensor, mask: Tensor) -> Tensor:
    """pred at each row's last valid turn (mask left-aligned, checked by the caller)."""
    last = (mask.sum(1) - 1).clamp(min=0)
    return pred.gather(1, last[:, None]).squeeze(1)


def rudder_loss(pred: Tensor, mask: Tensor, R: Tensor, aux_weight: float) -> Tensor:
    """RUDDER return-prediction loss (Arjona-Medina et al., 2019).

    main = mean_b (g_{T_b-1} - R_b)²: the prediction after the last valid turn vs
    the session score. auxiliary = mean over all valid turns of (g_t - R_b)²: the
    "continuous return prediction" auxiliary task of RUDDER (every step predicts
    the final return). Returns main + aux_weight · auxiliary. Needs
    left-aligned masks.
    """
    _check_turns(pred, mask, R)
    _check_left_aligned(mask)
    if aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got aux_weight={aux_weight}")
    R = R.to(pred.dtype)
    main = ((_last_valid(pred, mask) - R) ** 2).mean()
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    aux = masked_mean((torch.where(mask, pred, zero) - R[:, None]) ** 2, mask)
    return main + aux_weight * aux


def rudder_redistribution(pred: Tensor, mask: Tensor) -> Tensor:
    """RUDDER reward redistribution: r_t = g_t - g_{t-1}, r_0 = g_0 (Arjona-Medina et al., 2019).

    Differences of consecutive return predictions over the valid turns; padding
    gets 0. The redistributed rewards telescope: Σ_t r_t = g_{T_b-1}, the final
    prediction. Not detached (detach if used as fixed targets). Needs
    left-aligned masks.
    """
    _check_turns(pred, mask)
    _check_left_aligned(mask)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    g = torch.where(mask, pred, zero)
    prev = torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], dim=1)
    return torch.where(mask, g - prev, zero)


# --------------------------------------------------------------------------- LI and GELI


def li_loss(r_hat: Tensor, mask: Tensor, r_li: Tensor) -> Tensor:
    """Local implicit cross-modal distillation, GELI eq. 6: E_{s_t,a_t}[(r_LI - r_θ(s_t, a_t))²].

    The expectation is the mean over all valid turns of the batch that carry a
    label: turns whose ``r_li`` is NaN (no label, e.g. no face frames) are masked
    out as padding is. If no turn is left (all labels NaN or every turn
    masked), ValueError: the LI loss is undefined there, and silently returning
    0 would hide a broken labelling step. ``r_li`` holds Γ of eq. 7 (0/1) or
    any real-valued proxy reward on the scale of r̂.
    """
    _check_turns(r_hat, mask)
    if r_li.shape != r_hat.shape:
        raise ValueError(f"r_li shape {tuple(r_li.shape)} != r_hat shape {tuple(r_hat.shape)}")
    r_li = r_li.to(r_hat.dtype)
    use = mask & ~torch.isnan(r_li)
    if not bool(use.any()):
        raise ValueError("li_loss: no valid turn carries an LI label (all labels NaN or every turn masked)")
    zero = torch.zeros((), dtype=r_hat.dtype, device=r_hat.device)
    diff = torch.where(use, r_li, zero) - torch.where(use, r_hat, zero)
    return masked_mean(diff**2, use)


def geli_loss(l_ge: Tensor, l_li: Tensor, lam: float) -> Tensor:
    """The GELI objective, GELI eq. 2: L_GELI = λ · L_GE + (1 - λ) · L_LI, with λ = ``lam`` in [0, 1].

    λ = 1 is pure global-explicit decomposition, λ = 0 pure local-implicit
    shaping. ``lam`` outside [0, 1] (or NaN) raises ValueError.
    """
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam (GELI's λ) must lie in [0, 1], got lam={lam}")
    return lam * l_ge + (1.0 - lam) * l_li
