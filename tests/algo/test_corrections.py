"""Off-policy corrections between engine and trainer (TIS / IcePop / MIS, CISPO) and the numerical guards.

Each correction is checked against hand-computed values and against a reference written independently below as
plain Python loops over floats (`math`, no torch), on identical inputs.
"""

import dataclasses
import math

import pytest
import torch

from rlpipe.algo.losses import MAX_LOG_RATIO, cispo_loss, kl_penalty, policy_loss, tis_weights
from rlpipe.algo.mismatch import mismatch_metrics
from rlpipe.algo.reduce import LossReduction, per_sample_mean, per_token_mean
from rlpipe.algo.rl_loss import compute_policy_loss
from tests.algo.test_rl_loss import BASE


def reference_weights(train, rollout, masks, level, mode, low, high):
    """Per-token correction weights, sample by sample, from the definitions (verl / slime / TRL)."""
    out = []
    for tr, ro, m in zip(train, rollout, masks, strict=True):
        d = [a - b for a, b in zip(tr, ro, strict=True)]
        kept = [x for x, keep in zip(d, m, strict=True) if keep]
        if level == "token":
            ratios = [math.exp(x) for x in d]
        else:
            total = sum(kept) if level == "sequence" else sum(kept) / max(len(kept), 1)
            ratios = [math.exp(total)] * len(d)
        if mode == "truncate":
            out += [min(max(r, low), high) for r in ratios]
        else:
            out += [r if low <= r <= high else 0.0 for r in ratios]
    return out


def batch(seed=0, lengths=(3, 5, 1, 4)):
    g = torch.Generator().manual_seed(seed)
    train = [torch.randn(n, generator=g, dtype=torch.float64) * 0.5 - 1.0 for n in lengths]
    rollout = [t + torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.6 for t in train]
    masks = [torch.ones(n) for n in lengths]
    masks[1][0] = 0.0  # a prompt-side (tool) token inside a response: never counted
    return train, rollout, masks


@pytest.mark.parametrize("level", ["token", "sequence", "geometric"])
@pytest.mark.parametrize("mode", ["truncate", "mask"])
def test_correction_weights_match_the_reference(level, mode):
    train, rollout, masks = batch()
    low, high = 0.5, 2.0
    got = tis_weights(torch.cat(train), torch.cat(rollout), masks, clip=high, clip_low=low, level=level, mode=mode)
    want = reference_weights(
        [t.tolist() for t in train], [r.tolist() for r in rollout], [m.tolist() for m in masks], level, mode, low, high
    )
    assert got.weights.tolist() == pytest.approx(want, rel=1e-12)
    if mode == "mask":  # something on each side of the bounds was masked, so the test can tell modes apart
        assert 0 < got.changed.sum() < got.changed.numel()


def test_icepop_masks_tokens_outside_the_band_by_hand():
    rollout = torch.tensor([math.log(4.0), 0.0, math.log(0.25), math.log(1.5)])
    tis = tis_weights(torch.zeros(4), rollout, [torch.ones(4)], clip=2.0, clip_low=0.5, mode="mask")
    # ratios 0.25, 1, 4, 1/1.5: the first and third leave [0.5, 2]
    assert tis.weights.tolist() == pytest.approx([0.0, 1.0, 0.0, 1 / 1.5])
    assert tis.changed.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_sequence_mis_drops_whole_samples_by_hand():
    # sample 0: log ratios 0.5 + 0.5 = 1 -> r = e > 2: dropped; sample 1: 0.1 - 0.3 -> r = e^-0.2 kept
    train = torch.tensor([0.5, 0.5, 0.1, -0.3])
    masks = [torch.ones(2), torch.ones(2)]
    tis = tis_weights(train, torch.zeros(4), masks, clip=2.0, clip_low=0.5, level="sequence", mode="mask")
    assert tis.weights.tolist() == pytest.approx([0.0, 0.0, math.exp(-0.2), math.exp(-0.2)])
    geo = tis_weights(train, torch.zeros(4), masks, clip=2.0, clip_low=0.5, level="geometric")
    assert geo.weights.tolist() == pytest.approx([math.exp(0.5)] * 2 + [math.exp(-0.1)] * 2)


def test_cispo_loss_and_gradient_by_hand():
    # ratios e^0.5 ~ 1.65 (clipped to 1.28) and 1; advantages +2 and -1
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    old = torch.tensor([-1.5, -2.0])
    adv = torch.tensor([2.0, -1.0])
    loss, clipped = cispo_loss(log_probs, log_probs - old, adv, eps_clip=0.2, eps_clip_high=0.28)
    assert loss.tolist() == pytest.approx([-1.28 * 2 * -1.0, -1.0 * -1.0 * -2.0])
    assert clipped.tolist() == [1.0, 0.0]
    loss.sum().backward()
    # d/dlogp of -sg(w) A logp = -w A: the clipped token keeps its gradient (PPO's would be 0 there)
    assert log_probs.grad.tolist() == pytest.approx([-1.28 * 2, 1.0])
    ppo_lp = log_probs.detach().clone().requires_grad_()
    ppo, _ = policy_loss(ppo_lp - old, adv, eps_clip=0.2, eps_clip_high=0.28)
    ppo.sum().backward()
    assert ppo_lp.grad.tolist() == pytest.approx([0.0, 1.0])  # same gradient where nothing clips


def test_cispo_in_the_assembled_loss_with_tis():
    train, rollout, masks = batch(seed=3)
    log_probs = [(t + 0.1).requires_grad_() for t in train]
    adv = [torch.full_like(t, a) for t, a in zip(train, (1.0, -0.5, 2.0, -1.0), strict=True)]
    s = dataclasses.replace(BASE, policy_loss="cispo", use_tis=True, tis_mode="mask", tis_clip_low=0.5)
    loss, _ = compute_policy_loss(
        log_probs=log_probs,
        old_log_probs=train,
        advantages=adv,
        loss_masks=masks,
        settings=s,
        global_denominator=len(masks),
        rollout_log_probs=rollout,
    )
    w = reference_weights(
        [t.tolist() for t in train], [r.tolist() for r in rollout], [m.tolist() for m in masks], "token", "mask", 0.5, 2
    )
    k = 0
    want = 0.0
    for lp, a, m in zip(log_probs, adv, masks, strict=True):
        per_sample = 0.0
        for j in range(lp.numel()):
            r = min(max(math.exp(0.1), 0.8), 1.28)
            per_sample += m[j].item() * (-r * a[j].item() * lp[j].item() * w[k])
            k += 1
        want += per_sample / m.sum().item()
    assert loss.item() == pytest.approx(want / len(masks), rel=1e-12)


# --- numerical guards ----------------------------------------------------------------------------------------


def test_extreme_log_ratios_give_finite_losses_and_gradients():
    log_probs = torch.tensor([0.0, -200.0, 0.0], requires_grad=True)
    old = torch.tensor([-200.0, 0.0, 0.0])  # log ratios +200, -200, 0: exp(200) overflows float32
    adv = torch.tensor([1.0, -1.0, 1.0])
    loss, _ = policy_loss(log_probs - old, adv, eps_clip=0.2, eps_clip_high=0.2, eps_clip_c=3.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(log_probs.grad).all()
    for kind in ("k3", "low_var_kl"):
        lp = log_probs.detach().clone().requires_grad_()
        kl = kl_penalty(lp, old, kind)
        kl.sum().backward()
        assert torch.isfinite(kl).all() and torch.isfinite(lp.grad).all()
    tis = tis_weights(torch.tensor([100.0]), torch.tensor([0.0]), [torch.ones(1)], clip=2.0, clip_low=0.0)
    assert tis.ratio.item() == pytest.approx(math.exp(MAX_LOG_RATIO))


def test_a_nan_on_an_untrained_token_does_not_reach_the_loss():
    x = torch.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    masks = [torch.tensor([1.0, 0.0, 1.0])]
    for value in (per_sample_mean(x, masks, 1), per_token_mean(x, masks, 2)):
        assert value.item() == pytest.approx(2.0)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(grad).all()


def test_mismatch_metrics_by_hand():
    train = torch.tensor([-1.0, -2.0, -0.5])
    rollout = torch.tensor([-1.5, -2.0, 7.0])  # the third token is outside the loss mask
    masks = [torch.tensor([1.0, 1.0, 0.0])]
    m = mismatch_metrics(train, rollout, masks, LossReduction(per_token=True, denominator=2))
    assert m["mismatch_logprob_abs_diff"].item() == pytest.approx(0.25)
    assert m["mismatch_logprob_abs_diff_max"].item() == pytest.approx(0.5)
    # KL(engine || trainer) from engine samples, k3: r - 1 - log r with r = exp(0.5), then 0
    assert m["mismatch_kl"].item() == pytest.approx((math.exp(0.5) - 1 - 0.5) / 2)
    assert (m["mismatch_ratio_min"].item(), m["mismatch_ratio_max"].item()) == pytest.approx((1.0, math.exp(0.5)))
