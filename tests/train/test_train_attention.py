"""The core-attention kernels against attention written out by hand: softmax(q k^T * scale + mask) v."""

from __future__ import annotations

import pytest
import torch

from rlpipe.train.attention import (
    causal_sdpa,
    masked_sdpa,
    packed_causal_attention,
    per_sequence_causal_attention,
    varlen_kernel_applies,
)

HEADS, GROUPS, DIM = 4, 2, 8
SCALE = DIM**-0.5


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """q [T, heads, d], k/v [T, groups, d], allowed [T, T] bool -> [T, heads, d]; each group serves heads/groups
    consecutive query heads (megatron's and HF's grouping)."""
    k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q, k) * SCALE
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return torch.einsum("hqk,khd->qhd", weights, v)


def block_causal(lengths: list[int]) -> torch.Tensor:
    """[T, T]: position i may attend to j iff both are in the same sequence and j <= i."""
    sequence = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return (sequence[:, None] == sequence[None, :]) & torch.ones(len(sequence), len(sequence)).tril().bool()


def qkv(total: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = ((total, HEADS, DIM), (total, GROUPS, DIM), (total, GROUPS, DIM))
    return tuple(torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes)


def test_packed_attention_matches_block_diagonal_reference_with_gradients() -> None:
    lengths = [5, 1, 9, 3]
    q, k, v = qkv(sum(lengths))
    cu_seqlens = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    out = per_sequence_causal_attention(q, k, v, cu_seqlens, SCALE)
    ref = reference_attention(q, k, v, block_causal(lengths))
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    ref_grads = torch.autograd.grad(ref, (q, k, v), upstream)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_packed_attention_keeps_sequences_apart() -> None:
    """Changing one sequence's keys changes no output of the others."""
    lengths = [4, 6]
    q, k, v = (t.detach() for t in qkv(sum(lengths)))
    cu_seqlens = torch.tensor([0, 4, 10], dtype=torch.int32)
    before = packed_causal_attention(q, k, v, cu_seqlens, SCALE)
    k2 = k.clone()
    k2[4:] = torch.randn_like(k2[4:])  # (a constant shift would cancel in the softmax)
    after = packed_causal_attention(q, k2, v, cu_seqlens, SCALE)
    torch.testing.assert_close(after[:4], before[:4], rtol=0, atol=0)
    assert not torch.allclose(after[4:], before[4:])


def test_causal_sdpa_with_grouped_heads_matches_reference() -> None:
    q, k, v = qkv(7, seed=1)
    out = causal_sdpa(*(t.transpose(0, 1)[None] for t in (q, k, v)), SCALE)[0].transpose(0, 1)
    torch.testing.assert_close(out, reference_attention(q, k, v, block_causal([7])))


def test_masked_sdpa_with_grouped_heads_matches_reference() -> None:
    """Megatron's mask convention (True = masked) on an arbitrary pattern, every row keeping its diagonal."""
    q, k, v = qkv(6, seed=2)
    allowed = (torch.rand(6, 6, generator=torch.Generator().manual_seed(3)) > 0.5) | torch.eye(6, dtype=torch.bool)
    out = masked_sdpa(*(t.transpose(0, 1)[None] for t in (q, k, v)), ~allowed[None, None], SCALE)[0]
    torch.testing.assert_close(out.transpose(0, 1), reference_attention(q, k, v, allowed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_kernel_is_not_chosen_off_gpu(dtype: torch.dtype) -> None:
    """Host tensors take the per-sequence path (the flash varlen kernel is CUDA-only)."""
    assert not varlen_kernel_applies(torch.zeros(2, HEADS, DIM, dtype=dtype), dropout=0.0)
