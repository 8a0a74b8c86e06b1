"""Building the trainer from the resolved config: the one place config fields become a TrainerSpec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlpipe.config.lora import projections
from rlpipe.config.schema import RunConfig
from rlpipe.train.spec import LoraSpec, TrainerSpec


def trainer_spec(cfg: RunConfig) -> TrainerSpec:
    pf, op = cfg.perf, cfg.optim
    assert cfg.ckpt.hf_checkpoint is not None and pf.sequence_parallel is not None  # resolved
    return TrainerSpec(
        hf_checkpoint=Path(cfg.ckpt.hf_checkpoint),
        tensor_parallel=pf.tensor_parallel,
        pipeline_parallel=pf.pipeline_parallel,
        decoder_first_pipeline_num_layers=pf.decoder_first_pipeline_num_layers,
        decoder_last_pipeline_num_layers=pf.decoder_last_pipeline_num_layers,
        context_parallel=pf.context_parallel,
        sequence_parallel=pf.sequence_parallel,
        expert_parallel=pf.expert_parallel,
        expert_tensor_parallel=pf.expert_tensor_parallel,
        params_dtype="bf16" if pf.bf16 else "fp32",
        micro_batch_size=pf.micro_batch_size,
        use_dynamic_batch_size=pf.use_dynamic_batch_size,
        max_tokens_per_gpu=pf.max_tokens_per_gpu,
        recompute_granularity=pf.recompute_granularity,
        recompute_method=pf.recompute_method,
        recompute_num_layers=pf.recompute_num_layers,
        bias_swiglu_fusion=pf.bias_swiglu_fusion,
        optimizer=op.optimizer,
        lr=op.lr,
        min_lr=op.min_lr,
        lr_decay_style=op.lr_decay_style,
        lr_warmup_iters=op.lr_warmup_iters,
        lr_decay_iters=op.lr_decay_iters,
        weight_decay=op.weight_decay,
        adam_beta1=op.adam_beta1,
        adam_beta2=op.adam_beta2,
        adam_eps=op.adam_eps,
        sgd_momentum=0.0,
        clip_grad=op.clip_grad,
        use_distributed_optimizer=pf.use_distributed_optimizer,
        seed=cfg.seed,
        temperature=cfg.rollout.temperature or 1.0,  # greedy rollouts (0) score log-probs at temperature 1
        routing_replay=cfg.algo.use_rollout_routing_replay,
        lora=lora_spec(cfg),
    )


def lora_spec(cfg: RunConfig) -> LoraSpec | None:
    lo = cfg.lora
    if not lo.rank:
        return None
    return LoraSpec(lo.rank, lo.alpha, lo.dropout, projections(lo.target_modules, lo.exclude_modules))


def critic_spec(cfg: RunConfig) -> TrainerSpec:
    """The PPO critic's spec: the policy's layout and schedule at its own learning rate (optim.critic_lr)."""
    lr = cfg.optim.critic_lr
    assert lr is not None  # resolved for ppo
    # replay is the policy's only; so is LoRA (refused with ppo at config time)
    return dataclasses.replace(trainer_spec(cfg), lr=lr, routing_replay=False, lora=None)
