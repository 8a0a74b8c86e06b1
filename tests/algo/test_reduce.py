"""Reductions: hand-computed values, and invariance to micro-batch splits and sample order."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlpipe.algo.reduce import (
    LossReduction,
    global_denominator,
    per_sample_mean,
    per_sample_sums,
    per_token_mean,
)

# two samples: x = [1, 2, 3 | 4, 5], only token 0 of sample 0 and both tokens of sample 1 are trained
X = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
MASKS = [torch.tensor([1, 0, 0]), torch.tensor([1, 1])]


def test_per_sample_sums_by_hand():
    assert per_sample_sums(X, MASKS).tolist() == [1.0, 9.0]


def test_per_sample_mean_by_hand():
    # mean(1/1, (4+5)/2) = (1 + 4.5) / 2
    assert per_sample_mean(X, MASKS, num_samples=2).item() == pytest.approx(2.75)


def test_per_token_mean_by_hand():
    # (1 + 4 + 5) / 3 trained tokens
    assert per_token_mean(X, MASKS, num_tokens=3).item() == pytest.approx(10 / 3)


def test_global_denominators():
    assert global_denominator(MASKS, per_token=False) == 2.0
    assert global_denominator(MASKS, per_token=True) == 3.0
    # an all-masked batch still divides by at least one token
    assert global_denominator([torch.zeros(3)], per_token=True) == 1.0


def test_fully_masked_sample_contributes_zero_not_nan():
    x = torch.tensor([7.0, 7.0, 2.0])
    masks = [torch.zeros(2), torch.ones(1)]
    # sample 0 has no loss token: counts as a sample with mean 0 (its length is clamped to 1)
    assert per_sample_mean(x, masks, num_samples=2).item() == pytest.approx(1.0)


def test_empty_response_is_allowed():
    x = torch.tensor([3.0])
    masks = [torch.ones(0), torch.ones(1)]
    assert per_sample_mean(x, masks, num_samples=2).item() == pytest.approx(1.5)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="tokens"):
        per_sample_mean(X[:4], MASKS, num_samples=2)
    with pytest.raises(ValueError, match="tokens"):
        per_token_mean(X[:4], MASKS, num_tokens=3)


def test_gradient_weights_each_token_by_one_over_its_sample_length():
    x = X.clone().requires_grad_()
    per_sample_mean(x, MASKS, num_samples=2).backward()
    # d/dx = mask / (len_i * N)
    assert x.grad.tolist() == pytest.approx([0.5, 0.0, 0.0, 0.25, 0.25])


# --- properties ----------------------------------------------------------------------------------------------

samples_strategy = st.lists(
    st.lists(
        st.tuples(st.floats(-100, 100, allow_nan=False), st.integers(0, 1)),
        min_size=0,
        max_size=6,
    ),
    min_size=1,
    max_size=8,
)


def _tensors(samples):
    xs = [torch.tensor([v for v, _ in s], dtype=torch.float64) for s in samples]
    masks = [torch.tensor([m for _, m in s], dtype=torch.float64) for s in samples]
    return xs, masks


def _reference(xs, masks, per_token):
    """Plain-Python statement of Miles' two reductions over the whole batch."""
    if per_token:
        total = sum(float((x * m).sum()) for x, m in zip(xs, masks, strict=True))
        return total / max(sum(float(m.sum()) for m in masks), 1.0)
    return sum(float((x * m).sum()) / max(float(m.sum()), 1.0) for x, m in zip(xs, masks, strict=True)) / len(xs)


@settings(max_examples=150, deadline=None)
@given(samples=samples_strategy, per_token=st.booleans(), data=st.data())
def test_micro_batch_split_does_not_change_the_value(samples, per_token, data):
    xs, masks = _tensors(samples)
    reduction = LossReduction.for_global_batch(masks, per_token)
    whole = reduction(torch.cat(xs), masks).item()
    assert whole == pytest.approx(_reference(xs, masks, per_token), rel=1e-9, abs=1e-9)

    cuts = sorted(data.draw(st.lists(st.integers(0, len(xs)), max_size=4)))
    bounds = [0, *cuts, len(xs)]
    parts = 0.0
    for lo, hi in itertools.pairwise(bounds):
        if lo < hi:  # a micro-batch holds at least one sample
            parts += reduction(torch.cat(xs[lo:hi]), masks[lo:hi]).item()
    assert parts == pytest.approx(whole, rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(samples=samples_strategy, per_token=st.booleans(), data=st.data())
def test_sample_order_does_not_change_the_value(samples, per_token, data):
    xs, masks = _tensors(samples)
    order = data.draw(st.permutations(range(len(xs))))
    reduction = LossReduction.for_global_batch(masks, per_token)
    original = reduction(torch.cat(xs), masks).item()
    permuted = reduction(torch.cat([xs[i] for i in order]), [masks[i] for i in order]).item()
    assert math.isclose(original, permuted, rel_tol=1e-9, abs_tol=1e-9)
