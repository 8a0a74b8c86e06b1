"""Per-token loss terms of RL post-training: policy clip, CISPO, KL, entropy, TIS/IcePop/MIS, SFT, value.

Each function maps flat per-token tensors [T] (a micro-batch's response tokens concatenated) to per-token
results [T]; `reduce.LossReduction` turns those into the micro-batch's share of the global loss. Inputs are
cast to float32 first (float64 stays): log-prob differences of bf16 values lose most of their digits.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from rlpipe.algo.reduce import LossReduction, per_sample_sums, sample_lengths

KLKind = Literal["k1", "k2", "k3", "low_var_kl"]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or kept in float64: never compute these terms in bf16/fp16, never lose float64."""
    return x if x.dtype == torch.float64 else x.float()


# |log ratio| above this is clamped before exp: e^20 ~ 5e8 is far past every clip, while e^89 overflows float32
# to inf and 0 * inf = NaN in the backward of a masked or clipped token (verl and slime clamp at 20 too).
MAX_LOG_RATIO = 20.0


def safe_ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    """exp(log_ratio) with the log ratio clamped to [-MAX_LOG_RATIO, MAX_LOG_RATIO]: always finite.

    The clamp passes no gradient where it binds; such a token's ratio is clipped by every loss anyway.
    """
    return log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()


def token_log_ratio(log_probs: torch.Tensor, old_log_probs: torch.Tensor) -> torch.Tensor:
    """log(pi_theta / pi_old) per token: [T]. The PPO/GRPO importance ratio is its exp."""
    return upcast(log_probs) - upcast(old_log_probs)


def sequence_log_ratio(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, loss_masks: list[torch.Tensor]
) -> torch.Tensor:
    """GSPO's sequence-level log-ratio (Zheng et al. 2025, arXiv:2507.18071), broadcast to tokens: [T].

    s_i = mean over sample i's loss tokens of log(pi_theta / pi_old), so exp(s_i) = (prod_t ratio_t)^(1/len_i),
    the length-normalised sequence likelihood ratio. Selected by algo.advantage_estimator=gspo. The gradient
    flows to every token of the sample through the mean.
    """
    per_token = token_log_ratio(log_probs, old_log_probs)  # [T]
    means = per_sample_sums(per_token, loss_masks) / sample_lengths(loss_masks).to(per_token)  # [n]
    return broadcast_to_tokens(means, loss_masks)  # [T]


def policy_loss(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_clip: float,
    eps_clip_high: float,
    eps_clip_c: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss per token and whether the clip was active: ([T], [T] float 0/1).

    PPO (Schulman et al. 2017, arXiv:1707.06347) with DAPO's asymmetric range (Yu et al. 2025,
    arXiv:2503.14476), ratio r = exp(log_ratio):
        L = max(-r A, -clip(r, 1 - eps_clip, 1 + eps_clip_high) A)
    Dual clip (Ye et al. 2020, arXiv:1912.09729), only when eps_clip_c is set and only where A < 0:
        L = min(L, -eps_clip_c A), bounding the loss of a very large ratio on a bad action.
    Config: algo.eps_clip, algo.eps_clip_high, algo.eps_clip_c. Pass `sequence_log_ratio` for GSPO.
    The clip fraction counts the PPO clip only, as Miles does.
    """
    advantages = upcast(advantages)
    ratio = safe_ratio(log_ratio)  # [T]
    loss_unclipped = -ratio * advantages
    loss_clipped = -ratio.clamp(1 - eps_clip, 1 + eps_clip_high) * advantages
    loss = torch.maximum(loss_unclipped, loss_clipped)
    clipfrac = (loss_clipped > loss_unclipped).to(loss.dtype)
    if eps_clip_c is not None:
        if eps_clip_c <= 1.0:
            raise ValueError(f"eps_clip_c (dual-clip bound) must be > 1, got {eps_clip_c}")
        loss = torch.where(advantages < 0, torch.minimum(loss, -eps_clip_c * advantages), loss)
    return loss, clipfrac


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kind: KLKind) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled tokens: [T] (Schulman, "Approximating KL
    divergence", http://joschu.net/blog/kl-approx.html), with log-ratio d = log pi_theta - log pi_ref:

        k1 = d                          unbiased, high variance, can be negative
        k2 = d^2 / 2                    biased, low variance
        k3 = exp(-d) - 1 + d            unbiased, always >= 0 (GRPO's KL term)
        low_var_kl = clamp(k3, -10, 10) k3 clipped as verl/slime do, so one token with a huge ratio
                                        cannot dominate the loss (the lower bound never binds: k3 >= 0)

    k3 and low_var_kl clamp d to [-MAX_LOG_RATIO, MAX_LOG_RATIO] before exp, as verl does.

    Selected by algo.kl_loss_type (and used for the KL-in-reward of reinforce_plus_plus / ppo).
    """
    d = upcast(log_probs) - upcast(ref_log_probs)  # [T]
    if kind == "k1":
        return d
    if kind == "k2":
        return d.square() / 2
    if kind in ("k3", "low_var_kl"):
        d = d.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # exp(-d) finite, so its backward never meets 0 * inf
        k3 = torch.expm1(-d) + d  # expm1 keeps precision when d is tiny
        return k3.clamp(-10.0, 10.0) if kind == "low_var_kl" else k3
    raise ValueError(f"unknown KL kind {kind!r}; valid: k1, k2, k3, low_var_kl")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim: [..., V] -> [...].

    H = logsumexp(z) - sum_v p_v z_v, computed from log_softmax so large logits do not overflow; vocabulary
    entries masked to -inf count as p = 0 (0 * log 0 = 0). Used for the entropy bonus (algo.entropy_coef).
    """
    log_p = torch.log_softmax(upcast(logits), dim=-1)  # [..., V]
    p = log_p.exp()
    return -(p * torch.where(p > 0, log_p, 0.0)).sum(dim=-1)


TISLevel = Literal["token", "sequence", "geometric"]
TISMode = Literal["truncate", "mask"]


class TISWeights(NamedTuple):
    """Importance weights between the trainer and the rollout engine, and the raw ratio they were cut from."""

    weights: torch.Tensor  # [T] the correction each token's policy loss is multiplied by, detached
    ratio: torch.Tensor  # [T] the raw ratio at the chosen level, detached
    changed: torch.Tensor  # [T] float 0/1, where truncation or the mask changed the ratio


def broadcast_to_tokens(per_sample: torch.Tensor, loss_masks: list[torch.Tensor]) -> torch.Tensor:
    """One value per sample [n] -> that value on every token of the sample [T]."""
    lengths = torch.tensor([m.numel() for m in loss_masks], device=per_sample.device)
    return torch.repeat_interleave(per_sample, lengths)


def tis_weights(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    loss_masks: list[torch.Tensor],
    *,
    clip: float,
    clip_low: float,
    level: TISLevel = "token",
    mode: TISMode = "truncate",
) -> TISWeights:
    """Importance weights that correct for the engine sampling from a slightly different distribution than the
    trainer computes (precision, kernels, MoE routing, stale weights): detached, [T].

    With d_t = log pi_train(y_t) - log pi_rollout(y_t) over a sample's loss tokens, the ratio is
        token      r_t = exp(d_t)                       (Yao et al. 2025, "Your efficient RL framework
                                                         secretly brings you off-policy RL training")
        sequence   r   = exp(sum_t d_t)                 one ratio per sample, the sequence likelihood ratio
        geometric  r   = exp(mean_t d_t)                its per-token geometric mean
    each exponent clamped to +-MAX_LOG_RATIO first, and the weight is
        truncate   w = clamp(r, clip_low, clip)         TIS (Miles' --use-tis, verl rollout_is)
        mask       w = r if clip_low <= r <= clip else 0   IcePop at token level (Miles' icepop_function);
                                                         MIS at sequence level: whole samples dropped
    A masked token keeps its place in the loss's denominator and contributes 0 (as verl, slime and TRL do).
    Config: algo.use_tis, algo.tis_level, algo.tis_mode, algo.tis_clip, algo.tis_clip_low.
    """
    train_log_probs, rollout_log_probs = train_log_probs.detach(), rollout_log_probs.detach()
    if level == "token":
        log_ratio = token_log_ratio(train_log_probs, rollout_log_probs)  # [T]
    elif level == "sequence":
        per_token = token_log_ratio(train_log_probs, rollout_log_probs)
        log_ratio = broadcast_to_tokens(per_sample_sums(per_token, loss_masks), loss_masks)
    elif level == "geometric":  # the mean log ratio per sample: GSPO's sequence ratio
        log_ratio = sequence_log_ratio(train_log_probs, rollout_log_probs, loss_masks)
    else:
        raise ValueError(f"unknown TIS level {level!r}; valid: token, sequence, geometric")
    ratio = safe_ratio(log_ratio)
    if mode == "truncate":
        weights = ratio.clamp(clip_low, clip)
        changed = weights != ratio
    elif mode == "mask":
        inside = (ratio >= clip_low) & (ratio <= clip)
        weights = torch.where(inside, ratio, torch.zeros_like(ratio))
        changed = ~inside
    else:
        raise ValueError(f"unknown TIS mode {mode!r}; valid: truncate, mask")
    return TISWeights(weights=weights, ratio=ratio, changed=changed.to(ratio.dtype))


def cispo_loss(
    log_probs: torch.Tensor, log_ratio: torch.Tensor, advantages: torch.Tensor, *, eps_clip: float, eps_clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CISPO's per-token loss and where its clip bit: ([T], [T] float 0/1) (MiniMax-M1, arXiv:2506.13585).

        L_t = -sg(clamp(r_t, 1 - eps_clip, 1 + eps_clip_high)) * A_t * log pi_theta(y_t),   r_t = exp(log_ratio_t)

    The importance weight is clipped and detached, so every token keeps a gradient (PPO's clip zeroes it);
    sg = stop-gradient. Config: algo.policy_loss=cispo with algo.eps_clip / algo.eps_clip_high (slime suggests a
    wide range, e.g. eps_clip just below 1 and eps_clip_high 4).
    """
    ratio = safe_ratio(log_ratio).detach()  # [T]
    weight = ratio.clamp(1 - eps_clip, 1 + eps_clip_high)
    loss = -weight * upcast(advantages) * upcast(log_probs)
    return loss, (weight != ratio).to(loss.dtype)


def sft_loss(log_probs: torch.Tensor, loss_masks: list[torch.Tensor], reduction: LossReduction) -> torch.Tensor:
    """Negative log-likelihood -log p(y_t) of the loss-masked target tokens, reduced: 0-d.

    The supervised warm-up loss. `log_probs` [T] are the micro-batch's target-token log-probs; `reduction`
    (per-sample or per-token, algo.calculate_per_token_loss) makes micro-batch results add up to the global
    mean.
    """
    return reduction(-upcast(log_probs), loss_masks)


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *, value_clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss of PPO's critic per token and where clipping bit: ([T], [T] float 0/1).

    V_clip = V_old + clamp(V - V_old, -value_clip, value_clip);  L = max((V - R)^2, (V_clip - R)^2),
    as in OpenAI baselines' PPO2 and Miles (no 1/2 factor). Config: algo.value_clip.
    """
    values, old_values, returns = upcast(values), upcast(old_values), upcast(returns)
    clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
    loss = torch.maximum((values - returns).square(), (clipped_values - returns).square())
    clipfrac = ((values - old_values).abs() > value_clip).to(loss.dtype)
    return loss, clipfrac
