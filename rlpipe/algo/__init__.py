"""RL math as pure torch functions: advantage estimators, loss terms, reductions, the assembled RL loss.

Imports only torch, so the config layer and tests can use it without Megatron or Ray.
"""

from rlpipe.algo.advantages import (
    AdvantageConfig,
    AdvantageEstimator,
    AdvantageInputs,
    Advantages,
    GroupRewardStats,
    advantage_estimator_names,
    compute_advantages,
    get_advantage_estimator,
    group_reward_stats,
    register_advantage_estimator,
)
from rlpipe.algo.losses import (
    TISWeights,
    cispo_loss,
    entropy_from_logits,
    kl_penalty,
    policy_loss,
    sequence_log_ratio,
    sft_loss,
    tis_weights,
    token_log_ratio,
    value_loss,
)
from rlpipe.algo.mismatch import mismatch_metrics
from rlpipe.algo.reduce import LossReduction, global_denominator, per_sample_mean, per_token_mean
from rlpipe.algo.rl_loss import AlgoSettings, compute_policy_loss

__all__ = [
    "AdvantageConfig",
    "AdvantageEstimator",
    "AdvantageInputs",
    "Advantages",
    "AlgoSettings",
    "GroupRewardStats",
    "LossReduction",
    "TISWeights",
    "advantage_estimator_names",
    "cispo_loss",
    "compute_advantages",
    "compute_policy_loss",
    "entropy_from_logits",
    "get_advantage_estimator",
    "global_denominator",
    "group_reward_stats",
    "kl_penalty",
    "mismatch_metrics",
    "per_sample_mean",
    "per_token_mean",
    "policy_loss",
    "register_advantage_estimator",
    "sequence_log_ratio",
    "sft_loss",
    "tis_weights",
    "token_log_ratio",
    "value_loss",
]
