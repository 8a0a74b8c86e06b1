"""Context parallelism without TransformerEngine: each sequence split over the CP ranks, attention over all of it.

Layout (megatron's, which its rotary embedding already assumes): a row of S tokens is cut into 2·CP equal chunks
and CP rank r holds chunks r and 2·CP-1-r, so every rank gets the same share of causal-attention work (an early
chunk has few keys to look at, its mirror many). S must be a multiple of 2·CP; the batching pads it.

Attention (`gather_keys_values`): each rank projects Q, K, V for its own tokens; K and V are all-gathered over
the CP group and put back in sequence order, and the rank's queries attend to every key under the CP=1 mask
restricted to the rank's rows (causal, or block-diagonal when packed). This is the all-gather form of context
parallelism (the one Llama 3 was trained with): exact, one collective per layer, K/V memory O(S) per rank where
ring attention keeps O(S/CP). The gather's backward sums the K/V gradients coming from every rank's queries.

Loss (`gather_sequence`): per-token outputs (log-probs, entropies, values) are gathered back into whole rows, so
every CP rank evaluates the same loss on the same numbers and the span bookkeeping is unchanged. Its backward
keeps each rank's own slice of that (identical) gradient; megatron's DDP, which sums over DP x CP, adds the slices.
"""

from __future__ import annotations

import functools

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region


def cp_size() -> int:
    return parallel_state.get_context_parallel_world_size()


def my_positions(seq_len: int) -> torch.Tensor:
    """`local_positions` of this process's CP rank."""
    return local_positions(seq_len, cp_size(), parallel_state.get_context_parallel_rank())


def local_positions(seq_len: int, size: int, rank: int) -> torch.Tensor:
    """Positions (in sequence order) of the tokens CP rank `rank` of `size` holds: chunks rank and 2·size-1-rank."""
    if seq_len % (2 * size):
        raise ValueError(f"sequence length {seq_len} is not a multiple of 2 x context_parallel ({2 * size})")
    chunk = seq_len // (2 * size)
    first, mirror = rank * chunk, (2 * size - 1 - rank) * chunk
    return torch.cat([torch.arange(first, first + chunk), torch.arange(mirror, mirror + chunk)])


@functools.cache
def _sequence_order(seq_len: int, size: int, device: torch.device) -> torch.Tensor:
    """Index that puts rows gathered rank after rank ([rank 0's positions, rank 1's, ...]) in sequence order.
    Cached: every attention layer of every micro-batch asks for it, and on GPU it is a host-to-device copy."""
    gathered = torch.cat([local_positions(seq_len, size, r) for r in range(size)])
    return torch.argsort(gathered).to(device)


def _gather_in_sequence_order(t: torch.Tensor, sum_gradients: bool) -> torch.Tensor:
    """[S/CP, ...] of this rank -> [S, ...] in sequence order over the CP group. Backward: the gradient summed over
    the CP ranks (`sum_gradients`), or this rank's slice of it (every rank's gradient is the same)."""
    group = parallel_state.get_context_parallel_group()
    gathered = gather_from_sequence_parallel_region(t, tensor_parallel_output_grad=sum_gradients, group=group)
    return gathered.index_select(0, _sequence_order(gathered.shape[0], group.size(), t.device))


def gather_keys_values(t: torch.Tensor) -> torch.Tensor:
    """[S/CP, b, groups, d] of this rank -> [S, b, groups, d] in sequence order; backward sums over the CP ranks."""
    return _gather_in_sequence_order(t, sum_gradients=True)


def gather_sequence(t: torch.Tensor) -> torch.Tensor:
    """Per-token values [b, S/CP] of this rank -> [b, S] in sequence order, identical on every CP rank.

    Backward keeps this rank's slice of the incoming gradient: correct because every CP rank computes the same
    loss from the gathered values (see the module docstring). Identity at CP=1.
    """
    if cp_size() == 1:
        return t
    return _gather_in_sequence_order(t.transpose(0, 1).contiguous(), sum_gradients=False).transpose(0, 1)
