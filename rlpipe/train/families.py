"""Model families the Megatron trainer can build from an HF config, keyed by `config.model_type`.

One `Family` record per architecture says how it departs from the Llama baseline (GQA, RMSNorm, SwiGLU,
rotate-half RoPE). `model.py` reads it to fill the TransformerConfig and layer spec; `weights.py` reads it to
map HF tensor names. Adding a family is one entry here plus, if it brings a new tensor, its name mapping.

    qwen2      q/k/v biases (always)
    llama      Llama 2/3, llama3 rope scaling
    qwen3      per-head RMSNorm on q and k before RoPE (QK norm), no biases
    glm4       q/k/v biases, fused gate_up_proj, partial (0.5) interleaved RoPE, post-attention and post-MLP norms
    qwen3_moe  Qwen3 attention + a top-k softmax router over SwiGLU experts (no shared expert)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """How one HF architecture maps onto Megatron's GPT layer (all False = Llama)."""

    model_type: str
    qkv_bias_always: bool = False  # Qwen2: q/k/v biases whatever attention_bias says
    qk_norm: bool = False  # q_norm / k_norm over each head (Qwen3)
    post_norms: bool = False  # GLM4: RMSNorm on the attention output and on the MLP output, before each residual add
    fused_gate_up: bool = False  # GLM4 stores mlp.gate_up_proj = cat(gate, up) instead of gate_proj / up_proj
    rotary_interleaved: bool = False  # GLM4 rotates pairs (x0, x1), (x2, x3).. instead of the two halves
    o_proj_bias_follows_attention_bias: bool = True  # Llama/Qwen3: attention_bias also biases o_proj; GLM4: not
    moe: bool = False  # every decoder layer's MLP is a mixture of experts (Qwen3-MoE with decoder_sparse_step 1)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family; a model_type can be registered once."""
    if family.model_type in _FAMILIES:
        raise ValueError(f"model family {family.model_type!r} is already registered")
    _FAMILIES[family.model_type] = family
    return family


register(Family("qwen2", qkv_bias_always=True))
register(Family("llama"))
register(Family("qwen3", qk_norm=True))
register(
    Family(
        "glm4", post_norms=True, fused_gate_up=True, rotary_interleaved=True, o_proj_bias_follows_attention_bias=False
    )
)
register(Family("qwen3_moe", qk_norm=True, moe=True))


def supported_model_types() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def family_of(hf_config: Any) -> Family:
    """The registered family of an HF config; refuses unknown types and variants Megatron cannot express."""
    family = _FAMILIES.get(hf_config.model_type)
    if family is None:
        raise ValueError(f"model_type={hf_config.model_type!r}: supported are {supported_model_types()}")
    if hf_config.hidden_act != "silu":
        raise ValueError(f"hidden_act={hf_config.hidden_act!r}: only SwiGLU (silu) MLPs are supported")
    if getattr(hf_config, "mlp_bias", False):
        raise ValueError("mlp_bias is not supported (Megatron's add_bias_linear would also bias o_proj)")
    if family.o_proj_bias_follows_attention_bias and getattr(hf_config, "attention_bias", False):
        raise ValueError(
            f"{family.model_type} with attention_bias biases o_proj too; Megatron can bias q/k/v only "
            "(add_qkv_bias) or every linear (add_bias_linear)"
        )
    if family.moe:
        dense = list(getattr(hf_config, "mlp_only_layers", None) or [])
        if dense or getattr(hf_config, "decoder_sparse_step", 1) != 1:
            raise ValueError(
                f"mlp_only_layers={dense}, decoder_sparse_step={hf_config.decoder_sparse_step}: "
                "only all-MoE layer stacks are supported"
            )
    return family


def has_qkv_bias(family: Family, hf_config: Any) -> bool:
    return family.qkv_bias_always or bool(getattr(hf_config, "attention_bias", False))


def rope_settings(hf_config: Any) -> tuple[float, float, dict[str, Any]]:
    """(theta, rotary fraction of the head dim, rope parameters) across transformers 4 and 5 config styles."""
    params = dict(getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    fraction = params.get("partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", 1.0))
    return float(theta), float(fraction), params
