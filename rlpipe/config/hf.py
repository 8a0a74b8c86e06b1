"""What a HuggingFace config.json says about the architecture, in the model group's terms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlpipe.config.files import read_json_file

# HF config.json key -> (our model field, transform)
HF_MODEL_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "num_hidden_layers": ("num_layers", int),
    "hidden_size": ("hidden_size", int),
    "intermediate_size": ("ffn_hidden_size", int),
    "num_attention_heads": ("num_attention_heads", int),
    "num_key_value_heads": ("num_query_groups", int),
    "head_dim": ("kv_channels", int),
    "vocab_size": ("vocab_size", int),
    "max_position_embeddings": ("max_position_embeddings", int),
    "rope_theta": ("rotary_base", float),
    "rms_norm_eps": ("norm_epsilon", float),
    "tie_word_embeddings": ("untie_embeddings_and_output_weights", lambda tied: not tied),
    "num_experts": ("num_experts", int),
    "num_local_experts": ("num_experts", int),  # how transformers 5 writes Qwen3-MoE's num_experts
    "num_experts_per_tok": ("moe_router_topk", int),
    "moe_intermediate_size": ("moe_ffn_hidden_size", int),
    "partial_rotary_factor": ("rotary_percent", float),
}
# Architecture facts implied by the model family rather than spelled in config.json.
_DENSE_ROPE = {"normalization": "RMSNorm", "swiglu": True, "add_bias_linear": False}
HF_FAMILY_FACTS: dict[str, dict[str, Any]] = {
    "qwen2": {**_DENSE_ROPE, "add_qkv_bias": True, "qk_layernorm": False},
    "qwen3": {**_DENSE_ROPE, "add_qkv_bias": False, "qk_layernorm": True},
    "qwen3_moe": {**_DENSE_ROPE, "add_qkv_bias": False, "qk_layernorm": True},
    "llama": {**_DENSE_ROPE, "add_qkv_bias": False, "qk_layernorm": False},
    "glm4": {
        **_DENSE_ROPE,
        "add_qkv_bias": True,
        "qk_layernorm": False,
        "rotary_interleaved": True,
        "post_self_attn_layernorm": True,
        "post_mlp_layernorm": True,
    },
}


def read_hf_config(folder: str) -> dict[str, Any] | None:
    """A HF folder's config.json as a dict; None when it is absent or unreadable (`rlpipe.config.files` says why)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    config, finding = read_json_file(path)
    return config if finding is None and isinstance(config, dict) else None


def hf_architecture(hf: dict[str, Any]) -> dict[str, Any]:
    """Our model fields as a HF config.json states them."""
    arch = {ours: fn(hf[theirs]) for theirs, (ours, fn) in HF_MODEL_KEYS.items() if hf.get(theirs) is not None}
    if "rope_theta" not in hf and isinstance(hf.get("rope_parameters"), dict):  # transformers 5 layout
        theta = hf["rope_parameters"].get("rope_theta")
        if theta is not None:
            arch["rotary_base"] = float(theta)
    if "kv_channels" not in arch and "hidden_size" in arch and "num_attention_heads" in arch:
        arch["kv_channels"] = arch["hidden_size"] // arch["num_attention_heads"]
    arch.update(HF_FAMILY_FACTS.get(hf.get("model_type", ""), {}))
    if hf.get("attention_bias") is not None:
        arch["add_qkv_bias"] = bool(hf["attention_bias"])
    return arch
