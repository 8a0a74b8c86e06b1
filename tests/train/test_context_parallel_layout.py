"""The context-parallel sequence layout: rank r holds chunks r and 2·CP-1-r of 2·CP, which balances causal work."""

from __future__ import annotations

import pytest
import torch

from rlpipe.train.context_parallel import local_positions


def test_each_rank_holds_a_chunk_and_its_mirror() -> None:
    assert local_positions(8, 2, 0).tolist() == [0, 1, 6, 7]
    assert local_positions(8, 2, 1).tolist() == [2, 3, 4, 5]
    assert local_positions(12, 3, 1).tolist() == [2, 3, 8, 9]


@pytest.mark.parametrize(("seq_len", "size"), [(8, 2), (24, 3), (32, 4)])
def test_ranks_partition_the_sequence_with_equal_causal_work(seq_len: int, size: int) -> None:
    shares = [local_positions(seq_len, size, r) for r in range(size)]
    assert sorted(torch.cat(shares).tolist()) == list(range(seq_len))
    # Under a causal mask query position p attends to p + 1 keys: every rank does the same number of pairs.
    work = {int((share + 1).sum()) for share in shares}
    assert len(work) == 1


def test_length_must_split_into_two_chunks_per_rank() -> None:
    with pytest.raises(ValueError, match="multiple of 2 x context_parallel"):
        local_positions(10, 3, 0)
