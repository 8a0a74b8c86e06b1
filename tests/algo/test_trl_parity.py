"""Parity with TRL's GRPOTrainer loss math (trl 1.16.0), on identical inputs.

TRL has no standalone loss function: the math lives in `GRPOTrainer._compute_loss(model, inputs)`, which
first runs the model through `self._get_per_token_logps_and_entropies`. We call that real method on a bare
trainer instance whose only replaced piece is that forward pass: it returns fixed per-token log-probs (a leaf
with grad) instead of running a model. Everything after it (ratios, clipping, KL, reductions, entropy bonus)
is TRL's own code. We compare the loss value and its gradient with respect to the log-probs.

Mapping of TRL loss types to rlpipe reductions:
    grpo  (mean over samples of the per-sample token mean)   -> calculate_per_token_loss=False, N samples
    bnpo  (token mean over the micro-batch)                  -> calculate_per_token_loss=True, its tokens
    dapo  (token sum / num_items_in_batch of the whole batch) -> calculate_per_token_loss=True, global tokens
    importance_sampling_level="sequence"                      -> advantage_estimator=gspo
"""

import dataclasses
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from trl import GRPOTrainer
from trl.trainer.utils import nanstd

from rlpipe.algo.advantages import AdvantageConfig, AdvantageInputs, compute_advantages
from rlpipe.algo.rl_loss import AlgoSettings, compute_policy_loss

B, T = 4, 6  # samples, padded completion length


def trl_trainer(loss_type, *, beta=0.0, level="token", eps_low=0.2, eps_high=0.28, entropy_coef=0.0):
    """A GRPOTrainer with exactly the attributes `_compute_loss` reads, built without a model or dataset."""
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.loss_type = loss_type
    trainer.beta = beta
    trainer.importance_sampling_level = level
    trainer.epsilon_low, trainer.epsilon_high = eps_low, eps_high
    trainer.top_entropy_quantile = 1.0
    trainer.off_policy_mask_threshold = None
    trainer.use_vllm = False
    trainer.aux_loss_enabled = False
    trainer.entropy_coef = entropy_coef
    trainer.use_adaptive_entropy = False
    trainer._entropy_bonus_enabled = entropy_coef != 0.0
    trainer.args = SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1)
    trainer.model = torch.nn.Linear(1, 1)  # only `.training` is read (train mode)
    trainer.current_gradient_accumulation_steps = 1
    trainer.accelerator = Accelerator(cpu=True)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    return trainer


def make_inputs(seed):
    """Padded TRL-style tensors [B, T], and the same data as rlpipe's per-sample lists."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 5, 1])
    completion_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # [B, T], padding after EOS
    old = torch.randn(B, T, generator=g) * 0.5 - 1.5
    new = (old + torch.randn(B, T, generator=g) * 0.3).requires_grad_()
    ref = old + torch.randn(B, T, generator=g) * 0.2
    entropies = torch.rand(B, T, generator=g) * 2
    advantages = torch.randn(B, generator=g)  # [B], as TRL stores them
    return dict(new=new, old=old, ref=ref, entropies=entropies, advantages=advantages, mask=completion_mask)


def trl_loss(trainer, data, num_items_in_batch=None, importance_sampling_ratio=None):
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (data["new"], data["entropies"], None)
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": data["mask"],
        "advantages": data["advantages"],
        "old_per_token_logps": data["old"],
        "ref_per_token_logps": data["ref"],
    }
    if num_items_in_batch is not None:
        inputs["num_items_in_batch"] = torch.tensor(float(num_items_in_batch))
    if importance_sampling_ratio is not None:  # TRL's correction of vLLM's sampling: a [B, T] weight
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
        inputs["importance_sampling_ratio"] = importance_sampling_ratio
    return trainer._compute_loss(trainer.model, inputs)


def rlpipe_loss(data, settings, denominator, rollout=None):
    rows = range(B)
    mask = data["mask"].float()
    return compute_policy_loss(
        rollout_log_probs=None if rollout is None else [rollout[i] for i in rows],
        log_probs=[data["new"][i] for i in rows],
        old_log_probs=[data["old"][i] for i in rows],
        ref_log_probs=[data["ref"][i] for i in rows],
        advantages=[data["advantages"][i] * mask[i] for i in rows],
        entropies=[data["entropies"][i] for i in rows],
        loss_masks=[mask[i] for i in rows],
        settings=settings,
        global_denominator=denominator,
    )[0]


SETTINGS = AlgoSettings(
    advantage_estimator="grpo",
    policy_loss="ppo",
    eps_clip=0.2,
    eps_clip_high=0.28,
    eps_clip_c=None,
    use_kl_loss=False,
    kl_loss_coef=0.0,
    kl_loss_type="k3",
    entropy_coef=0.0,
    use_tis=False,
    tis_clip=2.0,
    tis_clip_low=0.0,
    tis_level="token",
    tis_mode="truncate",
    calculate_per_token_loss=False,
)


def assert_same_loss_and_grad(trl_data, ours_data, trl_value, ours_value):
    assert ours_value.item() == pytest.approx(trl_value.item(), abs=1e-6)
    trl_value.backward()
    ours_value.backward()
    assert torch.allclose(ours_data["new"].grad, trl_data["new"].grad, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_grpo_loss_type_matches_per_sample_reduction(beta, level):
    trl_data, ours_data = make_inputs(0), make_inputs(0)
    trl_value = trl_loss(trl_trainer("grpo", beta=beta, level=level), trl_data)
    settings = dataclasses.replace(
        SETTINGS,
        advantage_estimator="gspo" if level == "sequence" else "grpo",
        use_kl_loss=beta != 0.0,
        kl_loss_coef=beta,
    )
    assert_same_loss_and_grad(trl_data, ours_data, trl_value, rlpipe_loss(ours_data, settings, denominator=B))


def test_bnpo_with_entropy_bonus_matches_per_token_reduction():
    trl_data, ours_data = make_inputs(1), make_inputs(1)
    trl_value = trl_loss(trl_trainer("bnpo", beta=0.04, entropy_coef=0.01), trl_data)
    settings = dataclasses.replace(
        SETTINGS, use_kl_loss=True, kl_loss_coef=0.04, entropy_coef=0.01, calculate_per_token_loss=True
    )
    tokens = float(ours_data["mask"].sum())
    assert_same_loss_and_grad(trl_data, ours_data, trl_value, rlpipe_loss(ours_data, settings, denominator=tokens))


def test_dapo_micro_batch_share_matches_global_token_denominator():
    # this micro-batch is part of a larger global batch: both divide by the global token count
    trl_data, ours_data = make_inputs(2), make_inputs(2)
    global_tokens = 40
    trl_value = trl_loss(trl_trainer("dapo"), trl_data, num_items_in_batch=global_tokens)
    settings = dataclasses.replace(SETTINGS, calculate_per_token_loss=True)
    assert_same_loss_and_grad(trl_data, ours_data, trl_value, rlpipe_loss(ours_data, settings, global_tokens))


def test_cispo_matches_trl():
    # TRL caps the raw ratio at epsilon_high (an absolute bound, no lower one); rlpipe clips to
    # [1 - eps_clip, 1 + eps_clip_high]: eps_clip_high = cap - 1, and eps_clip near 1 leaves the lower side open.
    trl_data, ours_data = make_inputs(4), make_inputs(4)
    global_tokens = 30
    trl_value = trl_loss(trl_trainer("cispo", eps_high=1.1), trl_data, num_items_in_batch=global_tokens)
    settings = dataclasses.replace(
        SETTINGS, policy_loss="cispo", eps_clip=0.999, eps_clip_high=0.1, calculate_per_token_loss=True
    )
    ratio = (ours_data["new"] - ours_data["old"]).exp()[ours_data["mask"].bool()]
    assert (ratio > 1.1).any() and (ratio < 1.1).any()  # the cap binds somewhere, not everywhere
    assert_same_loss_and_grad(trl_data, ours_data, trl_value, rlpipe_loss(ours_data, settings, global_tokens))


def test_token_tis_weights_the_clipped_loss_as_trl_does():
    # TRL multiplies its per-token (clipped) loss by the truncated engine/trainer ratio; rlpipe's use_tis too
    trl_data, ours_data = make_inputs(5), make_inputs(5)
    g = torch.Generator().manual_seed(7)
    rollout = ours_data["old"] + torch.randn(B, T, generator=g) * 0.5  # the engine's log-probs
    weights = (ours_data["old"] - rollout).exp().clamp(0.5, 2.0)  # TRL's token_truncate with [0.5, 2]
    trl_value = trl_loss(trl_trainer("grpo"), trl_data, importance_sampling_ratio=weights)
    settings = dataclasses.replace(SETTINGS, use_tis=True, tis_clip=2.0, tis_clip_low=0.5)
    ours_value = rlpipe_loss(ours_data, settings, denominator=B, rollout=rollout)
    assert_same_loss_and_grad(trl_data, ours_data, trl_value, ours_value)


def test_group_advantages_match_trl_formula():
    """TRL computes advantages inline in `_generate_and_score_completions` (not callable alone); this restates
    its scale_rewards="group" lines with TRL's own `nanstd` and compares with our GRPO estimator at TRL's eps."""
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.25, 1.0, 1.0, 0.0, 1.0])
    n = 4
    mean = rewards.view(-1, n).mean(dim=1).repeat_interleave(n)
    std = nanstd(rewards.view(-1, n), dim=1).repeat_interleave(n)
    expected = (rewards - mean) / (std + 1e-4)
    ours = compute_advantages("grpo", AdvantageInputs(rewards, [torch.ones(1)] * 8, n), AdvantageConfig(std_eps=1e-4))
    assert torch.allclose(torch.cat(ours.advantages), expected, atol=1e-6)
