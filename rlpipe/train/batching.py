"""Split a batch of token sequences into micro-batches and lay each out as model input.

Two layouts give the same log-probs:
  * padded (fixed `micro_batch_size`): rows [b, s], right-padded; Megatron's default causal mask is enough
    because padding after a sequence cannot affect its positions.
  * packed (`use_dynamic_batch_size`): one row [1, T] holding several sequences back to back, position ids
    restarting per sequence and a block-diagonal causal mask. Miles packs into THD with TransformerEngine;
    without TE an explicit [1, 1, T, T] mask computes the same thing (no padding FLOPs, exact token cap).

Both layouts round the sequence length up to `multiple_of` when asked: sequence parallelism splits the
sequence over the TP ranks, so it must divide evenly. Padding is never scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Span:
    """Where one sample sits in a micro-batch: row, first position, length, and where its response starts."""

    row: int
    offset: int
    length: int
    response_start: int


@dataclass(frozen=True)
class MicroBatch:
    """Model input for one micro-batch. `indices` are positions in the caller's batch, in `spans` order."""

    indices: list[int]
    spans: list[Span]
    tokens: torch.Tensor  # [b, s] int64
    position_ids: torch.Tensor  # [b, s] int64
    attention_mask: torch.Tensor | None  # [b, 1, s, s] bool, True = masked; None = default causal mask

    @property
    def pad_tokens(self) -> int:
        """Positions that hold padding, not a sample's token: computed on but never scored."""
        return self.tokens.numel() - sum(span.length for span in self.spans)

    @property
    def labels(self) -> torch.Tensor:
        """Next-token targets: labels[:, j] = tokens[:, j + 1] (the last column is a dummy 0)."""
        return torch.nn.functional.pad(self.tokens[:, 1:], (0, 1))  # [b, s]


def split_fixed(n: int, micro_batch_size: int) -> list[list[int]]:
    """Consecutive groups of micro_batch_size indices (the last one may be smaller)."""
    return [list(range(i, min(i + micro_batch_size, n))) for i in range(0, n, micro_batch_size)]


def split_by_tokens(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Greedy, in order: add a sample to the current micro-batch while the token total stays <= max_tokens.

    A sample longer than max_tokens goes alone in its own micro-batch.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, length in enumerate(lengths):
        if current and used + length > max_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += length
    if current:
        groups.append(current)
    return groups


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_micro_batch(
    seqs: list[list[int]], response_starts: list[int], indices: list[int], multiple_of: int = 1
) -> MicroBatch:
    """Right-padded rows [b, max_len rounded up to multiple_of] (pad id 0) under the default causal mask."""
    width = _round_up(max(len(seqs[i]) for i in indices), multiple_of)
    tokens = torch.zeros(len(indices), width, dtype=torch.long)
    spans = []
    for row, i in enumerate(indices):
        tokens[row, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
        spans.append(Span(row=row, offset=0, length=len(seqs[i]), response_start=response_starts[i]))
    position_ids = torch.arange(width).unsqueeze(0).expand(len(indices), -1)
    return MicroBatch(indices, spans, tokens, position_ids, attention_mask=None)


def packed_micro_batch(
    seqs: list[list[int]], response_starts: list[int], indices: list[int], multiple_of: int = 1
) -> MicroBatch:
    """All sequences concatenated in one row [1, T] with a block-diagonal causal mask; T is rounded up to
    multiple_of with a padding block that attends causally to itself (a fully masked row would turn the
    attention softmax into NaN, and NaN times a zero gradient is still NaN)."""
    lengths = [len(seqs[i]) for i in indices]
    total = _round_up(sum(lengths), multiple_of)
    blocks = lengths + ([total - sum(lengths)] if total > sum(lengths) else [])
    tokens = torch.zeros(1, total, dtype=torch.long)
    tokens[0, : sum(lengths)] = torch.tensor([t for i in indices for t in seqs[i]], dtype=torch.long)
    position_ids = torch.cat([torch.arange(n) for n in blocks]).unsqueeze(0)  # [1, T]
    allowed = torch.block_diag(*(torch.ones(n, n, dtype=torch.bool).tril() for n in blocks))  # [T, T]
    spans, offset = [], 0
    for i, n in zip(indices, lengths, strict=True):
        spans.append(Span(row=0, offset=offset, length=n, response_start=response_starts[i]))
        offset += n
    return MicroBatch(indices, spans, tokens, position_ids, attention_mask=~allowed[None, None])
