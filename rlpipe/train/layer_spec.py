"""Megatron's local (no TransformerEngine) GPT layer spec, extended to every family in `families.py`.

Stock pieces cover QK norm (`qk_layernorm`) and MoE (`num_experts`: a TopKRouter plus SequentialMLP experts).
GLM4's extra norms have no slot in megatron-core 0.16's TransformerLayer, so they ride in the bias-dropout-add
step that follows attention and the MLP: `PostNormBiasDropoutAdd` computes residual + dropout(norm(x + bias)),
which is HF's `residual + post_*_layernorm(output)` (GLM4 has no o_proj / down_proj bias). Its weight is named
`self_attn_bda.post_layernorm.weight` (HF post_self_attn_layernorm) and `mlp_bda.post_layernorm.weight`
(HF post_mlp_layernorm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from megatron.core.transformer.transformer_config import TransformerConfig

from rlpipe.train.families import Family

BiasDropoutAdd = Callable[[tuple[torch.Tensor, torch.Tensor | None], torch.Tensor, float], torch.Tensor]


class PostNormBiasDropoutAdd(torch.nn.Module):
    """A bias-dropout-add that normalises the sublayer output first: residual + dropout(norm(x + bias))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.post_layernorm = WrappedTorchNorm(config, config.hidden_size, eps=config.layernorm_epsilon)

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
    if not family.post_norms:
        return spec
    post_norm = ModuleSpec(module=PostNormBiasDropoutAdd, params={"config": config})
    submodules = dataclasses.replace(spec.submodules, self_attn_bda=post_norm, mlp_bda=post_norm)
    return dataclasses.replace(spec, submodules=submodules)
