"""balance_data: equal-count data-parallel shares with near-equal token totals."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rlpipe.train.update import balanced_shares


def test_hand_example_balances_what_contiguous_slices_do_not() -> None:
    lengths = [90, 80, 70, 60, 10, 20, 30, 40]  # contiguous halves: 300 vs 100 tokens
    parts = balanced_shares(list(range(8)), lengths, 2)
    totals = [sum(lengths[r] for r in part) for part in parts]
    assert sorted(r for part in parts for r in part) == list(range(8))
    assert [len(p) for p in parts] == [4, 4]
    assert totals == [200, 200], totals


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 10_000))
def test_every_row_once_equal_counts_and_a_bounded_gap(size: int, per: int, seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 200) for _ in range(size * per)]
    parts = balanced_shares(list(range(size * per)), lengths, size)
    assert sorted(r for part in parts for r in part) == list(range(size * per))
    assert all(len(part) == per for part in parts)
    totals = [sum(lengths[r] for r in part) for part in parts]
    assert max(totals) - min(totals) <= max(lengths)  # greedy longest-first keeps the gap under one sample
