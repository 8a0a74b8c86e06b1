"""Micro-batch splitting and the padded / packed input layouts."""

from __future__ import annotations

import random

import torch

from rlpipe.train.batching import packed_micro_batch, padded_micro_batch, split_by_tokens, split_fixed


def test_split_fixed() -> None:
    assert split_fixed(5, 2) == [[0, 1], [2, 3], [4]]
    assert split_fixed(4, 4) == [[0, 1, 2, 3]]


def test_split_by_tokens_packs_best_fit_decreasing_and_isolates_long_samples() -> None:
    # In arrival order this needs three micro-batches ([5], [3, 2], [4]); longest first, best fit, two.
    assert split_by_tokens([5, 3, 2, 4], max_tokens=7) == [[0, 2], [1, 3]]
    assert split_by_tokens([2, 10, 2], max_tokens=5) == [[0, 2], [1]]  # 10 > cap: alone
    assert split_by_tokens([4, 4, 4], max_tokens=4) == [[0], [1], [2]]  # exactly full


def test_split_by_tokens_covers_every_sample_once_within_the_budget() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 60))]
        cap = rng.randint(5, 80)
        groups = split_by_tokens(lengths, cap)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in g) <= cap or len(g) == 1 for g in groups)
        assert all(g == sorted(g) for g in groups) and [g[0] for g in groups] == sorted(g[0] for g in groups)
        # Any-fit packing: no two micro-batches could have been one (a later one was opened only for a sample
        # that no earlier one had room for).
        totals = sorted(sum(lengths[i] for i in g) for g in groups if sum(lengths[i] for i in g) <= cap)
        assert len(totals) < 2 or totals[0] + totals[1] > cap


def test_padded_layout() -> None:
    mb = padded_micro_batch([[1, 2, 3], [4, 5], [6]], [1, 1, 0], [0, 1])
    assert mb.tokens.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert mb.labels.tolist() == [[2, 3, 0], [5, 0, 0]]
    assert mb.attention_mask is None
    assert [(s.row, s.offset, s.length) for s in mb.spans] == [(0, 0, 3), (1, 0, 2)]


def test_packed_layout_block_diagonal_causal() -> None:
    mb = packed_micro_batch([[1, 2], [3, 4, 5]], [1, 1], [0, 1])
    assert mb.tokens.tolist() == [[1, 2, 3, 4, 5]]
    assert mb.position_ids.tolist() == [[0, 1, 0, 1, 2]]
    allowed = ~mb.attention_mask[0, 0]
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(allowed, expected)
    assert [(s.offset, s.length) for s in mb.spans] == [(0, 2), (2, 3)]


def test_layouts_round_the_length_up_for_sequence_parallel() -> None:
    padded = padded_micro_batch([[1, 2, 3], [4, 5]], [1, 1], [0, 1], multiple_of=4)
    assert padded.tokens.tolist() == [[1, 2, 3, 0], [4, 5, 0, 0]]
    assert padded.pad_tokens == 3

    packed = packed_micro_batch([[1, 2], [3, 4, 5]], [1, 1], [0, 1], multiple_of=4)
    assert packed.tokens.tolist() == [[1, 2, 3, 4, 5, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 0, 1, 2, 0, 1, 2]]
    assert packed.pad_tokens == 3
    allowed = ~packed.attention_mask[0, 0]
    # The padding is a causal block of its own: every row attends to something, none to a sample.
    assert torch.equal(allowed[5:, 5:], torch.ones(3, 3, dtype=torch.bool).tril())
    assert not allowed[5:, :5].any() and not allowed[:5, 5:].any()
    assert allowed.any(dim=-1).all()
