"""Build a Megatron-core GPTModel (local layer spec) that computes what an HF model of a supported family computes.

The local spec needs neither TransformerEngine nor Apex, so the same model runs on CPU over gloo and on GPU.
Fusions are off (they need Apex/TE) except megatron's own torch.compile'd SwiGLU, a `perf` option. On CPU
parameters are initialised on the host (`use_cpu_initialization`).
Families (Qwen2, Llama, Qwen3, GLM4, Qwen3-MoE) and how they differ live in `families.py`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from rlpipe.plan.params import padded_vocab_size
from rlpipe.train.families import family_of, has_qkv_bias, rope_settings, supported_model_types
from rlpipe.train.layer_spec import block_spec
from rlpipe.train.spec import TrainerSpec

SUPPORTED_MODEL_TYPES = supported_model_types()
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _moe_fields(hf_config: Any) -> dict[str, Any]:
    """TransformerConfig fields of a Qwen3-MoE-style block: softmax router, top-k, no aux loss in the forward."""
    return {
        "num_moe_experts": hf_config.num_experts,
        "moe_ffn_hidden_size": hf_config.moe_intermediate_size,
        "moe_router_topk": hf_config.num_experts_per_tok,
        "moe_router_score_function": "softmax",
        # norm_topk_prob: softmax over the top-k logits (= renormalised top-k of the full softmax);
        # otherwise top-k of the full softmax, unnormalised, which Megatron calls pre-softmax.
        "moe_router_pre_softmax": not hf_config.norm_topk_prob,
        "moe_router_load_balancing_type": "none",  # HF's aux loss is a training add-on, not part of the logits
        "moe_aux_loss_coeff": 0.0,
        "moe_grouped_gemm": False,
    }


def transformer_config_from_hf(hf_config: Any, spec: TrainerSpec) -> TransformerConfig:
    """Megatron TransformerConfig for an HF config of a registered family (see `families.py`)."""
    family = family_of(hf_config)
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
        add_qkv_bias=has_qkv_bias(family, hf_config),
        qk_layernorm=family.qk_norm,
        rotary_interleaved=family.rotary_interleaved,
        hidden_dropout=0.0,
        attention_dropout=0.0,  # RL training uses no dropout; the rollout model has none either
        tensor_model_parallel_size=spec.tensor_parallel,
        pipeline_model_parallel_size=spec.pipeline_parallel,
        num_layers_in_first_pipeline_stage=spec.decoder_first_pipeline_num_layers,
        num_layers_in_last_pipeline_stage=spec.decoder_last_pipeline_num_layers,
        context_parallel_size=spec.context_parallel,
        expert_model_parallel_size=spec.expert_parallel,
        expert_tensor_parallel_size=spec.expert_tensor_parallel,
        sequence_parallel=spec.sequence_parallel,
        # Micro-batches differ in length (padded to their own longest sample, or packed): pipeline stages
        # exchange each activation's shape before the activation itself.
        variable_seq_lengths=spec.pipeline_parallel > 1,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=spec.params_dtype == "bf16",
        use_cpu_initialization=not on_gpu,
        # megatron's own SwiGLU kernel (torch.compile) is optional; the other fused kernels come from Apex /
        # TransformerEngine, which the local spec does without.
        bias_activation_fusion=spec.bias_swiglu_fusion,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        recompute_granularity=spec.recompute_granularity,
        recompute_method=spec.recompute_method,
        recompute_num_layers=spec.recompute_num_layers,
        # Miles' MoE token dispatcher: it takes uneven token counts per rank and variable sequence lengths
        # (pipelining); megatron rejects its default (all-gather) with variable_seq_lengths even for dense models.
        moe_token_dispatcher_type="alltoall",
        **(_moe_fields(hf_config) if family.moe else {}),
        moe_enable_routing_replay=spec.routing_replay and family.moe,
    )


def build_gpt_model(hf_config: Any, config: TransformerConfig, tie_embeddings: bool | None = None) -> GPTModel:
    """This pipeline stage's GPTModel for `config`, with HF's vocab (padded for TP), rope and embedding tying
    (`tie_embeddings` overrides the HF config's: the critic replaces the output layer, so never ties)."""
    family = family_of(hf_config)
    theta, rotary_fraction, rope = rope_settings(hf_config)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"rope_type={rope_type!r}: supported are 'default' and 'llama3'")
    megatron_llama3 = {"original_max_position_embeddings": 8192, "low_freq_factor": 1, "high_freq_factor": 4}
    if rope_type == "llama3" and any(rope.get(k, v) != v for k, v in megatron_llama3.items()):
        # Megatron's llama3 scaling takes only the factor; it hard-codes these three (Llama 3.1's values).
        raise ValueError(f"llama3 rope scaling needs {megatron_llama3}; got {rope}")
    model = GPTModel(
        config=config,
        transformer_layer_spec=block_spec(family, config),
        vocab_size=padded_vocab_size(hf_config.vocab_size, config.tensor_model_parallel_size),
        max_sequence_length=hf_config.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=bool(
            hf_config.tie_word_embeddings if tie_embeddings is None else tie_embeddings
        ),
        position_embedding_type="rope",
        rotary_percent=rotary_fraction,
        rotary_base=theta,
        rope_scaling=rope_type == "llama3",
        rope_scaling_factor=float(rope.get("factor", 8.0)),
    )
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    return model
