"""Advantage estimators against hand-computed values; registry behaviour; GRPO properties."""

import math
import typing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlpipe.algo import advantages as adv_module
from rlpipe.algo.advantages import (
    AdvantageConfig,
    AdvantageInputs,
    Advantages,
    advantage_estimator_names,
    compute_advantages,
    get_advantage_estimator,
    group_reward_stats,
    register_advantage_estimator,
)

ALL = ("grpo", "gspo", "on_policy_distillation", "ppo", "reinforce_plus_plus", "reinforce_plus_plus_baseline")


def ones(*lengths):
    return [torch.ones(n) for n in lengths]


def approx_list(tensors, expected, abs=1e-6):
    assert [t.tolist() for t in tensors] == [pytest.approx(e, abs=abs) for e in expected]


# --- registry ------------------------------------------------------------------------------------------------


def test_all_miles_estimators_are_registered():
    assert advantage_estimator_names() == tuple(sorted(ALL))


def test_config_schema_offers_exactly_the_registered_estimators():
    from rlpipe.config.schema import AdvantageEstimator

    assert sorted(typing.get_args(AdvantageEstimator)) == list(advantage_estimator_names())


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown advantage estimator 'grpoo'") as err:
        get_advantage_estimator("grpoo")
    for name in ALL:
        assert name in str(err.value)


def test_duplicate_registration_is_rejected(monkeypatch):
    monkeypatch.setattr(adv_module, "_REGISTRY", dict(adv_module._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_estimator("grpo")(lambda inputs, config: Advantages([]))


def test_a_new_estimator_can_be_registered_and_called(monkeypatch):
    monkeypatch.setattr(adv_module, "_REGISTRY", dict(adv_module._REGISTRY))

    @register_advantage_estimator("reward_as_advantage")
    def reward_as_advantage(inputs, config):
        return Advantages([r * m for r, m in zip(inputs.rewards, inputs.loss_masks, strict=True)])

    out = compute_advantages("reward_as_advantage", AdvantageInputs(torch.tensor([2.0]), ones(2), 1), AdvantageConfig())
    approx_list(out.advantages, [[2.0, 2.0]])


def test_only_gspo_uses_a_sequence_level_ratio():
    assert [n for n in ALL if get_advantage_estimator(n).sequence_level_ratio] == ["gspo"]


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="groups"):
        compute_advantages("grpo", AdvantageInputs(torch.zeros(3), ones(1, 1, 1), 2), AdvantageConfig())
    with pytest.raises(ValueError, match="one loss mask per sample"):
        compute_advantages("grpo", AdvantageInputs(torch.zeros(2), ones(1), 1), AdvantageConfig())
    with pytest.raises(ValueError, match="values"):
        inputs = AdvantageInputs(torch.zeros(1), ones(3), 1, values=[torch.zeros(2)])
        compute_advantages("ppo", inputs, AdvantageConfig())


# --- GRPO / GSPO ---------------------------------------------------------------------------------------------

# two groups of three: [1, 0, 0] and [1, 1, 1]
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def test_grpo_by_hand():
    out = compute_advantages("grpo", AdvantageInputs(REWARDS, ones(2, 1, 3, 1, 1, 1), 3), AdvantageConfig())
    # group 1: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3) + 1e-6
    a, b = (2 / 3) / std, (-1 / 3) / std
    approx_list(out.advantages, [[a, a], [b], [b, b, b], [0.0], [0.0], [0.0]])
    assert out.returns is None


def test_dr_grpo_skips_the_std_division():
    out = compute_advantages(
        "grpo", AdvantageInputs(REWARDS, ones(1, 1, 1, 1, 1, 1), 3), AdvantageConfig(normalize_std=False)
    )
    approx_list(out.advantages, [[2 / 3], [-1 / 3], [-1 / 3], [0.0], [0.0], [0.0]])


def test_grpo_zero_outside_the_loss_mask():
    masks = [torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0])]
    out = compute_advantages(
        "grpo", AdvantageInputs(torch.tensor([1.0, 0.0]), masks, 2), AdvantageConfig(normalize_std=False)
    )
    approx_list(out.advantages, [[0.5, 0.0, 0.5], [0.0, -0.5]])


def test_group_of_one_has_zero_advantage():
    out = compute_advantages("grpo", AdvantageInputs(torch.tensor([3.0, 5.0]), ones(1, 1), 1), AdvantageConfig())
    approx_list(out.advantages, [[0.0], [0.0]])


def test_gspo_advantages_equal_grpo():
    inputs = AdvantageInputs(REWARDS, ones(2, 1, 3, 1, 1, 1), 3)
    grpo = compute_advantages("grpo", inputs, AdvantageConfig())
    gspo = compute_advantages("gspo", inputs, AdvantageConfig())
    for a, b in zip(grpo.advantages, gspo.advantages, strict=True):
        assert torch.equal(a, b)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 6),
    groups=st.integers(1, 4),
    normalize=st.booleans(),
    data=st.data(),
)
def test_grpo_advantages_are_zero_mean_per_group(n, groups, normalize, data):
    rewards = data.draw(st.lists(st.floats(-10, 10, width=32), min_size=n * groups, max_size=n * groups))
    out = compute_advantages(
        "grpo",
        AdvantageInputs(torch.tensor(rewards), ones(*[1] * (n * groups)), n),
        AdvantageConfig(normalize_std=normalize),
    )
    per_sample = torch.cat(out.advantages).view(groups, n)
    assert per_sample.sum(dim=1).abs().max().item() < 1e-4


# --- REINFORCE++ ---------------------------------------------------------------------------------------------


def test_reinforce_plus_plus_by_hand():
    # sample 0: reward 1, kl [.1, .2, .3]; sample 1: reward 0, kl [.2, .4, 9], last token not trained
    inputs = AdvantageInputs(
        rewards=torch.tensor([1.0, 0.0]),
        loss_masks=[torch.ones(3), torch.tensor([1.0, 1.0, 0.0])],
        n_samples_per_prompt=2,
        kl=[torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.2, 0.4, 9.0])],
    )
    out = compute_advantages("reinforce_plus_plus", inputs, AdvantageConfig(gamma=0.9, kl_coef=0.5))
    # token rewards: [-.05, -.1, -.15 + 1] and [-.1, -.2, (masked) 0]; returns G_t = r_t + 0.9 G_{t+1}
    returns = [0.5485, 0.665, 0.85, -0.28, -0.2]
    t = torch.tensor(returns, dtype=torch.float64)
    whitened = ((t - t.mean()) / torch.sqrt(t.var() + 1e-8)).tolist()  # torch.var is unbiased
    approx_list(out.advantages, [whitened[:3], [*whitened[3:], 0.0]], abs=1e-5)


def test_reinforce_plus_plus_needs_kl_only_with_a_kl_coef():
    inputs = AdvantageInputs(torch.tensor([1.0, 0.0]), ones(2, 2), 2)
    compute_advantages("reinforce_plus_plus", inputs, AdvantageConfig(kl_coef=0.0))
    with pytest.raises(ValueError, match="needs per-token kl"):
        compute_advantages("reinforce_plus_plus", inputs, AdvantageConfig(kl_coef=0.1))


def test_reinforce_plus_plus_baseline_by_hand():
    inputs = AdvantageInputs(
        rewards=torch.tensor([1.0, 0.0, 2.0, 2.0]),
        loss_masks=ones(2, 1, 1, 1),
        n_samples_per_prompt=2,
        kl=[torch.tensor([0.2, 0.4]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0])],
    )
    out = compute_advantages("reinforce_plus_plus_baseline", inputs, AdvantageConfig(kl_coef=0.5))
    # group baselines 0.5 and 2: raw = [0.5 - 0.1, 0.5 - 0.2], [-0.5], [0 - 0.5], [0]
    t = torch.tensor([0.4, 0.3, -0.5, -0.5, 0.0], dtype=torch.float64)
    w = ((t - t.mean()) / torch.sqrt(t.var() + 1e-8)).tolist()
    approx_list(out.advantages, [w[:2], [w[2]], [w[3]], [w[4]]], abs=1e-5)


# --- PPO / GAE -----------------------------------------------------------------------------------------------


def test_ppo_gae_by_hand():
    inputs = AdvantageInputs(
        rewards=torch.tensor([1.0, 0.0]),
        loss_masks=ones(3, 2),
        n_samples_per_prompt=1,
        values=[torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.1])],
    )
    out = compute_advantages("ppo", inputs, AdvantageConfig(gamma=0.9, lambd=0.8))
    # sample 0: deltas [-.14, -.13, .7]; A = [-.14 + .72 * .374, -.13 + .72 * .7, .7]
    # sample 1 (shorter, checks padding): deltas [-.11, -.1]; A = [-.11 + .72 * -.1, -.1]
    approx_list(out.advantages, [[0.12928, 0.374, 0.7], [-0.182, -0.1]])
    approx_list(out.returns, [[0.62928, 0.774, 1.0], [0.018, 0.0]])


def _gae_reference(rewards, values, gamma, lambd):
    """A_t = sum_l (gamma lambd)^l delta_{t+l}, written as the closed-form sum (not the recursion)."""
    n = len(rewards)
    deltas = [rewards[t] + gamma * (values[t + 1] if t + 1 < n else 0.0) - values[t] for t in range(n)]
    return [sum((gamma * lambd) ** (k - t) * deltas[k] for k in range(t, n)) for t in range(n)]


def test_ppo_matches_closed_form_gae_with_kl_in_reward():
    torch.manual_seed(0)
    lengths = [5, 1, 3, 7]
    values = [torch.randn(n) for n in lengths]
    kl = [torch.rand(n) for n in lengths]
    rewards = torch.tensor([1.0, -1.0, 0.5, 0.0])
    inputs = AdvantageInputs(rewards, ones(*lengths), 2, kl=kl, values=values)
    gamma, lambd, kl_coef = 0.95, 0.9, 0.1
    out = compute_advantages("ppo", inputs, AdvantageConfig(gamma=gamma, lambd=lambd, kl_coef=kl_coef))
    for i, n in enumerate(lengths):
        token_rewards = [-kl_coef * float(kl[i][t]) + (float(rewards[i]) if t == n - 1 else 0.0) for t in range(n)]
        expected = _gae_reference(token_rewards, values[i].tolist(), gamma, lambd)
        assert out.advantages[i].tolist() == pytest.approx(expected, abs=1e-5)
        assert out.returns[i].tolist() == pytest.approx(
            [a + v for a, v in zip(expected, values[i].tolist(), strict=True)], abs=1e-5
        )


def test_ppo_needs_values():
    with pytest.raises(ValueError, match="needs per-token values"):
        compute_advantages("ppo", AdvantageInputs(torch.tensor([1.0]), ones(2), 1), AdvantageConfig())


# --- on-policy distillation ----------------------------------------------------------------------------------


def test_on_policy_distillation_is_teacher_minus_student():
    inputs = AdvantageInputs(
        rewards=torch.tensor([0.0]),
        loss_masks=[torch.tensor([1.0, 1.0, 0.0])],
        n_samples_per_prompt=1,
        log_probs=[torch.tensor([-1.0, -2.0, -3.0])],
        teacher_log_probs=[torch.tensor([-0.5, -2.5, -0.1])],
    )
    out = compute_advantages("on_policy_distillation", inputs, AdvantageConfig())
    approx_list(out.advantages, [[0.5, -0.5, 0.0]])


def test_on_policy_distillation_needs_teacher_log_probs():
    inputs = AdvantageInputs(torch.tensor([0.0]), ones(1), 1, log_probs=[torch.zeros(1)])
    with pytest.raises(ValueError, match="teacher_log_probs"):
        compute_advantages("on_policy_distillation", inputs, AdvantageConfig())


def test_advantages_carry_no_gradient():
    student = [torch.zeros(2, requires_grad=True)]
    inputs = AdvantageInputs(torch.tensor([0.0]), ones(2), 1, log_probs=student, teacher_log_probs=[torch.ones(2)])
    out = compute_advantages("on_policy_distillation", inputs, AdvantageConfig())
    assert not out.advantages[0].requires_grad


# --- reward statistics ---------------------------------------------------------------------------------------


def test_group_reward_stats():
    stats = group_reward_stats(torch.tensor([1.0, 0.0, 0.1, 0.1, 0.1, 0.1]), n_samples_per_prompt=2)
    assert stats.mean.tolist() == pytest.approx([0.5, 0.1, 0.1])
    assert stats.std.tolist() == pytest.approx([math.sqrt(0.5), 0.0, 0.0], abs=1e-6)
    assert stats.zero_std_fraction == pytest.approx(2 / 3)


def test_group_reward_stats_of_single_sample_groups():
    stats = group_reward_stats(torch.tensor([1.0, 0.0]), n_samples_per_prompt=1)
    assert stats.std.tolist() == [0.0, 0.0]
    assert stats.zero_std_fraction == 1.0
