"""The assembled RL loss: explicit-loop reference, micro-batch invariance of value and gradient, flags."""

import dataclasses
import math

import pytest
import torch

from rlpipe.algo.reduce import global_denominator
from rlpipe.algo.rl_loss import AlgoSettings, compute_policy_loss

BASE = AlgoSettings(
    advantage_estimator="grpo",
    policy_loss="ppo",
    eps_clip=0.2,
    eps_clip_high=0.28,
    eps_clip_c=None,
    use_kl_loss=False,
    kl_loss_coef=0.0,
    kl_loss_type="low_var_kl",
    entropy_coef=0.0,
    use_tis=False,
    tis_clip=2.0,
    tis_clip_low=0.0,
    tis_level="token",
    tis_mode="truncate",
    calculate_per_token_loss=False,
)


def make_batch(seed=0, lengths=(3, 5, 1, 4, 2, 6)):
    """Per-sample float64 inputs; log_probs and entropies are leaves with grad."""
    g = torch.Generator().manual_seed(seed)

    def per_sample(scale=1.0, shift=0.0):
        return [torch.randn(n, generator=g, dtype=torch.float64) * scale + shift for n in lengths]

    old = per_sample(0.5, -1.5)
    return dict(
        log_probs=[(o + torch.randn(o.shape, generator=g, dtype=torch.float64) * 0.3).requires_grad_() for o in old],
        old_log_probs=old,
        ref_log_probs=[o + torch.randn(o.shape, generator=g, dtype=torch.float64) * 0.2 for o in old],
        rollout_log_probs=[o + torch.randn(o.shape, generator=g, dtype=torch.float64) * 0.4 for o in old],
        advantages=per_sample(),
        entropies=[e.abs().requires_grad_() for e in per_sample()],
        loss_masks=[(torch.rand(n, generator=g) > 0.25).double() for n in lengths],
    )


def reference_loss(batch, s: AlgoSettings) -> float:
    """The objective written out token by token, independent of rlpipe's helpers."""
    n = len(batch["loss_masks"])
    total_tokens = sum(float(m.sum()) for m in batch["loss_masks"])
    loss = 0.0
    for i in range(n):
        new, old = batch["log_probs"][i].detach().tolist(), batch["old_log_probs"][i].tolist()
        mask = batch["loss_masks"][i].tolist()
        trained = [t for t in range(len(mask)) if mask[t]]
        seq_lr = sum(new[t] - old[t] for t in trained) / max(len(trained), 1)
        sample = 0.0
        for t in trained:
            lr = seq_lr if s.advantage_estimator == "gspo" else new[t] - old[t]
            r, a = math.exp(lr), float(batch["advantages"][i][t])
            term = max(-r * a, -min(max(r, 1 - s.eps_clip), 1 + s.eps_clip_high) * a)
            if s.eps_clip_c is not None and a < 0:
                term = min(term, -s.eps_clip_c * a)
            if s.use_tis:
                w = math.exp(old[t] - float(batch["rollout_log_probs"][i][t]))
                term *= min(max(w, s.tis_clip_low), s.tis_clip)
            term -= s.entropy_coef * float(batch["entropies"][i][t].detach())
            if s.use_kl_loss:
                d = new[t] - float(batch["ref_log_probs"][i][t])
                term += s.kl_loss_coef * min(math.exp(-d) - 1 + d, 10.0)
            sample += term
        loss += sample / total_tokens if s.calculate_per_token_loss else sample / max(len(trained), 1) / n
    return loss


def run(batch, s: AlgoSettings, idx=None, denominator=None):
    idx = range(len(batch["loss_masks"])) if idx is None else idx
    part = {k: [v[i] for i in idx] for k, v in batch.items()}
    if denominator is None:
        denominator = global_denominator(batch["loss_masks"], s.calculate_per_token_loss)
    return compute_policy_loss(**part, settings=s, global_denominator=denominator)


ALL_ON = dataclasses.replace(BASE, eps_clip_c=3.0, use_kl_loss=True, kl_loss_coef=0.1, entropy_coef=0.01, use_tis=True)


@pytest.mark.parametrize("estimator", ["grpo", "gspo"])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("settings", [BASE, ALL_ON], ids=["plain", "all_terms"])
def test_matches_token_by_token_reference(estimator, per_token, settings):
    s = dataclasses.replace(settings, advantage_estimator=estimator, calculate_per_token_loss=per_token)
    batch = make_batch()
    loss, metrics = run(batch, s)
    assert loss.item() == pytest.approx(reference_loss(batch, s), abs=1e-12)
    assert metrics["loss"].item() == pytest.approx(loss.item())


@pytest.mark.parametrize("estimator", ["grpo", "gspo"])
@pytest.mark.parametrize("per_token", [False, True])
def test_micro_batches_add_up_to_the_global_batch(estimator, per_token):
    s = dataclasses.replace(ALL_ON, advantage_estimator=estimator, calculate_per_token_loss=per_token)
    whole_batch = make_batch(seed=1)
    whole, whole_metrics = run(whole_batch, s)
    whole.backward()
    whole_grads = [lp.grad.clone() for lp in whole_batch["log_probs"]]

    split_batch = make_batch(seed=1)
    parts_metrics = []
    for idx in ([4, 0], [2], [5, 1, 3]):  # micro-batches in shuffled order, as dynamic batching makes them
        part, metrics = run(split_batch, s, idx)
        part.backward()
        parts_metrics.append(metrics)
    for a, b in zip(whole_grads, [lp.grad for lp in split_batch["log_probs"]], strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    means = ("loss", "pg_loss", "pg_clipfrac", "ppo_kl", "kl_loss", "entropy", "tis_weight_mean", "tis_clipfrac")
    means += ("mismatch_logprob_abs_diff", "mismatch_kl", "mismatch_ratio_mean")
    for key in means:
        assert sum(m[key].item() for m in parts_metrics) == pytest.approx(whole_metrics[key].item(), abs=1e-12)
    for key in ("mismatch_ratio_min",):
        assert min(m[key].item() for m in parts_metrics) == whole_metrics[key].item()
    for key in ("mismatch_ratio_max", "mismatch_logprob_abs_diff_max"):
        assert max(m[key].item() for m in parts_metrics) == whole_metrics[key].item()


def test_metrics_by_hand():
    # one sample, two tokens: ratios 1.5 and 1.0, advantage +1, clipped at 1.28 on token 0
    batch = dict(
        log_probs=[torch.tensor([math.log(1.5), 0.0], dtype=torch.float64, requires_grad=True)],
        old_log_probs=[torch.zeros(2, dtype=torch.float64)],
        rollout_log_probs=[torch.tensor([math.log(0.25), 0.0], dtype=torch.float64)],
        advantages=[torch.ones(2, dtype=torch.float64)],
        loss_masks=[torch.ones(2)],
    )
    s = dataclasses.replace(BASE, use_tis=True, tis_clip=2.0, tis_clip_low=0.5)
    _, m = compute_policy_loss(**batch, settings=s, global_denominator=1)
    # TIS ratio exp(0 - log 0.25) = 4 -> weight 2 on token 0; 1 on token 1
    assert m["pg_loss"].item() == pytest.approx((-1.28 * 2 - 1.0) / 2)
    assert m["pg_clipfrac"].item() == pytest.approx(0.5)
    assert m["ppo_kl"].item() == pytest.approx(-math.log(1.5) / 2)
    assert m["tis_weight_mean"].item() == pytest.approx(1.5)
    assert m["tis_clipfrac"].item() == pytest.approx(0.5)
    assert m["mismatch_ratio_mean"].item() == pytest.approx(2.5)
    assert (m["mismatch_ratio_min"].item(), m["mismatch_ratio_max"].item()) == pytest.approx((1.0, 4.0))
    # |log 4|, 0 -> mean log 4 / 2, max log 4; KL(engine || trainer) by k3: (r - 1 - log r) per token
    assert m["mismatch_logprob_abs_diff"].item() == pytest.approx(math.log(4) / 2)
    assert m["mismatch_logprob_abs_diff_max"].item() == pytest.approx(math.log(4))
    assert m["mismatch_kl"].item() == pytest.approx((4 - 1 - math.log(4)) / 2)
    assert "kl_loss" not in m and "entropy" not in m
    assert all(not v.requires_grad for v in m.values())


def test_kl_with_zero_coef_is_monitored_without_gradient():
    monitor = dataclasses.replace(BASE, use_kl_loss=True, kl_loss_coef=0.0)
    batch_a, batch_b = make_batch(seed=2), make_batch(seed=2)
    loss_a, metrics = run(batch_a, monitor)
    loss_b, _ = run(batch_b, BASE)
    assert metrics["kl_loss"].item() > 0  # k3 of distinct distributions
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-15)
    loss_a.backward()
    loss_b.backward()
    for a, b in zip(batch_a["log_probs"], batch_b["log_probs"], strict=True):
        assert torch.equal(a.grad, b.grad)


def test_entropy_bonus_gradient():
    s = dataclasses.replace(BASE, entropy_coef=0.5)
    batch = make_batch(seed=3)
    loss, _ = run(batch, s)
    loss.backward()
    n = len(batch["loss_masks"])
    for ent, mask in zip(batch["entropies"], batch["loss_masks"], strict=True):
        # d(-coef * mean_i mean_t H)/dH_t = -coef * mask_t / (len_i * N)
        expected = -0.5 * mask / (mask.sum().clamp_min(1) * n)
        assert torch.allclose(ent.grad, expected.to(ent.grad), atol=1e-15)


def test_missing_inputs_name_the_flag():
    batch = make_batch()
    for key, settings, flag in [
        ("ref_log_probs", dataclasses.replace(BASE, use_kl_loss=True), "use_kl_loss"),
        ("rollout_log_probs", dataclasses.replace(BASE, use_tis=True), "use_tis"),
        ("entropies", dataclasses.replace(BASE, entropy_coef=0.1), "entropies"),
    ]:
        partial = {k: v for k, v in batch.items() if k != key}
        with pytest.raises(ValueError, match=flag):
            compute_policy_loss(**partial, settings=settings, global_denominator=6)


def test_unknown_estimator_is_an_error():
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        run(make_batch(), dataclasses.replace(BASE, advantage_estimator="nope"))
