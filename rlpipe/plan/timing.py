"""Seconds per rollout from FLOPs and bytes: the train step at a stated fraction of the bf16 peak, decoding at a
stated fraction of HBM bandwidth (`rlpipe.plan.gpus`). Upper bounds: every response is taken at max_response_len."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlpipe.plan.gpus import DECODE_EFFICIENCY, TRAIN_EFFICIENCY, Gpu
from rlpipe.plan.memory import EngineMemory, sample_tokens
from rlpipe.plan.params import count_params


@dataclass(frozen=True)
class Timing:
    samples: int  # samples per rollout
    train_tokens: int  # tokens the trainer processes per rollout
    train_flops: float  # forward+backward (+ recompute) and the log-prob forwards, per rollout
    train_s: float
    decode_steps: int  # sequential decode steps per engine (waves x max_response_len)
    decode_s: float
    train_efficiency: float
    decode_efficiency: float

    @property
    def rollout_s(self) -> float:
        return self.train_s + self.decode_s

    def tokens_per_s_per_gpu(self, gpus: int) -> float:
        return self.train_tokens / self.rollout_s / gpus if self.rollout_s else 0.0


def flops_per_token(model: dict[str, Any], context: float) -> float:
    """Forward FLOPs of one token at `context` tokens of causal attention: 2 x active parameters (every matmul,
    the output layer included) + 2 x 2 x layers x q_width x context (scores and the weighted sum)."""
    count = count_params(model, 1)
    head_dim = model["kv_channels"] or model["hidden_size"] // model["num_attention_heads"]
    q_width = model["num_attention_heads"] * head_dim
    return 2 * (count.active - count.embedding) + 4 * model["num_layers"] * q_width * context


def timing(cfg: dict[str, Any], topology: dict[str, Any], gpu: Gpu, engine: EngineMemory | None) -> Timing:
    ro, pf, al = cfg["rollout"], cfg["perf"], cfg["algo"]
    seq = sample_tokens(cfg)
    samples = (ro["batch_size"] or 0) * (ro["n_samples"] or 1)
    tokens = samples * seq
    forward = tokens * flops_per_token(cfg["model"], seq / 2)
    passes = 3 + (1 if pf["recompute_granularity"] == "full" else 0)  # fwd + bwd (2x) [+ recomputed fwd]
    passes += 1  # the old policy's log-probs
    if al["use_kl_loss"] or al["kl_coef"]:
        passes += 1  # the reference's log-probs
    flops = forward * passes  # each sample is trained on once per rollout, however many optimizer steps
    train_s = flops / (topology["actor_gpus"] * gpu.bf16_flops * TRAIN_EFFICIENCY)
    response = ro["max_response_len"] or 0
    decode_steps = decode_s = 0
    if engine is not None and engine.concurrent > 0:
        waves = math.ceil(engine.sent / engine.concurrent)
        decode_steps = waves * response
        running = min(engine.sent, engine.concurrent)
        kv_read = running * (seq - response / 2) * (engine.kv_pool / max(1, engine.kv_tokens))  # mean context
        step_s = (engine.weights + kv_read) / (gpu.hbm_bandwidth * DECODE_EFFICIENCY)
        decode_s = decode_steps * step_s
    return Timing(samples, tokens, flops, train_s, decode_steps, decode_s, TRAIN_EFFICIENCY, DECODE_EFFICIENCY)
