"""Bytes per GPU and per phase, from the resolved config alone (no torch).

Trainer (one pipeline stage's rank; the plan takes the busiest stage): weights in the training dtype, gradients in
fp32 (Megatron's DDP buffer, grad_reduce_in_fp32), optimizer state (Adam: fp32 master copy under bf16 plus two
moments; the distributed optimizer shards it over data- x context-parallel ranks, experts over expert-data-parallel
ranks), the activations each layer saves for its backward (`layer_activation_bytes`: the inventory of tensors
rlpipe's local-spec layer keeps, as torch's memory profiler lists them at the step's peak in
bench/plan_vs_measured.py; sharded by TP, the replicated ones by sequence parallelism; full recompute keeps only each
chunk's input; 1F1B pipelining holds PP - stage micro-batches), and on top of them the step's largest transient:
the log-prob head's (the [tokens, V/TP] logits it saves, their gradient and two fp32 chunks of
`rlpipe.train.logprobs`) or, under recompute, one chunk of layers rebuilt for its backward. With LoRA (`lora.rank`)
the weights gain the adapters, and gradients and optimizer state are the adapters' alone.

Engine (one GPU of an SGLang engine): weights / engine TP, and the KV pool SGLang sizes at start
(model_runner.profile_max_num_token): rest = free after weights - total x (1 - mem_fraction_static), i.e.
KV = total x mem_fraction_static - weights - CUDA context; each token costs 2 x layers x kv_heads/TP x head_dim x
bytes. mem_fraction_static left unset is SGLang's own default (server_args._handle_gpu_memory_settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rlpipe.config.limits import stage_layers
from rlpipe.plan.gpus import GIB, RUNTIME_OVERHEAD, Gpu
from rlpipe.plan.params import ParamCount, count_params, lora_params_per_layer

LOGPROB_CHUNK_BYTES = (1 << 26) * 4  # rlpipe.train.logprobs.CHUNK_ELEMENTS fp32 elements per temporary
ASSUMED_PROMPT = 1024  # prompt tokens when rollout.max_prompt_len is unset (the plan says so)
LOGPROB_CHUNK_TEMPORARIES = 2  # fp32 [chunk] tensors alive at once in its backward (measured: bench/plan_vs_measured)


@dataclass(frozen=True)
class TrainMemory:
    """Bytes on one trainer GPU of pipeline stage `stage` during the train step (its peak)."""

    stage: int
    layers: int
    params: int  # parameters this rank holds
    weights: int
    grads: int
    optimizer: int
    activations: int  # saved for the backward, every micro-batch in flight
    logits: int  # the log-prob head's transient at its peak (last stage only)
    recompute: int  # one chunk of layers rebuilt for its backward (full recompute only)
    overhead: int
    critic: int = 0  # ppo: the critic's weights, gradients and optimizer on the same rank (its step comes after)

    @property
    def state(self) -> int:
        """What stays between steps: weights, gradients, optimizer, the critic's (what offload_train moves out)."""
        return self.weights + self.grads + self.optimizer + self.critic

    @property
    def total(self) -> int:
        return self.state + self.activations + self.transient + self.overhead

    @property
    def transient(self) -> int:
        """The step's largest passing allocation: the log-prob head's backward, or a recomputed chunk's."""
        return max(self.logits, self.recompute)


@dataclass(frozen=True)
class EngineMemory:
    """Bytes on one GPU of an SGLang engine, and what its KV pool holds."""

    weights: int
    kv_pool: int
    reserved: int  # what SGLang leaves outside mem_fraction_static: activations, CUDA graphs
    context: int  # CUDA context and NCCL, taken before SGLang measures free memory
    mem_fraction_static: float
    mem_fraction_derived: bool  # True when SGLang's default was used
    kv_tokens: int  # tokens the KV pool holds
    sequence_tokens: int  # prompt + max_response_len of one sample
    concurrent: int  # sequences of sequence_tokens that fit at once
    sent: int  # sequences a rollout sends to this engine

    @property
    def total(self) -> int:
        return self.weights + self.kv_pool + self.reserved + self.context


@dataclass(frozen=True)
class MemoryPlan:
    train: list[TrainMemory]  # one per pipeline stage
    engine: EngineMemory | None  # None for the in-process HF engine
    bucket: int  # bytes of one weight-sync bucket (gathered over TP)
    host: dict[str, int] = field(default_factory=dict)  # host bytes per trainer rank, by what holds them
    notes: list[str] = field(default_factory=list)

    @property
    def busiest(self) -> TrainMemory:
        return max(self.train, key=lambda t: t.total)


def dtype_bytes(cfg: dict[str, Any]) -> int:
    return 2 if cfg["perf"]["bf16"] else 4


def train_memory(cfg: dict[str, Any], topology: dict[str, Any], overhead: int = RUNTIME_OVERHEAD) -> list[TrainMemory]:
    """Each pipeline stage's trainer GPU at the peak of a train step."""
    model, pf = cfg["model"], cfg["perf"]
    tp, pp = pf["tensor_parallel"], pf["pipeline_parallel"]
    ep, etp = pf["expert_parallel"], pf["expert_tensor_parallel"] or tp
    shards = topology["data_parallel"] * pf["context_parallel"]  # Megatron's distributed optimizer: over DP x CP
    expert_dp = max(1, topology["actor_gpus"] // pp // (ep * etp))
    count = count_params(model, tp)
    a = dtype_bytes(cfg)
    split = stage_layers(
        model["num_layers"], pp, pf["decoder_first_pipeline_num_layers"], pf["decoder_last_pipeline_num_layers"]
    )
    split = split or [model["num_layers"] // pp] * pp
    tokens = micro_batch_tokens(cfg)
    state_bytes = _optimizer_bytes_per_param(cfg)
    out = []
    for stage, layers in enumerate(split):
        first, last = stage == 0, stage == pp - 1
        dense = layers * count.layer_dense // tp + layers * count.layer_replicated
        dense += (count.embedding // tp if first else 0) + (count.final_norm if last else 0)
        if last:  # the output layer; tied, a later stage keeps its own copy of the embedding
            dense += (count.output or (count.embedding if pp > 1 else 0)) // tp
        experts = layers * count.layer_experts // (ep * etp)
        params = dense + experts
        adapters = layers * lora_params_per_layer(model, cfg["lora"], tp)  # LoRA: only these train
        if adapters:
            params += adapters
            trained = adapters
            optimizer = math.ceil(adapters * state_bytes / (shards if pf["use_distributed_optimizer"] else 1))
        elif pf["use_distributed_optimizer"]:
            trained = params
            optimizer = math.ceil(dense * state_bytes / shards) + math.ceil(experts * state_bytes / expert_dp)
        else:
            trained = params
            optimizer = params * state_bytes
        in_flight = min(pp - stage, _micro_batches(cfg, topology)) if pp > 1 else 1
        critic = 0
        if cfg["algo"]["advantage_estimator"] == "ppo":  # the policy's layout with a [1, h] value head for the output
            head = (count.output or (count.embedding if pp > 1 or last else 0)) // tp if last else 0
            critic_params = params - head + (model["hidden_size"] if last else 0)
            critic = critic_params * (a + 4) + (optimizer * critic_params) // max(1, params)
        per_layer = layer_activation_bytes(cfg, count, tokens, a)
        saved, recompute = _saved_activations(cfg, layers, tokens, a, per_layer)
        logits = _logit_bytes(cfg, count, tokens, a) if last else 0
        out.append(
            TrainMemory(
                stage,
                layers,
                params,
                params * a,
                trained * 4,  # fp32 gradient buffers of what trains
                optimizer,
                in_flight * saved,
                logits,
                recompute,
                overhead,
                critic,
            )
        )
    return out


def micro_batch_tokens(cfg: dict[str, Any]) -> int:
    """Tokens of the largest micro-batch on one GPU: max_tokens_per_gpu under dynamic batching (per GPU after the
    CP split, Miles' rule), else micro_batch_size whole samples of prompt + max_response_len, split over CP."""
    pf = cfg["perf"]
    if pf["use_dynamic_batch_size"] and pf["max_tokens_per_gpu"]:
        return pf["max_tokens_per_gpu"]
    return math.ceil(pf["micro_batch_size"] * sample_tokens(cfg) / pf["context_parallel"])


def sample_tokens(cfg: dict[str, Any]) -> int:
    """prompt + max_response_len of one sample (the prompt at max_prompt_len, else at ASSUMED_PROMPT tokens), at most
    the model's positions."""
    ro = cfg["rollout"]
    tokens = (ro["max_prompt_len"] or ASSUMED_PROMPT) + (ro["max_response_len"] or 0)
    return min(tokens, cfg["model"]["max_position_embeddings"] or tokens)


def _micro_batches(cfg: dict[str, Any], topology: dict[str, Any]) -> int:
    ro, pf = cfg["rollout"], cfg["perf"]
    per_step = (ro["global_batch_size"] or 1) // max(1, topology["data_parallel"])
    if pf["use_dynamic_batch_size"]:
        return max(1, per_step)  # at most one sample per micro-batch
    return max(1, per_step // pf["micro_batch_size"])


def _optimizer_bytes_per_param(cfg: dict[str, Any]) -> int:
    """Adam: fp32 master copy under bf16 (4) + two fp32 moments (8); SGD without momentum: the master copy only."""
    master = 4 if cfg["perf"]["bf16"] else 0
    return master + (8 if cfg["optim"]["optimizer"] == "adam" else 0)


def layer_activation_bytes(cfg: dict[str, Any], count: ParamCount, tokens: int, a: int) -> int:
    """What one decoder layer saves for its backward, for `tokens` tokens of this GPU, in bytes: five hidden-size
    tensors (the two norms' inputs and normalised copies, the first linear's input), three of the query width (the
    rotated queries, the attention output and its contiguous copy for the output projection), the fused QKV output
    (its value view keeps it alive), the rotated keys, the fc1 output and three MLP-width tensors (SiLU, product,
    and the SiLU input's copy); GLM4 adds its two post-norms' tensors and partial RoPE one query-width join; MoE
    layers save the MLP part per routed copy of a token, plus the router's scores."""
    model, pf = cfg["model"], cfg["perf"]
    tp = pf["tensor_parallel"]
    sp = tp if pf["sequence_parallel"] else 1
    h = model["hidden_size"]
    head_dim = model["kv_channels"] or h // model["num_attention_heads"]
    q = model["num_attention_heads"] * head_dim
    kv = 2 * (model["num_query_groups"] or model["num_attention_heads"]) * head_dim
    post_norms = int(model["post_self_attn_layernorm"]) + int(model["post_mlp_layernorm"])
    replicated = (5 + 2 * post_norms) * h / sp  # GLM4's post-norms: each one's input and normalised copy
    attention = (3 * q + (q + kv) + kv / 2) / tp
    if model["rotary_percent"] < 1:
        attention += q / tp  # partial RoPE: the rotated part joined back to the rest
    if model["qk_layernorm"]:
        attention += (q + kv / 2) / tp  # queries and keys before their norms
    if model["num_experts"]:
        f = model["moe_ffn_hidden_size"] or model["ffn_hidden_size"]
        etp = pf["expert_tensor_parallel"] or tp
        mlp = (model["moe_router_topk"] or 1) * (h + 5 * f / etp) + 2 * model["num_experts"]
    else:
        mlp = 5 * model["ffn_hidden_size"] / tp
    return math.ceil(tokens * (replicated + attention + mlp) * a)


def _saved_activations(cfg: dict[str, Any], layers: int, tokens: int, a: int, per_layer: int) -> tuple[int, int]:
    """(saved through the step, one recomputed chunk): every layer's inventory, or under full recompute each chunk's
    input with one chunk rebuilt at a time."""
    pf = cfg["perf"]
    if pf["recompute_granularity"] != "full":
        return layers * per_layer, 0
    chunk = pf["recompute_num_layers"] or 1
    sp = pf["tensor_parallel"] if pf["sequence_parallel"] else 1
    layer_input = math.ceil(tokens * cfg["model"]["hidden_size"] / sp * a)
    return math.ceil(layers / chunk) * layer_input, min(chunk, layers) * per_layer


def _logit_bytes(cfg: dict[str, Any], count: ParamCount, tokens: int, a: int) -> int:
    """The log-prob head's backward: the [tokens, V/TP] logits it saved, their gradient, and fp32 chunk temporaries."""
    tp = cfg["perf"]["tensor_parallel"]
    logits = tokens * (count.embedding // cfg["model"]["hidden_size"]) // tp * a
    chunk = min(LOGPROB_CHUNK_BYTES, logits // a * 4)
    return 2 * logits + LOGPROB_CHUNK_TEMPORARIES * chunk


def sglang_default_mem_fraction(gpu_memory: int, tp: int) -> float:
    """SGLang's mem_fraction_static when unset (server_args._handle_gpu_memory_settings, 0.5.x): GPU memory less a
    reserve for prefill activations (chunked_prefill_size x 1.5 MiB), CUDA graphs (cuda_graph_max_bs x 2 MiB),
    512 MiB of metadata and 1 GiB per 8 TP ranks; at least 10 GiB above 60 GiB."""
    mib = gpu_memory / (1 << 20)
    tiers = ((20, 2048, 8, 8), (35, 2048, 24, 80), (60, 4096, 32, 160), (90, 8192, 256, 512), (160, 8192, 256, 512))
    chunked, graphs = 16384, 512
    for limit, prefill, small_tp, big_tp in tiers:
        if mib < limit * 1024:
            chunked, graphs = prefill, small_tp if tp < 4 else big_tp
            break
    reserved = 512 + max(chunked, 2048) * 1.5 + graphs * 2 + tp / 8 * 1024
    if mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((mib - reserved) / mib, 3)


def engine_memory(cfg: dict[str, Any], topology: dict[str, Any], gpu: Gpu) -> EngineMemory:
    """One GPU of an SGLang engine: weights, the KV pool SGLang would size, and how many samples fit at once."""
    model, sg = cfg["model"], cfg["sglang"]
    tp = sg["rollout_num_gpus_per_engine"]
    count = count_params(model, 1)
    weight_bytes = 1 if _fp8_weights(cfg) else 2
    weights = math.ceil(count.total * weight_bytes / tp)
    fraction = sg["mem_fraction_static"]
    derived = fraction is None
    if fraction is None:
        fraction = sglang_default_mem_fraction(gpu.memory, tp)
    context = RUNTIME_OVERHEAD // 2  # CUDA context and NCCL before SGLang measures free memory
    kv_pool = max(0, int(gpu.memory * fraction) - weights - context)
    head_dim = model["kv_channels"] or model["hidden_size"] // model["num_attention_heads"]
    kv_heads = max(1, (model["num_query_groups"] or model["num_attention_heads"]) // tp)
    cell = 2 * model["num_layers"] * kv_heads * head_dim * 2  # bf16 K and V per token
    kv_tokens = kv_pool // cell
    seq = sample_tokens(cfg)
    ro = cfg["rollout"]
    prompts = ro["over_sampling_batch_size"] or ro["batch_size"] or 0
    sent = math.ceil(prompts * (ro["n_samples"] or 1) / max(1, topology["num_engines"]))
    reserved = gpu.memory - int(gpu.memory * fraction)
    return EngineMemory(weights, kv_pool, reserved, context, fraction, derived, kv_tokens, seq, kv_tokens // seq, sent)


def _fp8_weights(cfg: dict[str, Any]) -> bool:
    return "fp8" in str(cfg["ckpt"]["hf_checkpoint"] or "").lower()


def memory_plan(cfg: dict[str, Any], topology: dict[str, Any], gpu: Gpu | None) -> MemoryPlan:
    train = train_memory(cfg, topology, overhead=RUNTIME_OVERHEAD if gpu else 0)
    engine = engine_memory(cfg, topology, gpu) if gpu is not None and cfg["rollout"]["engine"] == "sglang" else None
    bucket = cfg["cluster"]["weight_sync_bucket_mb"] << 20
    host = host_memory(cfg, max(train, key=lambda t: t.params))
    notes = []
    if cfg["rollout"]["max_prompt_len"] is None:
        notes.append(f"prompts counted at {ASSUMED_PROMPT} tokens (rollout.max_prompt_len is unset)")
    return MemoryPlan(train, engine, bucket, host, notes)


def host_memory(cfg: dict[str, Any], stage: TrainMemory) -> dict[str, int]:
    """Host bytes per trainer rank: the frozen reference (KL) and teacher (on-policy distillation) weights are kept
    there and swapped in for their log-probs, with the policy's weights copied out meanwhile
    (rlpipe.train.trainer._frozen_log_probs); offload_train moves the train state there between phases."""
    al, cl = cfg["algo"], cfg["cluster"]
    host = {}
    if cfg["ckpt"]["ref_load"] and (al["use_kl_loss"] or al["kl_coef"]):
        host["reference weights"] = stage.weights
    if al["advantage_estimator"] == "on_policy_distillation":
        host["teacher weights"] = stage.weights
    if host:
        host["policy copy while swapped"] = stage.weights
    if cl["offload_train"]:  # derived by the resolver (= colocate unless set)
        host["offloaded train state"] = stage.state
    return host


def human_bytes(n: float) -> str:
    """GiB with one decimal, MiB below a tenth of one."""
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.1f} MiB"
