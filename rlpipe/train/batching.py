"""Split a batch of token sequences into micro-batches and lay each out as model input.

Two layouts give the same log-probs:
  * padded (fixed `micro_batch_size`): rows [b, s], right-padded; Megatron's default causal mask is enough
    because padding after a sequence cannot affect its positions.
  * packed (`use_dynamic_batch_size`): one row [1, T] holding several sequences back to back, position ids
    restarting per sequence, and their boundaries `cu_seqlens` (what THD kernels take). Attention is causal
    within each sequence: the core attention runs one causal kernel per sequence (see
    `attention.SDPACoreAttention`); `attention_mask` spells the same rule as a [1, 1, T, T] block-diagonal mask
    for the paths that need one (context parallelism). No padding FLOPs, exact token cap.

Both layouts round the sequence length up to `multiple_of` when asked: sequence parallelism splits the
sequence over the TP ranks, so it must divide evenly. Padding is never scored.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from rlpipe.train.context_parallel import cp_size, my_positions


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
    cu_seqlens: torch.Tensor | None  # packed: [n + 1] int32 boundaries of the row's n sequences; None: padded rows

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """[1, 1, T, T] bool, True = masked: causal within each packed sequence. None for padded rows (plain
        causal, which padding after a sequence cannot affect)."""
        if self.cu_seqlens is None:
            return None
        lengths = self.cu_seqlens.diff().tolist()
        allowed = torch.block_diag(*(torch.ones(n, n, dtype=torch.bool).tril() for n in lengths))  # [T, T]
        return ~allowed[None, None]

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
    """Pack samples into micro-batches of at most `max_tokens` tokens, as few as best-fit decreasing finds.

    Longest first, each sample goes to the micro-batch with the least room that still fits it (a new one if none
    does); a sample longer than max_tokens goes alone. At most 11/9 of the fewest possible (plus one), so a rollout
    of mixed lengths runs fewer forward passes than packing in arrival order would (bench/batch_planner.py);
    micro-batch boundaries never change the loss (every sample's terms are summed whatever its neighbours).
    Deterministic: ties go by index, each micro-batch lists its indices ascending, and micro-batches come in order of
    their first index. O(n log n + n·m) with m micro-batches (the room list is a sorted Python list): ~25 ms for
    8,192 samples.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (tokens left, group) of the groups that can still take a sample, ascending
    for i in order:
        k = bisect_left(room, (lengths[i], -1))
        if k < len(room):
            left, g = room.pop(k)
        else:
            left, g = max_tokens, len(groups)
            groups.append([])
        groups[g].append(i)
        if left > lengths[i]:
            insort(room, (left - lengths[i], g))
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def split_to_count(groups: list[list[int]], lengths: list[int], count: int) -> list[list[int]]:
    """`groups` split further, in order, until there are `count` of them: the group with the most tokens (of
    those with two samples or more) is halved each time. Micro-batch boundaries never change the loss, so
    this only evens out how many forward passes a rank runs (ranks exchanging tokens per layer, as MoE
    expert parallelism does, must run the same number)."""
    groups = [list(g) for g in groups]
    while len(groups) < count:
        splittable = [k for k, g in enumerate(groups) if len(g) > 1]
        if not splittable:
            raise ValueError(f"{sum(map(len, groups))} samples cannot make {count} micro-batches")
        k = max(splittable, key=lambda k: sum(lengths[i] for i in groups[k]))
        half = len(groups[k]) // 2
        groups[k : k + 1] = [groups[k][:half], groups[k][half:]]
    return groups


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
    return MicroBatch(indices, spans, tokens, position_ids, cu_seqlens=None)


def packed_micro_batch(
    seqs: list[list[int]], response_starts: list[int], indices: list[int], multiple_of: int = 1
) -> MicroBatch:
    """All sequences concatenated in one row [1, T]; T is rounded up to multiple_of with a padding block that is
    a sequence of its own, attending causally to itself (a fully masked row would turn the attention softmax
    into NaN, and NaN times a zero gradient is still NaN)."""
    lengths = [len(seqs[i]) for i in indices]
    total = _round_up(sum(lengths), multiple_of)
    blocks = lengths + ([total - sum(lengths)] if total > sum(lengths) else [])
    tokens = torch.zeros(1, total, dtype=torch.long)
    # numpy reads the Python ints ~5x faster than torch.tensor of a list (bench/batch_planner.py, the layout line)
    flat = np.fromiter(chain.from_iterable(seqs[i] for i in indices), dtype=np.int64, count=sum(lengths))
    tokens[0, : sum(lengths)] = torch.from_numpy(flat)
    starts = np.cumsum([0, *blocks])  # [n + 1]
    # Each position minus the start of its sequence: positions restart at 0 per sequence.
    position_ids = torch.from_numpy(np.arange(total) - np.repeat(starts[:-1], blocks)).unsqueeze(0)  # [1, T]
    cu_seqlens = torch.from_numpy(starts.astype(np.int32))  # [n + 1]
    spans, offset = [], 0
    for i, n in zip(indices, lengths, strict=True):
        spans.append(Span(row=0, offset=offset, length=n, response_start=response_starts[i]))
        offset += n
    return MicroBatch(indices, spans, tokens, position_ids, cu_seqlens=cu_seqlens)


@dataclass(frozen=True)
class ModelInput:
    """What this rank feeds the model for one micro-batch (GPTModel's forward arguments)."""

    tokens: torch.Tensor  # [b, s] int64 (s = S / CP)
    position_ids: torch.Tensor  # [b, s]
    attention_mask: torch.Tensor | None  # [1, 1, s, S] bool, True = masked; None: causal / per packed sequence
    packed_seq_params: PackedSeqParams | None  # packed at CP=1: the sequences' boundaries (host tensors)


def model_input(mb: MicroBatch) -> ModelInput:
    """This rank's model input for `mb`.

    CP=1: padded rows use the default causal mask; a packed row passes its boundaries as PackedSeqParams in
    "sbhd" layout (megatron leaves those to the core attention; max_seqlen is the row length, which sizes the
    rotary table) so attention runs per sequence with no [T, T] mask. CP>1: this rank's positions, and the CP=1
    mask's rows for them over every key position (see context_parallel.py).
    """
    if cp_size() == 1:
        if mb.cu_seqlens is None:
            return ModelInput(mb.tokens, mb.position_ids, None, None)
        total = mb.tokens.shape[1]
        packed = PackedSeqParams(
            qkv_format="sbhd",
            cu_seqlens_q=mb.cu_seqlens,
            cu_seqlens_kv=mb.cu_seqlens,
            max_seqlen_q=total,
            max_seqlen_kv=total,
        )
        return ModelInput(mb.tokens, mb.position_ids, None, packed)
    seq_len = mb.tokens.shape[1]
    mine = my_positions(seq_len)
    mask = mb.attention_mask
    if mask is None:  # padded rows: plain causal
        mask = ~torch.ones(seq_len, seq_len, dtype=torch.bool).tril()[None, None]  # [1, 1, S, S]
    return ModelInput(mb.tokens[:, mine], mb.position_ids[:, mine], mask[:, :, mine, :], None)


def local_labels(mb: MicroBatch) -> torch.Tensor:
    """Next-token targets of this rank's positions: [b, S / CP] (all of `mb.labels` at CP=1)."""
    return mb.labels if cp_size() == 1 else mb.labels[:, my_positions(mb.tokens.shape[1])]
