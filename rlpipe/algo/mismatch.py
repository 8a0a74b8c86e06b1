"""How far the engine's log-probs are from the trainer's for the same tokens and weights: train-inference mismatch.

The engine (SGLang, or the HF engine) and the trainer (Megatron) compute the probability of each sampled token
with different kernels, precisions and, for MoE, possibly different experts. Every rollout logs, over response
loss tokens, with d_t = log pi_train(y_t) - log pi_engine(y_t) and r_t = exp(d_t):

    mismatch_logprob_abs_diff        mean |d_t|  (Miles' train_rollout_logprob_abs_diff)
    mismatch_logprob_abs_diff_max    max |d_t|
    mismatch_kl                      KL(engine || trainer) ~ mean(r_t - 1 - d_t), the k3 estimate from the
                                     engine's own samples (Miles' train_rollout_kl)
    mismatch_ratio_mean / _min / _max   the token importance ratio r_t that TIS/IcePop correct with

The trainer's side is its log-probs before the rollout's first optimizer step, so in async runs (or with
rollout.max_staleness > 0) the numbers include the policy lag too, not numerics alone.

Means are the run's loss reduction (per sample or per token), so they add over micro-batches and ranks like
the loss; `_min` / `_max` combine with min / max (`rlpipe.train.step_metrics`).
"""

from __future__ import annotations

import torch

from rlpipe.algo.losses import kl_penalty, safe_ratio, token_log_ratio
from rlpipe.algo.reduce import LossReduction


def mismatch_metrics(
    train_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    loss_masks: list[torch.Tensor],
    reduce: LossReduction,
) -> dict[str, torch.Tensor]:
    """The mismatch metrics above for one micro-batch (flat [T] inputs, detached 0-d outputs)."""
    d = token_log_ratio(train_log_probs, rollout_log_probs).detach()  # [T]
    ratio = safe_ratio(d)
    on_loss = torch.cat(loss_masks).to(d.device) != 0  # [T]
    empty = not bool(on_loss.any())
    abs_diff, ratios = d.abs(), ratio[on_loss]
    return {
        "mismatch_logprob_abs_diff": reduce(abs_diff, loss_masks),
        "mismatch_logprob_abs_diff_max": torch.tensor(-torch.inf) if empty else abs_diff[on_loss].amax(),
        "mismatch_kl": reduce(kl_penalty(rollout_log_probs.detach(), train_log_probs.detach(), "k3"), loss_masks),
        "mismatch_ratio_mean": reduce(ratio, loss_masks),
        "mismatch_ratio_min": torch.tensor(torch.inf) if empty else ratios.amin(),
        "mismatch_ratio_max": torch.tensor(-torch.inf) if empty else ratios.amax(),
    }
