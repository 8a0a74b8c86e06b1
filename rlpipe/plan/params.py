"""Parameter counts of the GPT model rlpipe's Megatron trainer builds, from the resolved `model` group alone.

The same layer inventory as `rlpipe.train.layer_spec` / megatron's GPTModel (local spec): per decoder layer an input
RMSNorm, fused QKV (with bias when add_qkv_bias), per-head Q/K norms (qk_layernorm), the output projection, GLM4's
post-attention and post-MLP norms, the pre-MLP norm and either a SwiGLU MLP (fc1 = gate and up) or a MoE block (a
router and E experts); then the final norm; the embedding and, unless tied, the output layer, both with the
vocabulary padded as Megatron pads it (`padded_vocab_size`). Tests check the totals against the built models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def padded_vocab_size(vocab_size: int, tp_size: int, divisible_by: int = 128) -> int:
    """Megatron's padding: round the vocab up to a multiple of divisible_by * tp_size (even TP split). Torch-free,
    so the plan and the trainer (rlpipe.train.weights) share it."""
    multiple = divisible_by * tp_size
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class ParamCount:
    """Parameters by part; `*_sharded` are split over TP (attention, MLP, vocab), experts over EP x expert-TP."""

    embedding: int  # input embedding [V_pad, h] (TP-sharded by vocab rows)
    output: int  # output layer [V_pad, h], 0 when tied to the embedding
    layer_dense: int  # one layer's TP-sharded weights: QKV, output projection, a dense MLP (not experts)
    layer_replicated: int  # one layer's weights every TP rank holds whole: norms, the router
    layer_experts: int  # one layer's expert weights (all experts), split over EP x expert-TP
    final_norm: int
    num_layers: int
    active_expert_fraction: float  # top-k / experts (1.0 for a dense model): the share of expert weights a token uses

    @property
    def per_layer(self) -> int:
        return self.layer_dense + self.layer_replicated + self.layer_experts

    @property
    def total(self) -> int:
        return self.embedding + self.output + self.num_layers * self.per_layer + self.final_norm

    @property
    def active(self) -> int:
        """Parameters one token passes through (MoE: only its top-k experts); what train FLOPs scale with."""
        expert_share = round(self.num_layers * self.layer_experts * self.active_expert_fraction)
        return self.total - self.num_layers * self.layer_experts + expert_share


def count_params(model: dict[str, Any], tensor_parallel: int = 1) -> ParamCount:
    """The resolved `model` group's parameters as rlpipe's trainer builds them (vocab padded for `tensor_parallel`)."""
    h, layers = model["hidden_size"], model["num_layers"]
    heads, groups = model["num_attention_heads"], model["num_query_groups"] or model["num_attention_heads"]
    head_dim = model["kv_channels"] or h // heads
    norm = h * (2 if model["normalization"] == "LayerNorm" else 1)  # LayerNorm has a bias too
    q_width, kv_width = heads * head_dim, 2 * groups * head_dim
    qkv = h * (q_width + kv_width) + ((q_width + kv_width) if model["add_qkv_bias"] else 0)
    proj = q_width * h + (h if model["add_bias_linear"] else 0)
    head_norms = 2 * head_dim if model["qk_layernorm"] else 0
    post_norms = norm * (int(model["post_self_attn_layernorm"]) + int(model["post_mlp_layernorm"]))
    experts = model["num_experts"]
    if experts:
        f = model["moe_ffn_hidden_size"] or model["ffn_hidden_size"]
        mlp_dense, router, expert_weights = 0, experts * h, experts * _mlp(h, f, model)
        active = (model["moe_router_topk"] or 1) / experts
    else:
        mlp_dense, router, expert_weights, active = _mlp(h, model["ffn_hidden_size"], model), 0, 0, 1.0
    vocab = padded_vocab_size(model["vocab_size"], tensor_parallel)
    return ParamCount(
        embedding=vocab * h,
        output=vocab * h if model["untie_embeddings_and_output_weights"] else 0,
        layer_dense=qkv + proj + mlp_dense,
        layer_replicated=2 * norm + head_norms + post_norms + router,
        layer_experts=expert_weights,
        final_norm=norm,
        num_layers=layers,
        active_expert_fraction=active,
    )


def _mlp(h: int, f: int, model: dict[str, Any]) -> int:
    """One MLP (or one expert): fc1 (gate and up under SwiGLU) and fc2, with biases when add_bias_linear."""
    fc1_out = f if model["swiglu"] is False else 2 * f  # rlpipe's families are all SwiGLU (unset: SwiGLU)
    biases = (fc1_out + h) if model["add_bias_linear"] else 0
    return h * fc1_out + f * h + biases


def lora_params_per_layer(model: dict[str, Any], lora: dict[str, Any], tensor_parallel: int = 1) -> int:
    """One layer's LoRA adapter parameters on one TP rank (rlpipe.train.lora's sharding: a column-parallel base keeps
    A whole and B split by rows, a row-parallel one A split by columns and B whole); 0 with LoRA off."""
    from rlpipe.config.lora import projections

    r = lora["rank"]
    if not r:
        return 0
    h, tp = model["hidden_size"], tensor_parallel
    heads, groups = model["num_attention_heads"], model["num_query_groups"] or model["num_attention_heads"]
    d = model["kv_channels"] or h // heads
    f = model["ffn_hidden_size"]
    shapes = {  # projection -> (out, in, row-parallel)
        "q_proj": (heads * d, h, False), "k_proj": (groups * d, h, False), "v_proj": (groups * d, h, False),
        "o_proj": (h, heads * d, True), "gate_proj": (f, h, False), "up_proj": (f, h, False),
        "down_proj": (h, f, True),
    }  # fmt: skip
    total = 0
    for name in projections(lora["target_modules"], lora["exclude_modules"]):
        out, inp, row = shapes[name]
        total += r * (inp // tp + out) if row else r * (inp + out // tp)
    return total
