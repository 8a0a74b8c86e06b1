"""From rewarded samples to optimizer steps: log-probs -> advantages -> loss -> step, for RL and for SFT.

The trainer knows tokens and losses; `rlpipe.algo` knows the math; this module joins them for one rollout:

    old log-probs (trainer, no grad) [+ reference log-probs with KL] [+ critic values (ppo)]
    [+ teacher log-probs (on_policy_distillation)] -> advantages over the whole rollout
    -> num_steps_per_rollout optimizer steps of global_batch_size samples each, in rollout order
       (ppo: a critic step on the same samples before each actor step, towards the GAE returns).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from megatron.core import parallel_state

from rlpipe.algo import (
    AdvantageConfig,
    AdvantageInputs,
    AlgoSettings,
    LossReduction,
    compute_advantages,
    compute_policy_loss,
    group_reward_stats,
    kl_penalty,
    sft_loss,
    value_loss,
)
from rlpipe.algo.reduce import masked
from rlpipe.config.schema import RunConfig
from rlpipe.data.sample import Sample
from rlpipe.train.critic import MegatronCritic
from rlpipe.train.step_metrics import combine_over_group, combine_steps
from rlpipe.train.trainer import MegatronTrainer


@dataclass
class TrainBatch:
    """Token-level view of a list of samples, shapes per sample i: [R_i] response tokens."""

    seqs: list[list[int]]  # prompt + response ids
    response_starts: list[int]  # index of the first response token in seqs[i]
    loss_masks: list[torch.Tensor]  # [R_i] float, 1 = trained on
    routes: list[np.ndarray] | None = None  # [len(seqs[i]) - 1, L, k] the engine's experts, to replay (R3)

    @classmethod
    def of(cls, samples: list[Sample], with_routes: bool = False) -> TrainBatch:
        masks = [torch.tensor(s.loss_mask or [1] * s.response_length, dtype=torch.float32) for s in samples]
        routes = _engine_routes(samples) if with_routes else None
        return cls([s.tokens for s in samples], [len(s.prompt_tokens) for s in samples], masks, routes)

    def select(self, indices: list[int]) -> TrainBatch:
        return TrainBatch(
            [self.seqs[i] for i in indices],
            [self.response_starts[i] for i in indices],
            [self.loss_masks[i] for i in indices],
            None if self.routes is None else [self.routes[i] for i in indices],
        )


def _engine_routes(samples: list[Sample]) -> list[np.ndarray]:
    """Every sample's routed experts from the engine (algo.use_rollout_routing_replay), or a clear error."""
    missing = [s.index for s in samples if s.rollout_routed_experts is None]
    if missing:
        raise ValueError(
            f"algo.use_rollout_routing_replay: samples {missing[:5]} carry no routed experts; the engine returns them "
            "for its own generations (HF engine, or SGLang with --enable-return-routed-experts), so a custom rollout "
            "function must fill Sample.rollout_routed_experts"
        )
    return [s.rollout_routed_experts for s in samples]  # type: ignore[misc]


def algo_settings(cfg: RunConfig) -> AlgoSettings:
    a = cfg.algo
    assert a.eps_clip_high is not None  # resolved
    return AlgoSettings(
        advantage_estimator=a.advantage_estimator,
        policy_loss=a.policy_loss,
        eps_clip=a.eps_clip,
        eps_clip_high=a.eps_clip_high,
        eps_clip_c=a.eps_clip_c,
        use_kl_loss=a.use_kl_loss,
        kl_loss_coef=a.kl_loss_coef,
        kl_loss_type=a.kl_loss_type,
        entropy_coef=a.entropy_coef,
        use_tis=a.use_tis,
        tis_clip=a.tis_clip,
        tis_clip_low=a.tis_clip_low,
        tis_level=a.tis_level,
        tis_mode=a.tis_mode,
        calculate_per_token_loss=a.calculate_per_token_loss,
    )


@dataclass
class _PerSample:
    """Per-sample tensors of one rollout ([R_i] each), indexed by rollout position."""

    old: list[torch.Tensor] | None  # None: use the training forward's own log-probs, detached
    advantages: list[torch.Tensor]
    loss_masks: list[torch.Tensor]
    ref: list[torch.Tensor] | None
    rollout: list[torch.Tensor] | None

    def pick(self, rows: list[int]) -> _PerSample:
        def take(values: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if values is None else [values[r] for r in rows]

        return _PerSample(*(take(getattr(self, f.name)) for f in fields(self)))  # type: ignore[arg-type]


def _policy_loss_fn(rows: list[int], data: _PerSample, settings: AlgoSettings, denominator: float):
    """The trainer's loss callback for one optimizer step over rollout positions `rows`."""

    def loss_fn(local: list[int], log_probs: list[torch.Tensor], entropies: list[torch.Tensor]):
        mb = data.pick([rows[i] for i in local])  # micro-batch positions -> rollout positions
        return compute_policy_loss(
            log_probs=log_probs,
            old_log_probs=mb.old if mb.old is not None else [lp.detach() for lp in log_probs],
            advantages=mb.advantages,
            loss_masks=mb.loss_masks,
            settings=settings,
            global_denominator=denominator,
            ref_log_probs=mb.ref,
            rollout_log_probs=mb.rollout,
            entropies=entropies,
        )

    return loss_fn


def rl_update(
    trainer: MegatronTrainer,
    cfg: RunConfig,
    samples: list[Sample],
    critic: MegatronCritic | None = None,
    train_actor: bool = True,
) -> dict[str, float]:
    """Train on one rollout's samples (groups consecutive); returns metrics averaged over its optimizer steps.

    With `critic` (advantage_estimator=ppo) the critic's values feed GAE and the critic takes one step per actor
    step towards the returns; `train_actor=False` trains the critic alone (Miles' num_critic_only_steps).
    """
    batch = TrainBatch.of(samples, with_routes=cfg.algo.use_rollout_routing_replay)
    algo, n_steps = cfg.algo, cfg.rollout.num_steps_per_rollout
    assert n_steps is not None and cfg.rollout.n_samples is not None  # resolved
    estimator = algo.advantage_estimator
    if (estimator == "ppo") != (critic is not None):
        raise ValueError(f"advantage_estimator={estimator!r} and a critic go together (ppo), got critic={critic}")
    distill = estimator == "on_policy_distillation"
    # The ratio's denominator: the trainer's log-probs before this rollout's first step. With one step per
    # rollout those are exactly the training forward's own log-probs, detached (TRL does the same), so the
    # extra no-grad forward is skipped; reward-level KL and distillation still need them before the advantages.
    reuse_current = n_steps == 1 and not algo.kl_coef and not distill
    old = None if reuse_current else trainer.compute_log_probs(batch.seqs, batch.response_starts, routes=batch.routes)
    needs_ref = algo.use_kl_loss or algo.kl_coef > 0
    ref = trainer.compute_ref_log_probs(batch.seqs, batch.response_starts) if needs_ref else None
    rollout_lp = _rollout_log_probs(samples, algo.use_tis)
    rewards = torch.tensor([float(s.reward or 0.0) for s in samples])  # [N]
    # Reward-level KL uses the KL loss's estimator (algo.kl_loss_type), as Miles' compute_advantages_and_returns
    kl_in_reward = (
        [kl_penalty(o, r, algo.kl_loss_type) for o, r in zip(old, ref, strict=True)]
        if algo.kl_coef and old and ref
        else None
    )
    values = critic.compute_values(batch.seqs, batch.response_starts) if critic is not None else None
    teacher = trainer.compute_teacher_log_probs(batch.seqs, batch.response_starts) if distill else None
    estimate = compute_advantages(
        estimator,
        AdvantageInputs(
            rewards,
            batch.loss_masks,
            cfg.rollout.n_samples,
            kl=kl_in_reward,
            values=values,
            log_probs=old,
            teacher_log_probs=teacher,
        ),
        AdvantageConfig(
            normalize_std=algo.grpo_std_normalization, gamma=algo.gamma, lambd=algo.lambd, kl_coef=algo.kl_coef
        ),
    )
    per_sample = _PerSample(old, estimate.advantages, batch.loss_masks, ref, rollout_lp)
    settings = algo_settings(cfg)
    actor_steps, critic_steps = [], []
    for step_rows in _optimizer_steps(len(samples), n_steps):
        # The denominator is the whole step's; this data-parallel rank trains on its share of the rows.
        reduction = LossReduction.for_global_batch(batch.select(step_rows).loss_masks, algo.calculate_per_token_loss)
        lengths = [len(seq) for seq in batch.seqs] if cfg.rollout.balance_data else None
        rows = _data_parallel_share(step_rows, lengths)
        sub = batch.select(rows)
        if critic is not None:
            assert values is not None and estimate.returns is not None  # ppo fills both
            value_fn = value_loss_fn(rows, values, estimate.returns, batch.loss_masks, reduction, algo.value_clip)
            critic_steps.append(_sum_over_data_parallel(critic.train_step(sub.seqs, sub.response_starts, value_fn)))
        if train_actor:
            loss_fn = _policy_loss_fn(rows, per_sample, settings, reduction.denominator)
            step = trainer.train_step(sub.seqs, sub.response_starts, loss_fn, routes=sub.routes)
            actor_steps.append(_sum_over_data_parallel(step))
    stats = group_reward_stats(rewards, cfg.rollout.n_samples)
    metrics = {
        **(combine_steps(actor_steps) if actor_steps else {}),
        "reward_mean": rewards.mean().item(),
        "reward_group_std_mean": stats.std.mean().item(),
        "zero_std_groups": stats.zero_std_fraction,
        "response_len_mean": sum(s.response_length for s in samples) / len(samples),
    }
    if critic_steps:
        assert values is not None and estimate.returns is not None
        metrics |= _critic_metrics(critic_steps, values, estimate.returns, batch.loss_masks)
    if teacher is not None and old is not None:
        # The per-token reverse KL(student || teacher) on the student's samples: what distillation drives to 0.
        metrics["opd_reverse_kl"] = _masked_mean([o - t for o, t in zip(old, teacher, strict=True)], batch.loss_masks)
    return metrics


def _rollout_log_probs(samples: list[Sample], required: bool) -> list[torch.Tensor] | None:
    """The engine's log-probs of every response token, for the correction (algo.use_tis) and the mismatch
    metrics; None when some sample has none (a rollout function that does not report them) and none is needed."""
    if all(len(s.rollout_log_probs) == s.response_length for s in samples):
        return [torch.tensor(s.rollout_log_probs, dtype=torch.float32) for s in samples]
    if required:
        bad = next(s for s in samples if len(s.rollout_log_probs) != s.response_length)
        raise ValueError(
            f"algo.use_tis needs the engine's log-prob of every response token, but sample {bad.index} has "
            f"{len(bad.rollout_log_probs)} for {bad.response_length} tokens: the rollout function must fill "
            "Sample.rollout_log_probs"
        )
    return None


def _optimizer_steps(n_samples: int, n_steps: int) -> list[list[int]]:
    """Rollout positions of each optimizer step: consecutive, equal slices of the rollout."""
    size = n_samples // n_steps
    return [list(range(step * size, (step + 1) * size)) for step in range(n_steps)]


def value_loss_fn(
    rows: list[int],
    old_values: list[torch.Tensor],
    returns: list[torch.Tensor],
    loss_masks: list[torch.Tensor],
    reduce: LossReduction,
    value_clip: float,
):
    """The critic's loss callback for one optimizer step over rollout positions `rows` (per-sample lists are
    indexed by rollout position): the clipped value loss (`losses.value_loss`, algo.value_clip), reduced like the
    policy loss against the whole step's denominator (algo.calculate_per_token_loss)."""

    def loss_fn(local: list[int], values: list[torch.Tensor], _entropies: list[torch.Tensor]):
        picked = [rows[i] for i in local]  # micro-batch positions -> rollout positions
        masks = [loss_masks[r] for r in picked]
        device = values[0].device
        per_token, clipped = value_loss(
            torch.cat(values),  # [T], with grad
            torch.cat([old_values[r] for r in picked]).to(device),
            torch.cat([returns[r] for r in picked]).to(device),
            value_clip=value_clip,
        )
        loss = reduce(per_token, masks)
        return loss, {"value_loss": loss.detach(), "value_clipfrac": reduce(clipped, masks)}

    return loss_fn


def _critic_metrics(
    steps: list[dict[str, float]], values: list[torch.Tensor], returns: list[torch.Tensor], masks: list[torch.Tensor]
) -> dict[str, float]:
    """Value loss and clip fraction over the critic's steps, its grad norm, and how much of the returns' variance
    the pre-update values explain: 1 - Var(R - V) / Var(R) over loss tokens (1 = perfect, <= 0 = no better than
    a constant)."""
    mean = combine_steps(steps)
    mask = torch.cat(masks).bool()  # [T]
    v, r = torch.cat(values)[mask].double(), torch.cat(returns)[mask].double()
    var_r = r.var(unbiased=False)
    explained = 1.0 - (r - v).var(unbiased=False) / var_r if var_r > 0 else torch.tensor(float("nan"))
    return {
        "value_loss": mean["value_loss"],
        "value_clipfrac": mean["value_clipfrac"],
        "critic_grad_norm": mean["grad_norm"],
        "critic_lr": mean["lr"],
        "critic_nonfinite_steps": mean["nonfinite_steps"],
        "values_mean": float(v.mean()),
        "returns_mean": float(r.mean()),
        "explained_variance": float(explained),
    }


def _masked_mean(per_token: list[torch.Tensor], masks: list[torch.Tensor]) -> float:
    mask = torch.cat(masks)
    return float(masked(torch.cat(per_token), mask).sum() / mask.sum().clamp_min(1.0))


def sft_update(
    trainer: MegatronTrainer, batch: TrainBatch, lr: float | None, per_token: bool, n_steps: int = 1
) -> dict[str, float]:
    """Supervised steps (negative log-likelihood of the trained response tokens) over `batch` in `n_steps` equal,
    consecutive slices; `lr` None follows the LR schedule (the SFT job), a value holds it fixed (the warm-up).
    Metrics are averaged over the steps, plus `sft_tokens`: trained tokens per step."""
    steps = []
    for rows in _optimizer_steps(len(batch.seqs), n_steps):
        step = batch.select(rows)
        reduction = LossReduction.for_global_batch(step.loss_masks, per_token)  # over the whole step
        shard = step.select(_data_parallel_share(list(range(len(rows)))))
        loss_fn = _sft_loss_fn(shard.loss_masks, reduction)
        metrics = _sum_over_data_parallel(trainer.train_step(shard.seqs, shard.response_starts, loss_fn, lr=lr))
        steps.append(metrics | {"sft_tokens": float(sum(m.sum() for m in step.loss_masks))})
    return combine_steps(steps)


def _sft_loss_fn(loss_masks: list[torch.Tensor], reduction: LossReduction):
    """The trainer's loss callback of one supervised step; `loss_masks` are this rank's samples'."""

    def loss_fn(local: list[int], log_probs: list[torch.Tensor], _entropies: list[torch.Tensor]):
        loss = sft_loss(torch.cat(log_probs), [loss_masks[i] for i in local], reduction)
        return loss, {"sft_loss": loss.detach()}

    return loss_fn


def eval_loss(trainer: MegatronTrainer, batch: TrainBatch) -> dict[str, float]:
    """Held-out negative log-likelihood of the trained tokens, no grad: `loss` (per token) and its `perplexity`."""
    log_probs = trainer.compute_log_probs(batch.seqs, batch.response_starts)
    assert isinstance(log_probs, list)
    nll = -_masked_mean(log_probs, batch.loss_masks)
    return {"loss": nll, "perplexity": float(np.exp(nll))}


def _data_parallel_share(rows: list[int], lengths: list[int] | None = None) -> list[int]:
    """This data-parallel rank's rows of a global batch (the config checked that global_batch_size divides by
    the data-parallel size): a contiguous slice, or with `lengths` (rollout.balance_data) the rank's part of
    a token-balanced split."""
    rank, size = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    if lengths is not None and size > 1:
        return balanced_shares(rows, lengths, size)[rank]
    share = len(rows) // size
    return rows[rank * share : (rank + 1) * share]


def balanced_shares(rows: list[int], lengths: list[int], size: int) -> list[list[int]]:
    """`size` equal-count parts of `rows` with near-equal token totals (Miles' --balance-data): longest sample
    first, each to the lightest part that still has room. The loss is unchanged (its denominator is global);
    only the slowest rank's share of tokens shrinks."""
    per = len(rows) // size
    parts: list[list[int]] = [[] for _ in range(size)]
    tokens = [0] * size
    for row in sorted(rows, key=lambda r: (-lengths[r], r)):
        k = min((k for k in range(size) if len(parts[k]) < per), key=lambda k: tokens[k])
        parts[k].append(row)
        tokens[k] += lengths[row]
    return [sorted(part) for part in parts]


def _sum_over_data_parallel(metrics: dict[str, float]) -> dict[str, float]:
    """Loss metrics are this rank's share of the global mean: combine them over the data-parallel group."""
    if parallel_state.get_data_parallel_world_size() == 1:
        return metrics
    return combine_over_group(metrics, parallel_state.get_data_parallel_group())
