"""Advantage estimators behind a thin registry (`algo.advantage_estimator` picks one).

Every estimator has the same signature, `fn(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages`,
and works on the whole rollout batch at once: group baselines need every sample of a group, and the
REINFORCE++ whitening uses statistics of the whole batch. Compute advantages once per rollout, before the
batch is split across data-parallel ranks and micro-batches, so every rank sees the same statistics.

Shapes: N samples; groups are consecutive blocks of `n_samples_per_prompt` samples (prompt-major order, as
the rollout produces them). Per-token tensors are lists of N 1-D tensors, sample i has R_i response tokens.

Where rlpipe departs from Miles/slime (both on purpose):
- Miles normalises GRPO rewards on the rollout side and broadcasts them on the trainer side; here the whole
  estimator is one function, so the trainer gets advantages from rewards in one call.
- Advantages are zero outside the loss mask (tool output in multi-turn samples), and REINFORCE++/PPO put no
  KL penalty on those tokens: they were not sampled from the policy. The reductions mask them anyway, so
  for single-turn samples (all-ones masks) the result is identical to Miles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlpipe.algo.reduce import masked


@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator may read; which optional fields it needs is in its docstring."""

    rewards: torch.Tensor  # [N] scalar reward per sample
    loss_masks: list[torch.Tensor]  # N x [R_i], 1 where the token is trained on
    n_samples_per_prompt: int  # group size (rollout.n_samples_per_prompt)
    kl: list[torch.Tensor] | None = None  # N x [R_i] per-token KL estimate of old policy vs reference
    values: list[torch.Tensor] | None = None  # N x [R_i] critic values V(s_t) (ppo)
    log_probs: list[torch.Tensor] | None = None  # N x [R_i] student (rollout policy) log-probs (distillation)
    teacher_log_probs: list[torch.Tensor] | None = None  # N x [R_i] teacher log-probs (distillation)


@dataclass(frozen=True)
class AdvantageConfig:
    """Estimator hyper-parameters (the matching `algo.*` config fields)."""

    normalize_std: bool = True  # algo.grpo_std_normalization; False gives Dr.GRPO
    std_eps: float = 1e-6  # added to the group std before dividing (Miles uses 1e-6)
    gamma: float = 1.0  # algo.gamma, discount for reinforce_plus_plus and ppo
    lambd: float = 1.0  # algo.lambd, GAE lambda for ppo
    kl_coef: float = 0.0  # algo.kl_coef, KL-in-reward coefficient (reinforce_plus_plus[_baseline], ppo)
    whiten_eps: float = 1e-8  # added to the batch variance before whitening (Miles uses 1e-8)


@dataclass
class Advantages:
    """Per-token advantages, and the value targets for estimators that train a critic."""

    advantages: list[torch.Tensor]  # N x [R_i], float32, zero outside the loss mask
    returns: list[torch.Tensor] | None = None  # N x [R_i] value-function targets; only ppo fills it


EstimatorFn = Callable[[AdvantageInputs, AdvantageConfig], Advantages]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator and what the loss needs to know about it."""

    name: str
    fn: EstimatorFn
    # GSPO: the policy loss uses one importance ratio per sequence instead of one per token
    sequence_level_ratio: bool = False


_REGISTRY: dict[str, AdvantageEstimator] = {}


def register_advantage_estimator(
    name: str, *, sequence_level_ratio: bool = False
) -> Callable[[EstimatorFn], EstimatorFn]:
    """Decorator: add an estimator under `name`; registering a name twice is an error."""

    def decorate(fn: EstimatorFn) -> EstimatorFn:
        if name in _REGISTRY:
            raise ValueError(f"advantage estimator {name!r} is already registered ({_REGISTRY[name].fn.__qualname__})")
        _REGISTRY[name] = AdvantageEstimator(name=name, fn=fn, sequence_level_ratio=sequence_level_ratio)
        return fn

    return decorate


def advantage_estimator_names() -> tuple[str, ...]:
    """Registered names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under `name`; an unknown name raises and lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; valid: {', '.join(advantage_estimator_names())}"
        ) from None


def compute_advantages(name: str, inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """Run the estimator registered under `name` on a whole rollout batch."""
    _check_shapes(inputs)
    with torch.no_grad():  # advantages are constants for the policy gradient
        return get_advantage_estimator(name).fn(inputs, config)


# --- shared pieces -------------------------------------------------------------------------------------------


def _check_shapes(inputs: AdvantageInputs) -> None:
    n = inputs.rewards.numel()
    if inputs.rewards.dim() != 1 or len(inputs.loss_masks) != n:
        raise ValueError(
            f"rewards must be [N] with one loss mask per sample; got {tuple(inputs.rewards.shape)} "
            f"and {len(inputs.loss_masks)} masks"
        )
    if inputs.n_samples_per_prompt < 1 or n % inputs.n_samples_per_prompt:
        raise ValueError(f"{n} samples do not split into groups of n_samples_per_prompt={inputs.n_samples_per_prompt}")
    lengths = [m.numel() for m in inputs.loss_masks]
    for field in ("kl", "values", "log_probs", "teacher_log_probs"):
        per_token = getattr(inputs, field)
        if per_token is not None and [t.numel() for t in per_token] != lengths:
            raise ValueError(f"{field} must have one tensor per sample with the loss masks' lengths {lengths}")


def _require(inputs: AdvantageInputs, field: str, estimator: str) -> list[torch.Tensor]:
    value = getattr(inputs, field)
    if value is None:
        raise ValueError(f"advantage estimator {estimator!r} needs per-token {field}, but none were given")
    return value


def group_centered_rewards(
    rewards: torch.Tensor, n_samples_per_prompt: int, normalize_std: bool, eps: float
) -> torch.Tensor:
    """r_i - mean(group), optionally divided by (std(group) + eps): [N] -> [N].

    std is the unbiased (Bessel) sample std, as torch.std and Miles use; a group of one sample has no spread,
    so its advantage is 0.
    """
    # float64 for N scalars costs nothing and keeps group means exact enough that A sums to 0 per group
    grouped = rewards.double().view(-1, n_samples_per_prompt)  # [G, n]
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # [G, n]
    if normalize_std and n_samples_per_prompt > 1:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.view(-1).float()  # [N]


def _broadcast(per_sample: torch.Tensor, loss_masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Scalar per sample -> that value on every loss token of the sample."""
    return [value * mask.float() for value, mask in zip(per_sample, loss_masks, strict=True)]


def _kl_or_zeros(inputs: AdvantageInputs, config: AdvantageConfig, estimator: str) -> list[torch.Tensor]:
    """Per-token KL (old vs ref) on loss tokens; zeros when kl_coef is 0 so no reference model is needed."""
    if config.kl_coef == 0.0:
        return [torch.zeros(m.numel(), dtype=torch.float32, device=m.device) for m in inputs.loss_masks]
    kl = _require(inputs, "kl", estimator)
    return [masked(k.float(), m) for k, m in zip(kl, inputs.loss_masks, strict=True)]


def _last_loss_token(mask: torch.Tensor) -> int | None:
    """Index of the last trained token, where the sequence-level reward lands (None if nothing is trained)."""
    idx = mask.nonzero(as_tuple=True)[0]
    return int(idx[-1]) if idx.numel() else None


def _token_rewards(inputs: AdvantageInputs, config: AdvantageConfig, estimator: str) -> list[torch.Tensor]:
    """r_t = -kl_coef * KL_t, plus the sample reward on its last loss token (REINFORCE++ and PPO)."""
    token_rewards = []
    for reward, kl, mask in zip(
        inputs.rewards.float(), _kl_or_zeros(inputs, config, estimator), inputs.loss_masks, strict=True
    ):
        r = -config.kl_coef * kl  # [R_i]
        last = _last_loss_token(mask)
        if last is not None:
            r[last] += reward
        token_rewards.append(r)
    return token_rewards


def _pad(tensors: list[torch.Tensor]) -> torch.Tensor:
    """N x [R_i] -> [N, max R_i], zero padded (padding sits after the end, where it cannot flow backwards)."""
    return torch.nn.utils.rnn.pad_sequence([t.float() for t in tensors], batch_first=True)


def _unpad(padded: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [row[: t.numel()] for row, t in zip(padded, like, strict=True)]


def masked_whiten(values: list[torch.Tensor], loss_masks: list[torch.Tensor], eps: float) -> list[torch.Tensor]:
    """(x - mean) / sqrt(var + eps) with mean and unbiased var over all loss tokens of the batch.

    Same statistics as slime's `distributed_masked_whiten` (run here on the whole batch in one process).
    Tokens outside the loss mask come out as 0.
    """
    flat = torch.cat([v.float() for v in values])  # [T]
    mask = torch.cat([m.float() for m in loss_masks])  # [T]
    count = mask.sum()
    if count == 0:
        raise ValueError("cannot whiten advantages: the batch has no loss tokens")
    mean = masked(flat, mask).sum() / count
    var = masked((flat - mean) ** 2, mask).sum() / count
    if count >= 2:
        var = var * count / (count - 1)  # Bessel's correction, as slime does
    whitened = masked((flat - mean) * torch.rsqrt(var + eps), mask)  # [T]
    return list(whitened.split([v.numel() for v in values]))


# --- the estimators ------------------------------------------------------------------------------------------


@register_advantage_estimator("grpo")
def grpo(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300): A_i = (r_i - mean_g r) / (std_g r + eps).

    With `normalize_std=False` (algo.grpo_std_normalization=false) this is Dr.GRPO (Liu et al. 2025,
    arXiv:2503.20783): A_i = r_i - mean_g r. The advantage is the same on every token of the response.
    """
    centered = group_centered_rewards(inputs.rewards, inputs.n_samples_per_prompt, config.normalize_std, config.std_eps)
    return Advantages(_broadcast(centered, inputs.loss_masks))


@register_advantage_estimator("gspo", sequence_level_ratio=True)
def gspo(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """GSPO (Zheng et al. 2025, arXiv:2507.18071): the same group advantages as GRPO.

    GSPO differs in the loss, which uses one sequence-level importance ratio per sample
    (`sequence_level_ratio=True`, see `losses.sequence_log_ratio`).
    """
    return grpo(inputs, config)


@register_advantage_estimator("reinforce_plus_plus")
def reinforce_plus_plus(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): discounted token returns, whitened over the batch.

    r_t = -kl_coef * KL_t (+ reward on the last loss token);  G_t = r_t + gamma * G_{t+1};
    A = whiten(G) over all loss tokens of the batch. Needs `kl` when kl_coef != 0.
    """
    rewards = _pad(_token_rewards(inputs, config, "reinforce_plus_plus"))  # [N, L]
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)  # [N]
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + config.gamma * running
        returns[:, t] = running
    return Advantages(masked_whiten(_unpad(returns, inputs.loss_masks), inputs.loss_masks, config.whiten_eps))


@register_advantage_estimator("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """REINFORCE++-baseline (Hu 2025, arXiv:2501.03262): group-mean baseline, then batch whitening.

    A_t = whiten((r_i - mean_g r) - kl_coef * KL_t) over all loss tokens of the batch (as slime: the group
    baseline replaces the std division of GRPO). Needs `kl` when kl_coef != 0.
    """
    centered = group_centered_rewards(inputs.rewards, inputs.n_samples_per_prompt, False, config.std_eps)
    kl = _kl_or_zeros(inputs, config, "reinforce_plus_plus_baseline")
    raw = [a - config.kl_coef * k for a, k in zip(_broadcast(centered, inputs.loss_masks), kl, strict=True)]
    return Advantages(masked_whiten(raw, inputs.loss_masks, config.whiten_eps))


@register_advantage_estimator("ppo")
def ppo(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """PPO with GAE (Schulman et al. 2016, arXiv:1506.02438; PPO arXiv:1707.06347).

    r_t = -kl_coef * KL_t (+ reward on the last loss token);  delta_t = r_t + gamma * V_{t+1} - V_t with
    V after the last token = 0;  A_t = delta_t + gamma * lambd * A_{t+1};  returns = A + V (critic targets).
    Needs `values` (and `kl` when kl_coef != 0). Not whitened, as in Miles.
    """
    values = _pad(_require(inputs, "values", "ppo"))  # [N, L]
    rewards = _pad(_token_rewards(inputs, config, "ppo"))  # [N, L]
    lengths = torch.tensor([m.numel() for m in inputs.loss_masks], device=values.device)  # [N]
    advantages = torch.zeros_like(values)
    running = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)  # [N]
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        next_value = torch.where(t + 1 < lengths, next_value, 0.0)  # past a sample's end V = 0
        delta = rewards[:, t] + config.gamma * next_value - values[:, t]
        # padding positions have r = V = 0, so the running sum enters a sample's last token as 0
        running = torch.where(t < lengths, delta + config.gamma * config.lambd * running, 0.0)
        advantages[:, t] = running
    returns = _unpad(advantages + values, inputs.loss_masks)
    masked = [a * m.float() for a, m in zip(_unpad(advantages, inputs.loss_masks), inputs.loss_masks, strict=True)]
    return Advantages(masked, returns)


@register_advantage_estimator("on_policy_distillation")
def on_policy_distillation(inputs: AdvantageInputs, config: AdvantageConfig) -> Advantages:
    """On-policy distillation (Agarwal et al. 2024, GKD, arXiv:2306.13649; Thinking Machines 2025).

    A_t = log p_teacher(y_t) - log p_student(y_t), the negative per-token reverse KL: maximising A pulls the
    student towards the teacher on its own samples. Rewards are not used. Needs `log_probs` (the student's,
    from the rollout policy) and `teacher_log_probs`.
    """
    student = _require(inputs, "log_probs", "on_policy_distillation")
    teacher = _require(inputs, "teacher_log_probs", "on_policy_distillation")
    return Advantages(
        [(t.float() - s.float()) * m.float() for t, s, m in zip(teacher, student, inputs.loss_masks, strict=True)]
    )


# --- reward statistics for logging ---------------------------------------------------------------------------


@dataclass
class GroupRewardStats:
    """Per-group reward statistics (G groups) and the share of groups that carry no learning signal."""

    mean: torch.Tensor  # [G]
    std: torch.Tensor  # [G] unbiased; 0 for groups of one sample
    zero_std_fraction: float  # groups whose rewards are all equal: GRPO advantage 0, no gradient


def group_reward_stats(rewards: torch.Tensor, n_samples_per_prompt: int) -> GroupRewardStats:
    """Mean, std and the fraction of zero-variance groups of a rollout batch's rewards [N]."""
    if rewards.numel() % n_samples_per_prompt:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {n_samples_per_prompt}")
    grouped = rewards.float().view(-1, n_samples_per_prompt)  # [G, n]
    std = grouped.std(dim=1) if n_samples_per_prompt > 1 else torch.zeros_like(grouped[:, 0])
    # max == min is exact, while a float std of equal values can come out as 1e-9 instead of 0
    flat = grouped.amax(dim=1) == grouped.amin(dim=1)  # [G]
    return GroupRewardStats(mean=grouped.mean(dim=1), std=std, zero_std_fraction=flat.float().mean().item())
