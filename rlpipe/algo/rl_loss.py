"""The total RL loss of one micro-batch, assembled from the pure terms in `losses`.

    loss = PG - entropy_coef * H + kl_loss_coef * KL          (KL only with algo.use_kl_loss)
    PG   = reduce(L(ratio, A) * w_tis)                        (w_tis only with algo.use_tis)
    L    = PPO's clipped surrogate (algo.policy_loss=ppo) or CISPO's clipped-weight REINFORCE (cispo)

every term reduced per sample or per token (algo.calculate_per_token_loss) against the *global* batch's
denominator, so summing the micro-batches' losses (and metrics) gives the global-batch value exactly.
Mirrors Miles' `policy_loss_function`. One departure: with `use_kl_loss` and `kl_loss_coef == 0` the KL is
still computed and reported, but from detached inputs, so it costs no backward memory (Miles does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlpipe.algo.advantages import get_advantage_estimator
from rlpipe.algo.losses import (
    KLKind,
    TISLevel,
    TISMode,
    cispo_loss,
    kl_penalty,
    policy_loss,
    sequence_log_ratio,
    tis_weights,
    token_log_ratio,
    upcast,
)
from rlpipe.algo.mismatch import mismatch_metrics
from rlpipe.algo.reduce import LossReduction


@dataclass(frozen=True)
class AlgoSettings:
    """The `algo.*` fields the loss reads. No defaults here: the config layer owns them."""

    advantage_estimator: str  # picks the ratio level (gspo: one ratio per sequence)
    policy_loss: str  # ppo (clipped surrogate) | cispo (clipped, detached weight times log-prob)
    eps_clip: float  # lower clip: ratio >= 1 - eps_clip
    eps_clip_high: float  # upper clip: ratio <= 1 + eps_clip_high (DAPO clip-higher)
    eps_clip_c: float | None  # dual-clip bound (> 1) for negative advantages; None = off
    use_kl_loss: bool  # compute KL(pi_theta || pi_ref) against the reference model
    kl_loss_coef: float  # its weight in the loss; 0 = monitor only
    kl_loss_type: KLKind  # k1 | k2 | k3 | low_var_kl
    entropy_coef: float  # entropy bonus weight
    use_tis: bool  # truncated importance sampling against the rollout engine's log-probs
    tis_clip: float  # upper bound of the TIS weight
    tis_clip_low: float  # lower bound of the TIS weight
    tis_level: TISLevel  # token | sequence | geometric
    tis_mode: TISMode  # truncate (TIS) | mask (IcePop at token level, MIS at sequence level)
    calculate_per_token_loss: bool  # per-token instead of per-sample reduction


def compute_policy_loss(
    *,
    log_probs: list[torch.Tensor],
    old_log_probs: list[torch.Tensor],
    advantages: list[torch.Tensor],
    loss_masks: list[torch.Tensor],
    settings: AlgoSettings,
    global_denominator: float,
    ref_log_probs: list[torch.Tensor] | None = None,
    rollout_log_probs: list[torch.Tensor] | None = None,
    entropies: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The micro-batch's share of the global RL loss, and its metrics.

    Per-sample inputs are lists of n tensors [R_i]: `log_probs` (current policy, with grad), `old_log_probs`
    (policy that the advantages were computed for), `advantages`, `loss_masks`; `ref_log_probs` with
    use_kl_loss, `rollout_log_probs` (the engine's; needed with use_tis, and with them the mismatch metrics of
    `rlpipe.algo.mismatch` are reported whatever the settings), `entropies` (with grad) when an entropy bonus
    is set or the entropy should be logged. `global_denominator` is `reduce.global_denominator` of the whole
    global batch (its sample count, or its loss-token count with calculate_per_token_loss); it is an argument
    rather than a setting because it changes every step.

    Metrics are detached 0-d tensors. Means (loss, pg_loss, pg_clipfrac, ppo_kl, kl_loss, entropy,
    tis_weight_mean, tis_clipfrac, mismatch_*) are this micro-batch's share: sum them over micro-batches and ranks.
    Keys ending in _min / _max are over this micro-batch's loss tokens (combine with min / max; +inf / -inf when
    it has none).
    """
    reduce = LossReduction(per_token=settings.calculate_per_token_loss, denominator=global_denominator)
    new = torch.cat(log_probs)  # [T]
    old = torch.cat(old_log_probs).detach()  # [T]
    adv = torch.cat(advantages).detach()  # [T]
    metrics: dict[str, torch.Tensor] = {}

    if get_advantage_estimator(settings.advantage_estimator).sequence_level_ratio:
        log_ratio = sequence_log_ratio(new, old, loss_masks)  # [T], one value per sample
    else:
        log_ratio = token_log_ratio(new, old)  # [T]
    if settings.policy_loss == "cispo":
        pg_per_token, clipfrac = cispo_loss(
            new, log_ratio, adv, eps_clip=settings.eps_clip, eps_clip_high=settings.eps_clip_high
        )
    elif settings.policy_loss == "ppo":
        pg_per_token, clipfrac = policy_loss(
            log_ratio,
            adv,
            eps_clip=settings.eps_clip,
            eps_clip_high=settings.eps_clip_high,
            eps_clip_c=settings.eps_clip_c,
        )
    else:
        raise ValueError(f"unknown policy_loss {settings.policy_loss!r}; valid: ppo, cispo")
    if settings.use_tis:
        _required(rollout_log_probs, "rollout_log_probs", "use_tis")
    if rollout_log_probs is not None:
        rollout = torch.cat(rollout_log_probs).to(old.device)  # [T]
        # trainer vs engine log-probs of the same policy weights: they differ only by numerics (and routing)
        metrics |= mismatch_metrics(old, rollout, loss_masks, reduce)
        if settings.use_tis:
            tis = tis_weights(
                old,
                rollout,
                loss_masks,
                clip=settings.tis_clip,
                clip_low=settings.tis_clip_low,
                level=settings.tis_level,
                mode=settings.tis_mode,
            )
            pg_per_token = pg_per_token * tis.weights
            metrics["tis_weight_mean"] = reduce(tis.weights, loss_masks)
            metrics["tis_clipfrac"] = reduce(tis.changed, loss_masks)

    pg_loss = reduce(pg_per_token, loss_masks)
    loss = pg_loss
    metrics["pg_loss"] = pg_loss.detach()
    metrics["pg_clipfrac"] = reduce(clipfrac, loss_masks)
    # approx KL(pi_old || pi_theta) = E_old[log pi_old - log pi_theta] (k1 estimator): how far this update moved
    metrics["ppo_kl"] = reduce(-log_ratio.detach(), loss_masks)

    if entropies is not None:
        entropy = reduce(upcast(torch.cat(entropies)), loss_masks)
        loss = loss - settings.entropy_coef * entropy
        metrics["entropy"] = entropy.detach()
    elif settings.entropy_coef != 0.0:
        raise ValueError(f"entropy_coef={settings.entropy_coef} needs per-token entropies, but none were given")

    if settings.use_kl_loss:
        ref = torch.cat(_required(ref_log_probs, "ref_log_probs", "use_kl_loss"))  # [T]
        with_grad = settings.kl_loss_coef != 0.0
        kl = kl_penalty(new if with_grad else new.detach(), ref.detach(), settings.kl_loss_type)  # [T]
        kl_loss = reduce(kl, loss_masks)
        if with_grad:
            loss = loss + settings.kl_loss_coef * kl_loss
        metrics["kl_loss"] = kl_loss.detach()

    metrics["loss"] = loss.detach()
    return loss, metrics


def _required(value: list[torch.Tensor] | None, name: str, flag: str) -> list[torch.Tensor]:
    if value is None:
        raise ValueError(f"{flag} needs {name}, but none were given")
    return value
