"""Build a Megatron-core GPTModel (local layer spec) that computes what an HF Qwen2 / Llama model computes.

The local spec (`get_gpt_layer_local_spec`) needs neither TransformerEngine nor Apex, so the same model runs
on CPU over gloo and on GPU. Every fusion is off: the fused kernels need Apex/TE. On CPU parameters are
initialised on the host (`use_cpu_initialization`) and sequence parallelism is off.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.transformer_config import TransformerConfig

from rlpipe.train.spec import TrainerSpec
from rlpipe.train.weights import padded_vocab_size

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _rope(hf_config: Any) -> tuple[float, dict[str, Any]]:
    """(rope theta, rope scaling parameters) across transformers 4 (rope_theta/rope_scaling) and 5 (rope_parameters)."""
    params = dict(getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return float(theta), params


def transformer_config_from_hf(hf_config: Any, spec: TrainerSpec) -> TransformerConfig:
    """Megatron TransformerConfig for an HF Qwen2/Llama config: GQA, RMSNorm, SwiGLU, Qwen2's qkv bias."""
    if hf_config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type={hf_config.model_type!r}: supported are {SUPPORTED_MODEL_TYPES}")
    if hf_config.hidden_act != "silu":
        raise ValueError(f"hidden_act={hf_config.hidden_act!r}: only SwiGLU (silu) MLPs are supported")
    if getattr(hf_config, "mlp_bias", False) or (hf_config.model_type == "llama" and hf_config.attention_bias):
        raise ValueError("Llama attention_bias / mlp_bias are not supported (Megatron biases every linear then)")
    on_gpu = torch.cuda.is_available()
    dtype = _DTYPES[spec.params_dtype]
    return TransformerConfig(
        num_layers=hf_config.num_hidden_layers,
        hidden_size=hf_config.hidden_size,
        ffn_hidden_size=hf_config.intermediate_size,
        num_attention_heads=hf_config.num_attention_heads,
        num_query_groups=hf_config.num_key_value_heads,
        kv_channels=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=hf_config.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=hf_config.model_type == "qwen2",  # Qwen2 biases q/k/v only; o_proj and the MLP have none
        hidden_dropout=0.0,
        attention_dropout=0.0,  # RL training uses no dropout; the rollout model has none either
        tensor_model_parallel_size=spec.tensor_parallel,
        pipeline_model_parallel_size=spec.pipeline_parallel,
        context_parallel_size=spec.context_parallel,
        sequence_parallel=spec.sequence_parallel and on_gpu and spec.tensor_parallel > 1,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=spec.params_dtype == "bf16",
        use_cpu_initialization=not on_gpu,
        # Fused kernels come from Apex / TransformerEngine, which the local spec does without.
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        recompute_granularity=spec.recompute_granularity,
        recompute_method=spec.recompute_method,
        recompute_num_layers=spec.recompute_num_layers,
    )


def build_gpt_model(hf_config: Any, config: TransformerConfig) -> GPTModel:
    """The GPTModel for `config` with HF's vocab (padded for TP), rope base and embedding tying."""
    theta, rope = _rope(hf_config)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"rope_type={rope_type!r}: supported are 'default' and 'llama3'")
    megatron_llama3 = {"original_max_position_embeddings": 8192, "low_freq_factor": 1, "high_freq_factor": 4}
    if rope_type == "llama3" and any(rope.get(k, v) != v for k, v in megatron_llama3.items()):
        # Megatron's llama3 scaling takes only the factor; it hard-codes these three (Llama 3.1's values).
        raise ValueError(f"llama3 rope scaling needs {megatron_llama3}; got {rope}")
    model = GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=padded_vocab_size(hf_config.vocab_size, config.tensor_model_parallel_size),
        max_sequence_length=hf_config.max_position_embeddings,
        share_embeddings_and_output_weights=bool(hf_config.tie_word_embeddings),
        position_embedding_type="rope",
        rotary_base=theta,
        rope_scaling=rope_type == "llama3",
        rope_scaling_factor=float(rope.get("factor", 8.0)),
    )
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    return model
