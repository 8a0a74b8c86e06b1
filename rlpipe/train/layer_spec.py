"""Megatron's local (no TransformerEngine) GPT layer spec, extended to every family in `families.py` and to
sequence parallelism.

Stock pieces cover QK norm (`qk_layernorm`) and MoE (`num_experts`: a TopKRouter plus SequentialMLP experts).
GLM4's extra norms have no slot in megatron-core 0.16's TransformerLayer, so they ride in the bias-dropout-add
step that follows attention and the MLP: `PostNormBiasDropoutAdd` computes residual + dropout(norm(x + bias)),
which is HF's `residual + post_*_layernorm(output)` (GLM4 has no o_proj / down_proj bias). Its weight is named
`self_attn_bda.post_layernorm.weight` (HF post_self_attn_layernorm) and `mlp_bda.post_layernorm.weight`
(HF post_mlp_layernorm).

Sequence parallelism: megatron's stock torch norm (`WrappedTorchNorm`) refuses it, so every norm here is
`RMSNorm` / `HeadRMSNorm` below, which say how their weight's gradient is completed over the TP group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from rlpipe.train.attention import SDPACoreAttention
from rlpipe.train.families import Family

BiasDropoutAdd = Callable[[tuple[torch.Tensor, torch.Tensor | None], torch.Tensor, float], torch.Tensor]


class RMSNorm(torch.nn.RMSNorm):
    """torch's RMSNorm over the hidden size, built from megatron's norm arguments.

    Under sequence parallelism each TP rank normalises its own slice of the sequence, so its weight gradient
    is a partial sum; the `sequence_parallel` mark makes megatron's finalize_model_grads all-reduce it over
    the TP group (what TransformerEngine's norm does). Without sequence parallelism every TP rank sees the
    whole sequence and the gradients already agree.
    """

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_fused_options: object):
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        self.weight.sequence_parallel = config.sequence_parallel


class HeadRMSNorm(torch.nn.RMSNorm):
    """QK norm: RMSNorm over one head's channels, its weight shared by every head.

    Its input is the whole sequence even under sequence parallelism (it runs after the QKV projection has
    gathered it), so it carries no `sequence_parallel` mark; the TP ranks hold different heads, and megatron's
    finalize_model_grads sums q_layernorm / k_layernorm gradients over the TP group by name.
    """

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_fused_options: object):
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)


class PostNormBiasDropoutAdd(torch.nn.Module):
    """A bias-dropout-add that normalises the sublayer output first: residual + dropout(norm(x + bias))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.post_layernorm = RMSNorm(config, config.hidden_size, eps=config.layernorm_epsilon)

    def forward(self, training: bool, fused: bool) -> BiasDropoutAdd:
        """Called as `bda(training, fused)` by TransformerLayer, like `get_bias_dropout_add`; returns the op."""
        add = get_bias_dropout_add(training, fused)

        def normed(x_with_bias: tuple[torch.Tensor, torch.Tensor | None], residual: torch.Tensor, prob: float):
            x, bias = x_with_bias  # [s, b, h], [h] or None
            x = x if bias is None else x + bias
            return add((self.post_layernorm(x), None), residual, prob)

        return normed


def _allow_moe_without_te() -> None:
    """megatron-core 0.16's router linear reads `moe_utils.te_general_gemm`, a name bound only when
    TransformerEngine imports; without TE it raises NameError. Binding it to None selects the torch.mm path."""
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def layer_spec(family: Family, config: TransformerConfig) -> ModuleSpec:
    """The TransformerLayer spec for `family` under `config` (local modules only, CPU- and GPU-capable)."""
    if config.num_moe_experts:
        _allow_moe_without_te()
    spec = get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=False,  # SequentialMLP: one plain MLP per expert, runs anywhere
        qk_layernorm=family.qk_norm,
        normalization="RMSNorm",
    )
    attention = spec.submodules.self_attention
    head_norm = HeadRMSNorm if family.qk_norm else attention.submodules.q_layernorm  # IdentityOp without QK norm
    attention = dataclasses.replace(
        attention,
        submodules=dataclasses.replace(
            attention.submodules, core_attention=SDPACoreAttention, q_layernorm=head_norm, k_layernorm=head_norm
        ),
    )
    submodules = dataclasses.replace(
        spec.submodules, self_attention=attention, input_layernorm=RMSNorm, pre_mlp_layernorm=RMSNorm
    )
    if family.post_norms:
        post_norm = ModuleSpec(module=PostNormBiasDropoutAdd, params={"config": config})
        submodules = dataclasses.replace(submodules, self_attn_bda=post_norm, mlp_bda=post_norm)
    return dataclasses.replace(spec, submodules=submodules)


def block_spec(family: Family, config: TransformerConfig) -> TransformerBlockSubmodules:
    """This pipeline stage's layers and final norm: `layer_spec` per layer, then `RMSNorm` (megatron's default
    final norm would be its sequence-parallel-refusing torch norm)."""
    layer = layer_spec(family, config)
    return TransformerBlockSubmodules(layer_specs=[layer] * get_num_layers_to_build(config), layer_norm=RMSNorm)
