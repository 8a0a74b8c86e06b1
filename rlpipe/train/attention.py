"""Core attention for megatron's local spec: torch's fused kernels in place of its baddbmm + softmax + bmm.

Three shapes of input reach it:

- padded rows under the default causal mask: one `scaled_dot_product_attention` call (flash on GPU), grouped
  key/value heads passed as they are (`enable_gqa`) wherever the chosen kernel takes them (`_grouped_heads`);
- a packed row of several sequences (dynamic batching; PackedSeqParams in "sbhd" layout with b = 1): causal
  attention within each sequence. On a GPU with flash attention this is torch's variable-length kernel
  (`torch.nn.attention.varlen`), one call for the whole row, the way TransformerEngine's THD path runs; elsewhere
  (CPU, older torch, dropout) one SDPA call per sequence. Neither builds a [T, T] mask;
- context parallel: this rank's queries against the keys and values gathered from every CP rank, under the
  explicit mask the trainer passes (see `rlpipe.train.context_parallel`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

from rlpipe.train.context_parallel import gather_keys_values


def _varlen_entry_point() -> tuple[Callable[..., torch.Tensor] | None, bool]:
    """torch's variable-length flash attention (with autograd) if it takes a scale and causality as a window
    (its first releases took neither), and whether it also asks for `enable_gqa` (later releases refuse grouped
    key/value heads without it; earlier ones pass them to flash attention, which takes them natively)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, False
    parameters = inspect.signature(varlen_attn).parameters
    if not {"scale", "window_size"} <= parameters.keys():
        return None, False
    return varlen_attn, "enable_gqa" in parameters


varlen_attn, _VARLEN_ASKS_FOR_GQA = _varlen_entry_point()

_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def varlen_kernel_applies(q: torch.Tensor, dropout: float) -> bool:
    """Whether torch's variable-length flash kernel can take `q`: CUDA, half precision, flash-capable card
    (compute capability 8.0+), a head size flash supports, and no attention dropout (the kernel has none)."""
    return (
        varlen_attn is not None
        and q.is_cuda
        and q.dtype in _FLASH_DTYPES
        and dropout == 0.0
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 256
        and torch.backends.cuda.is_flash_attention_available()
        and torch.cuda.get_device_capability(q.device) >= (8, 0)
    )


def packed_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float, dropout: float = 0.0
) -> torch.Tensor:
    """Causal attention within each packed sequence.

    q [T, heads, d], k and v [T, groups, d] (THD; heads a multiple of groups); `cu_seqlens` [n + 1] int32 on the
    host, the sequences' boundaries. Returns [T, heads, d]. Uses the varlen kernel where it applies.
    """
    if varlen_kernel_applies(q, dropout):
        return varlen_causal_attention(q, k, v, cu_seqlens, scale)
    return per_sequence_causal_attention(q, k, v, cu_seqlens, scale, dropout)


def varlen_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float
) -> torch.Tensor:
    """`packed_causal_attention` in one flash varlen call (GPU only; see `varlen_kernel_applies`)."""
    longest = int(cu_seqlens.diff().max())  # cu_seqlens is on the host: no device sync
    bounds = cu_seqlens.to(q.device, non_blocking=True)
    grouped = {"enable_gqa": k.shape[1] != q.shape[1]} if _VARLEN_ASKS_FOR_GQA else {}
    # window (-1, 0) is the kernel's spelling of causal
    return varlen_attn(q, k, v, bounds, bounds, longest, longest, scale=scale, window_size=(-1, 0), **grouped)


def per_sequence_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float, dropout: float = 0.0
) -> torch.Tensor:
    """`packed_causal_attention` as one causal SDPA call per sequence (any device, any dtype)."""
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [heads or groups, T, d]
    outputs = [
        causal_sdpa(q[None, :, a:e], k[None, :, a:e], v[None, :, a:e], scale, dropout)[0]
        for a, e in pairwise(cu_seqlens.tolist())
    ]
    return torch.cat(outputs, dim=1).transpose(0, 1)


def causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout: float = 0.0) -> torch.Tensor:
    """Causal SDPA on q [b, heads, s, d] and k, v [b, groups, s, d]."""
    k, v, grouped = _grouped_heads(q, k, v, masked=False)
    return F.scaled_dot_product_attention(
        q, k, v, dropout_p=dropout, is_causal=q.shape[2] > 1, scale=scale, enable_gqa=grouped
    )


def masked_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, dropout: float = 0.0
) -> torch.Tensor:
    """SDPA under megatron's mask [b, 1, sq, sk] (True = masked; SDPA's boolean mask is the opposite); no mask
    means full attention."""
    k, v, grouped = _grouped_heads(q, k, v, masked=mask is not None)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if mask is None else ~mask, dropout_p=dropout, scale=scale, enable_gqa=grouped
    )


def _grouped_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masked: bool
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Keys and values for an SDPA call over q's heads, and its `enable_gqa`.

    The groups go unrepeated where the kernel SDPA will pick takes them: every CPU kernel, and on GPU flash
    attention (half precision, no mask). Elsewhere they are repeated per query head: the GPU's memory-efficient
    kernel (fp32, or a mask) takes no groups, and SDPA would fall back to its math path, O(s^2) in memory.
    """
    repeat = q.shape[1] // k.shape[1]
    if repeat == 1:
        return k, v, False
    if not q.is_cuda or (q.dtype in _FLASH_DTYPES and not masked):
        return k, v, True
    return k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1), False


class SDPACoreAttention(DotProductAttention):
    """Megatron's local core attention, computed by the kernels in this module.

    Same inputs, outputs and masking rule as DotProductAttention ([s, b, heads, d] in, [s, b, hp] out; a
    boolean mask is True where attention is *not* allowed; no mask means causal). Measured on an H200 in
    DESIGN.md: swapping its unfused math for SDPA alone took a 1.5B step from 340 ms to 199 ms.

    Context parallelism, which stock DotProductAttention refuses, is handled here (module docstring).
    """

    def __init__(self, config: TransformerConfig, *args: object, **kwargs: object) -> None:
        # The parent asserts CP == 1 and reads nothing else of it: build it from a copy that says 1.
        single = copy.copy(config)
        single.context_parallel_size = 1
        super().__init__(single, *args, **kwargs)
        self.config = config

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):  # fmt: skip
        if attention_bias is not None or self.softmax_offset is not None:
            raise NotImplementedError("SDPA core attention: no attention bias or softmax offset")
        sq, b = query.shape[0], query.shape[1]
        scale = self.softmax_scale * (self.layer_number if self.config.apply_query_key_layer_scaling else 1)
        dropout = self.attention_dropout.p if self.training else 0.0
        with tensor_parallel.get_cuda_rng_tracker().fork():
            if packed_seq_params is not None:
                context = self._packed(query, key, value, packed_seq_params, scale, dropout)
            else:
                if self.config.context_parallel_size > 1:
                    if attention_mask is None:
                        raise ValueError("context parallel attention needs the explicit mask of this rank's rows")
                    key, value = gather_keys_values(key), gather_keys_values(value)  # [S, b, groups, d]
                q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads or groups, s, d]
                causal = attention_mask is None and (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
                if causal:
                    context = causal_sdpa(q, k, v, scale, dropout)
                else:
                    context = masked_sdpa(q, k, v, attention_mask, scale, dropout)
                context = context.permute(2, 0, 1, 3)  # [s, b, heads, d]
        return context.reshape(sq, b, self.hidden_size_per_partition)

    @staticmethod
    def _packed(query, key, value, packed_seq_params, scale: float, dropout: float) -> torch.Tensor:
        """One packed row [T, 1, heads or groups, d] -> [T, 1, heads, d], attended per sequence."""
        if packed_seq_params.qkv_format != "sbhd" or query.shape[1] != 1:
            raise NotImplementedError("packed input: rlpipe packs one row per micro-batch, in sbhd layout")
        q, k, v = (t.squeeze(1) for t in (query, key, value))
        return packed_causal_attention(q, k, v, packed_seq_params.cu_seqlens_q, scale, dropout).unsqueeze(1)
