"""Reward-decomposition losses (GELI eqs. 2, 4, 6, 9; IRCR; RUDDER) on hand-computed tensors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from geli_lib.reward.losses import (
    ReturnPredictor,
    geli_loss,
    ircr_loss,
    ircr_targets,
    li_loss,
    masked_mean,
    rrd_loss,
    rudder_loss,
    rudder_redistribution,
    sample_rrd_indices,
    session_estimate,
    sum_decomposition_loss,
)

NAN = float("nan")


@pytest.fixture
def batch():
    """Two conversations of 3 and 2 AI turns, padding holds NaN (must never be read)."""
    r_hat = torch.tensor([[1.0, 2.0, 3.0, NAN], [4.0, 5.0, NAN, NAN]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    R = torch.tensor([7.0, 10.0], dtype=torch.float64)
    return r_hat, mask, R


# ------------------------------------------------------------------ eq. 4


def test_sum_decomposition_hand_value_and_padding_ignored(batch):
    r_hat, mask, R = batch
    # (7 - 6)^2 = 1 and (10 - 9)^2 = 1  ->  mean 1
    assert sum_decomposition_loss(r_hat, mask, R).item() == pytest.approx(1.0)
    garbage = r_hat.clone()
    garbage[~mask] = 1e6
    assert sum_decomposition_loss(garbage, mask, R).item() == pytest.approx(1.0)


def test_mean_form_is_length_free(batch):
    r_hat, mask, R = batch
    # fixed-T mean form, T̄ = 4: (4/3)(1+2+3) = 8 and (4/2)(4+5) = 18
    assert session_estimate(r_hat, mask, 4.0).tolist() == pytest.approx([8.0, 18.0])
    assert session_estimate(r_hat, mask).tolist() == pytest.approx([6.0, 9.0])  # sum form
    # (7 - 8)^2 = 1 and (10 - 18)^2 = 64 -> 32.5
    assert sum_decomposition_loss(r_hat, mask, R, T_bar=4.0).item() == pytest.approx(32.5)
    # a turn of the same quality earns the same reward whatever the length: a 3-turn and a 2-turn
    # conversation of reward-2 turns both add up to T̄ · 2 = 8
    same = torch.tensor([[2.0, 2.0, 2.0, NAN], [2.0, 2.0, NAN, NAN]], dtype=torch.float64)
    assert session_estimate(same, mask, 4.0).tolist() == pytest.approx([8.0, 8.0])
    with pytest.raises(ValueError, match="T_bar"):
        session_estimate(r_hat, mask, -1.0)


def test_gradients_flow_and_skip_padding(batch):
    r_hat, mask, R = batch
    r_hat = r_hat.clone().requires_grad_(True)
    sum_decomposition_loss(r_hat, mask, R).backward()
    g = r_hat.grad
    assert torch.isfinite(g).all()
    assert (g[~mask] == 0).all()
    # d/dr_t of mean_b (R_b - S_b)^2 = -(R_b - S_b) for B = 2: -(1) for both rows
    assert torch.allclose(g[mask], torch.full((5,), -1.0, dtype=torch.float64))


def test_bad_shapes_raise(batch):
    r_hat, mask, R = batch
    with pytest.raises(ValueError, match="bool"):
        sum_decomposition_loss(r_hat, mask.long(), R)
    with pytest.raises(ValueError, match="R must be"):
        sum_decomposition_loss(r_hat, mask, R[:1])


def test_masked_mean_empty_raises():
    with pytest.raises(ValueError, match="no entry"):
        masked_mean(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))


# ------------------------------------------------------------------ RRD sampling


def test_sampler_k_below_one_raises():
    for K in (0, -3):
        with pytest.raises(ValueError, match=f"K={K}"):
            sample_rrd_indices(torch.tensor([3, 2]), K)


def test_sampler_without_replacement_is_distinct_and_uniform():
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((4000,), 5)
    idx, valid = sample_rrd_indices(lengths, 3, generator=g)
    assert valid.all()
    assert all(len(set(row)) == 3 for row in idx[:200].tolist())
    freq = torch.bincount(idx.flatten(), minlength=5).double() / len(lengths)
    assert torch.allclose(freq, torch.full((5,), 3 / 5, dtype=torch.float64), atol=0.04)


def test_sampler_k_larger_than_conversation():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([2, 6, 1])
    # default (Ren et al.): with replacement where K > T, so all K entries are valid
    idx, valid = sample_rrd_indices(lengths, 4, generator=g)
    assert idx.shape == valid.shape == (3, 4) and valid.all()
    assert (idx < lengths[:, None]).all() and (idx >= 0).all()
    assert len(set(idx[1].tolist())) == 4  # K <= T: distinct
    # without replacement: a short conversation contributes each of its turns once
    idx, valid = sample_rrd_indices(lengths, 4, "without_replacement", generator=g)
    assert valid.sum(1).tolist() == [2, 4, 1]
    assert sorted(idx[0][valid[0]].tolist()) == [0, 1]
    # with replacement (authors' code): always K valid draws
    idx, valid = sample_rrd_indices(lengths, 4, "with_replacement", generator=g)
    with pytest.raises(ValueError, match="'ren', 'with_replacement', 'without_replacement'"):
        sample_rrd_indices(lengths, 4, "sometimes")  # type: ignore[arg-type]
    assert valid.all() and (idx[2] == 0).all()


# ------------------------------------------------------------------ eq. 9


def test_rrd_equals_sum_loss_when_k_is_t(batch):
    r_hat, mask, R = batch
    full = sum_decomposition_loss(r_hat, mask, R)
    # equal lengths, K = T, no replacement: every sample is the whole conversation
    m3 = torch.tensor([[True, True, True, False]] * 2)
    r3 = torch.tensor([[1.0, 2.0, 3.0, NAN], [4.0, 5.0, 6.0, NAN]], dtype=torch.float64)
    idx, valid = sample_rrd_indices(m3.sum(1), 3, "without_replacement")
    for bc in (False, True):
        assert rrd_loss(r3, m3, R, idx, valid, bias_correction=bc).item() == pytest.approx(
            sum_decomposition_loss(r3, m3, R).item()
        )
    # mixed lengths, K = T_max, without replacement: the short one is taken whole too
    idx, valid = sample_rrd_indices(mask.sum(1), 3, "without_replacement")
    assert rrd_loss(r_hat, mask, R, idx, valid).item() == pytest.approx(full.item())


def test_rrd_hand_value_and_fixed_t_scale(batch):
    r_hat, mask, R = batch
    idx = torch.tensor([[0, 2], [1, 1]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    # row 0: (3/2)(1 + 3) = 6 -> (7-6)^2 = 1 ; row 1: (2/2)(5 + 5) = 10 -> 0
    assert rrd_loss(r_hat, mask, R, idx, valid).item() == pytest.approx(0.5)
    # T_bar = 160 (the authors' fixed T): (160/2)*4 = 320, (160/2)*10 = 800
    expect = ((7 - 320) ** 2 + (10 - 800) ** 2) / 2
    assert rrd_loss(r_hat, mask, R, idx, valid, T_bar=160).item() == pytest.approx(expect)
    with pytest.raises(ValueError, match="T_bar"):
        rrd_loss(r_hat, mask, R, idx, valid, T_bar=0)
    with pytest.raises(ValueError, match="outside"):
        rrd_loss(r_hat, mask, R, torch.tensor([[0, 3], [0, 1]]), valid)


def test_rrd_mask_with_holes_maps_ranks_to_columns():
    r_hat = torch.tensor([[1.0, NAN, 2.0, 3.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True]])
    R = torch.tensor([6.5], dtype=torch.float64)
    idx = torch.tensor([[2, 1]])  # ranks -> columns 3 and 2 -> (3/2)(3 + 2) = 7.5
    loss = rrd_loss(r_hat, mask, R, idx, torch.ones(1, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx(1.0)


def _all_subsets(x: torch.Tensor, K: int, sampling: str):
    """Every index set of size K with equal probability: the exact expectation over ρ_T."""
    T = len(x)
    with_repl = sampling == "with_replacement"
    sets = itertools.product(range(T), repeat=K) if with_repl else itertools.combinations(range(T), K)
    idx = torch.tensor(list(sets))
    r_hat = x.expand(len(idx), T).clone()
    mask = torch.ones_like(r_hat, dtype=torch.bool)
    return r_hat, mask, idx, torch.ones_like(idx, dtype=torch.bool)


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement"])
@pytest.mark.parametrize("T_bar", [None, 10.0])
def test_rrd_bias_correction_exactly_unbiased(sampling, T_bar):
    x = torch.tensor([0.5, -1.0, 2.0, 3.5, 0.0, 1.5], dtype=torch.float64)
    T, K, R0 = len(x), 3, 4.0
    r_hat, mask, idx, valid = _all_subsets(x, K, sampling)
    R = torch.full((len(idx),), R0, dtype=torch.float64)
    c = T if T_bar is None else T_bar
    target = (R0 - c / T * x.sum().item()) ** 2  # (R - E Ŝ)^2: eq. 4 in the sum or the mean form
    assert sum_decomposition_loss(r_hat[:1], mask[:1], R[:1], T_bar).item() == pytest.approx(target)
    corrected = rrd_loss(r_hat, mask, R, idx, valid, T_bar=T_bar, bias_correction=True, sampling=sampling).item()
    plain = rrd_loss(r_hat, mask, R, idx, valid, T_bar=T_bar, sampling=sampling).item()
    var_pop = x.var(unbiased=False).item()
    fpc = 1.0 if sampling == "with_replacement" else (T - K) / (T - 1)
    assert corrected == pytest.approx(target, rel=1e-10, abs=1e-10)
    assert plain == pytest.approx(target + c**2 * var_pop * fpc / K, rel=1e-10)
    assert plain > target


def test_rrd_bias_correction_monte_carlo_through_sampler():
    """Monte-Carlo over many sampled index sets: corrected ≈ eq. 4, plain is biased upward."""
    g = torch.Generator().manual_seed(7)
    base = torch.tensor([[0.5, -1.0, 2.0, 3.5, 0.0, 1.5], [1.0, 4.0, -2.0, 0.5, NAN, NAN]], dtype=torch.float64)
    base_mask = ~torch.isnan(base)
    base_R = torch.tensor([4.0, 1.0], dtype=torch.float64)
    full = sum_decomposition_loss(base, base_mask, base_R).item()
    n_chunks, per_chunk = 40, 500
    r_hat = base.repeat(per_chunk, 1)
    mask = base_mask.repeat(per_chunk, 1)
    R = base_R.repeat(per_chunk)
    for sampling in ("ren", "with_replacement"):
        corrected, plain = [], []
        for _ in range(n_chunks):
            idx, valid = sample_rrd_indices(mask.sum(1), 3, sampling, generator=g)
            corrected.append(rrd_loss(r_hat, mask, R, idx, valid, bias_correction=True, sampling=sampling).item())
            plain.append(rrd_loss(r_hat, mask, R, idx, valid).item())
        c, p = torch.tensor(corrected), torch.tensor(plain)
        se = c.std().item() / math.sqrt(n_chunks)
        assert abs(c.mean().item() - full) < 4 * se + 1e-9, (sampling, c.mean().item(), full, se)
        assert p.mean().item() > full + 10 * se  # the plain RRD loss overestimates eq. 4


def test_rrd_bias_correction_needs_two_samples(batch):
    r_hat, mask, R = batch
    idx, valid = sample_rrd_indices(mask.sum(1), 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="K >= 2"):
        rrd_loss(r_hat, mask, R, idx, valid, bias_correction=True)


def test_rrd_gradients_flow(batch):
    r_hat, mask, R = batch
    r_hat = r_hat.clone().requires_grad_(True)
    idx, valid = sample_rrd_indices(mask.sum(1), 4, generator=torch.Generator().manual_seed(3))
    rrd_loss(r_hat, mask, R, idx, valid, bias_correction=True).backward()
    assert torch.isfinite(r_hat.grad).all() and (r_hat.grad[~mask] == 0).all()
    assert r_hat.grad[mask].abs().sum() > 0


# ------------------------------------------------------------------ IRCR


def test_ircr_targets_are_r_over_t(batch):
    r_hat, mask, _ = batch
    R = torch.tensor([6.0, 10.0], dtype=torch.float64)
    targets = ircr_targets(R, mask.sum(1), t_max=4)
    expect = torch.tensor([[2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(targets, expect)
    assert torch.allclose(targets.sum(1), R)
    # r_hat = [[1,2,3],[4,5]] vs [[2,2,2],[5,5]]: squared errors 1,0,1,1,0 over 5 turns
    assert ircr_loss(r_hat, mask, targets).item() == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="lengths"):
        ircr_targets(R, torch.tensor([3, 0]))
    # mean form: R / T̄ on every valid turn, whatever the length
    mean_form = ircr_targets(R, mask.sum(1), t_max=4, T_bar=5.0)
    assert mean_form[0, :3].tolist() == pytest.approx([1.2] * 3) and mean_form[1, :2].tolist() == [2.0, 2.0]


# ------------------------------------------------------------------ RUDDER


def test_rudder_redistribution_telescopes_hand():
    pred = torch.tensor([[1.0, 3.0, 2.0, NAN], [4.0, NAN, NAN, NAN]])
    mask = ~torch.isnan(pred)
    red = rudder_redistribution(pred, mask)
    assert torch.equal(red, torch.tensor([[1.0, 2.0, -1.0, 0.0], [4.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(red.sum(1), torch.tensor([2.0, 4.0]))


def test_rudder_loss_hand_value():
    pred = torch.tensor([[1.0, 3.0, 2.0, 99.0]])
    mask = torch.tensor([[True, True, True, False]])
    R = torch.tensor([2.0])
    # main: (2 - 2)^2 = 0 ; aux: ((1-2)^2 + (3-2)^2 + 0) / 3 = 2/3
    assert rudder_loss(pred, mask, R, aux_weight=0.5).item() == pytest.approx(1 / 3)
    assert rudder_loss(pred, mask, R, aux_weight=0.0).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="left-aligned"):
        rudder_loss(pred, torch.tensor([[True, False, True, False]]), R, 0.5)


def test_return_predictor_sums_to_final_prediction_and_trains():
    torch.manual_seed(0)
    model = ReturnPredictor(in_dim=5, hidden=8)
    feats = torch.randn(3, 6, 5)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 4, 1])[:, None]
    pred = model(feats)
    assert pred.shape == (3, 6)
    red = rudder_redistribution(pred, mask)
    last = pred.gather(1, (mask.sum(1) - 1)[:, None]).squeeze(1)
    assert torch.allclose(red.sum(1), last, atol=1e-6)
    loss = rudder_loss(pred, mask, torch.tensor([1.0, -1.0, 0.5]), aux_weight=0.5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------ eq. 6 and eq. 2


def test_li_loss_hand_value_nan_labels_masked():
    r_hat = torch.tensor([[0.2, 0.8], [0.5, NAN]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    r_li = torch.tensor([[0.0, 1.0], [NAN, 1.0]])
    loss = li_loss(r_hat, mask, r_li)
    assert loss.item() == pytest.approx((0.2**2 + 0.2**2) / 2)
    loss.backward()
    assert torch.isfinite(r_hat.grad).all()
    assert r_hat.grad[1].abs().sum() == 0  # NaN label and padding get no gradient


def test_li_loss_no_label_raises():
    r_hat = torch.zeros(2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    with pytest.raises(ValueError, match="no valid turn carries an LI label"):
        li_loss(r_hat, mask, torch.full((2, 2), NAN))
    with pytest.raises(ValueError, match="no valid turn carries an LI label"):
        li_loss(r_hat, torch.zeros(2, 2, dtype=torch.bool), torch.ones(2, 2))


def test_geli_reduces_to_each_part(batch):
    r_hat, mask, R = batch
    r_hat = r_hat.clone().requires_grad_(True)
    l_ge = sum_decomposition_loss(r_hat, mask, R)
    l_li = li_loss(r_hat, mask, torch.tensor([[1.0, 0.0, 1.0, NAN], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64))
    assert geli_loss(l_ge, l_li, 1.0).item() == pytest.approx(l_ge.item())
    assert geli_loss(l_ge, l_li, 0.0).item() == pytest.approx(l_li.item())
    mixed = geli_loss(l_ge, l_li, 0.25)
    assert mixed.item() == pytest.approx(0.25 * l_ge.item() + 0.75 * l_li.item())
    mixed.backward()
    assert torch.isfinite(r_hat.grad).all()
    for lam in (-0.1, 1.5, NAN):
        with pytest.raises(ValueError, match="lam"):
            geli_loss(l_ge, l_li, lam)
