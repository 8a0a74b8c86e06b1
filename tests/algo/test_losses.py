"""Loss terms against hand-computed values, clipping properties, and hand-derived gradients."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlpipe.algo.losses import (
    entropy_from_logits,
    kl_penalty,
    policy_loss,
    sequence_log_ratio,
    sft_loss,
    tis_weights,
    token_log_ratio,
    value_loss,
)
from rlpipe.algo.reduce import LossReduction

EPS, EPS_HIGH = 0.2, 0.28


# --- policy loss ---------------------------------------------------------------------------------------------

# (ratio, advantage) -> (loss, clipped?) with eps 0.2 / 0.28, worked out by hand
CASES = [
    (1.5, 1.0, -1.28, 1.0),  # A > 0, ratio above 1.28: clipped to 1.28
    (0.5, 1.0, -0.5, 0.0),  # A > 0, ratio low: the unclipped (larger) loss wins
    (0.5, -1.0, 0.8, 1.0),  # A < 0, ratio below 0.8: clipped to 0.8
    (1.5, -1.0, 1.5, 0.0),  # A < 0, ratio high: unclipped
    (1.0, 2.0, -2.0, 0.0),  # on-policy
    (5.0, -2.0, 10.0, 0.0),  # A < 0, huge ratio: unbounded without dual clip
]


def test_policy_loss_by_hand():
    ratio = torch.tensor([c[0] for c in CASES])
    adv = torch.tensor([c[1] for c in CASES])
    loss, clipfrac = policy_loss(ratio.log(), adv, eps_clip=EPS, eps_clip_high=EPS_HIGH)
    assert loss.tolist() == pytest.approx([c[2] for c in CASES], abs=1e-6)
    assert clipfrac.tolist() == [c[3] for c in CASES]


def test_dual_clip_bounds_negative_advantages_only():
    ratio = torch.tensor([5.0, 5.0, 1.5])
    adv = torch.tensor([-2.0, 2.0, -1.0])
    loss, _ = policy_loss(ratio.log(), adv, eps_clip=EPS, eps_clip_high=EPS_HIGH, eps_clip_c=3.0)
    # -c A = 6 caps the 10 of the first token; positive A untouched (-1.28 * 2); 1.5 < 3 untouched
    assert loss.tolist() == pytest.approx([6.0, -2.56, 1.5], abs=1e-6)


def test_dual_clip_bound_must_exceed_one():
    with pytest.raises(ValueError, match="> 1"):
        policy_loss(torch.zeros(1), torch.ones(1), eps_clip=EPS, eps_clip_high=EPS_HIGH, eps_clip_c=0.9)


@settings(max_examples=200, deadline=None)
@given(
    log_ratio=st.floats(-3, 3),
    adv=st.floats(-5, 5).filter(lambda a: abs(a) > 1e-3),
    eps=st.floats(0.01, 0.5),
    eps_high=st.floats(0.01, 0.5),
    dual=st.one_of(st.none(), st.floats(1.5, 10)),
)
def test_effective_ratio_stays_in_bounds_where_clipping_is_active(log_ratio, adv, eps, eps_high, dual):
    lr, a = torch.tensor([log_ratio], dtype=torch.float64), torch.tensor([adv], dtype=torch.float64)
    loss, clipfrac = policy_loss(lr, a, eps_clip=eps, eps_clip_high=eps_high, eps_clip_c=dual)
    effective = (-loss / a).item()  # the ratio the loss actually uses
    ratio = math.exp(log_ratio)
    if clipfrac.item():
        assert 1 - eps - 1e-9 <= effective <= 1 + eps_high + 1e-9
    if adv > 0:  # pessimistic bound: never credit more than the clipped ratio
        assert effective <= min(ratio, 1 + eps_high) + 1e-9
    elif dual is None:
        assert effective >= max(ratio, 1 - eps) - 1e-9
    else:
        assert effective <= dual + 1e-9


def test_ppo_gradient_matches_hand_derived_formula():
    ratio = torch.tensor([c[0] for c in CASES], dtype=torch.float64)
    adv = torch.tensor([c[1] for c in CASES], dtype=torch.float64)
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5, -2.5], dtype=torch.float64)
    new = (old + ratio.log()).requires_grad_()
    loss, clipfrac = policy_loss(token_log_ratio(new, old), adv, eps_clip=EPS, eps_clip_high=EPS_HIGH)
    loss.sum().backward()
    # d/dlogp(-r A) = -r A where the unclipped branch is active; the clipped branch is constant
    expected = -ratio * adv * (1 - clipfrac)
    assert torch.allclose(new.grad, expected, atol=1e-12)


def test_gspo_ratio_and_gradient_by_hand():
    old = torch.tensor([-1.0, -2.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    delta = torch.tensor([0.1, 0.3, 0.0, 0.4, 9.0], dtype=torch.float64)  # last token of sample 1 not trained
    masks = [torch.ones(2), torch.tensor([1.0, 1.0, 0.0])]
    new = (old + delta).requires_grad_()
    log_ratio = sequence_log_ratio(new, old, masks)
    # sample 0: mean(0.1, 0.3) = 0.2 on both tokens; sample 1: mean(0, 0.4) = 0.2 on all three
    assert log_ratio.tolist() == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.2])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    loss, clipfrac = policy_loss(log_ratio, adv, eps_clip=EPS, eps_clip_high=EPS_HIGH)
    assert clipfrac.sum().item() == 0  # exp(0.2) = 1.22 lies inside [0.8, 1.28]
    LossReduction(per_token=False, denominator=2)(loss, masks).backward()
    # L = 1/2 sum_i mean_t(-exp(s_i) A_i);  dL/dlogp_t = -exp(s_i) A_i / (2 len_i) on trained tokens
    e = math.exp(0.2)
    assert new.grad.tolist() == pytest.approx([-e / 4, -e / 4, e / 4, e / 4, 0.0], abs=1e-12)


# --- KL ------------------------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    d = math.log(2.0)  # log pi / pi_ref
    logp, ref = torch.tensor([d]), torch.tensor([0.0])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(d * d / 2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + d)
    assert kl_penalty(logp, ref, "low_var_kl").item() == pytest.approx(0.5 - 1 + d)


def test_low_var_kl_is_k3_clamped_at_ten():
    logp, ref = torch.tensor([-20.0]), torch.tensor([0.0])
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(20) - 1 - 20, rel=1e-5)
    assert kl_penalty(logp, ref, "low_var_kl").item() == 10.0


def test_unknown_kl_kind():
    with pytest.raises(ValueError, match="k1, k2, k3, low_var_kl"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


@settings(max_examples=200, deadline=None)
@given(logp=st.floats(-30, 0), ref=st.floats(-30, 0))
def test_k3_is_never_negative(logp, ref):
    k3 = kl_penalty(torch.tensor([logp]), torch.tensor([ref]), "k3").item()
    assert k3 >= 0.0


def test_k3_is_an_unbiased_kl_estimate():
    # E_{x~p}[k3] = KL(p || q) for two small categorical distributions, computed exactly by enumeration
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    k3 = kl_penalty(p.log(), q.log(), "k3")
    assert (p * k3).sum().item() == pytest.approx((p * (p / q).log()).sum().item(), abs=1e-12)


# --- entropy -------------------------------------------------------------------------------------------------


def test_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [0.0, -math.inf], [1000.0, 1000.0]])
    assert entropy_from_logits(logits).tolist() == pytest.approx([math.log(2), 0.0, math.log(2)])


def test_entropy_matches_torch_categorical():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 11) * 5  # [B, L, V]
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy_from_logits(logits), expected, atol=1e-5)


def test_entropy_gradient_is_finite_with_masked_vocab():
    logits = torch.tensor([[2.0, 1.0, -math.inf]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


# --- TIS -----------------------------------------------------------------------------------------------------


def test_tis_weights_by_hand():
    train = torch.zeros(3, requires_grad=True)
    rollout = torch.tensor([math.log(4.0), 0.0, math.log(0.25)])
    tis = tis_weights(train, rollout, [torch.ones(3)], clip=2.0, clip_low=0.5)
    assert tis.ratio.tolist() == pytest.approx([0.25, 1.0, 4.0])
    assert tis.weights.tolist() == pytest.approx([0.5, 1.0, 2.0])
    assert tis.changed.tolist() == [1.0, 0.0, 1.0]
    assert not tis.weights.requires_grad


# --- SFT and value -------------------------------------------------------------------------------------------


def test_sft_loss_is_masked_nll():
    log_probs = torch.tensor([-1.0, -2.0, -4.0, -0.5])
    masks = [torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0])]
    # per sample: mean(3, 0.5) of ((2 + 4) / 2, 0.5) = 1.75; per token: (2 + 4 + 0.5) / 3
    assert sft_loss(log_probs, masks, LossReduction(False, 2)).item() == pytest.approx(1.75)
    assert sft_loss(log_probs, masks, LossReduction(True, 3)).item() == pytest.approx(6.5 / 3)


def test_value_loss_by_hand():
    values = torch.tensor([1.0, 0.6, 0.0])
    old = torch.tensor([0.5, 0.5, 0.5])
    returns = torch.tensor([2.0, 0.0, 0.0])
    loss, clipfrac = value_loss(values, old, returns, value_clip=0.2)
    # V_clip = [0.7, 0.6, 0.3]: max((V-R)^2, (V_clip-R)^2) = [max(1, 1.69), 0.36, max(0, 0.09)]
    assert loss.tolist() == pytest.approx([1.69, 0.36, 0.09])
    assert clipfrac.tolist() == [1.0, 0.0, 1.0]
