"""Samples as plain data survive what checkpoints do to them: routed experts (MoE routing replay) included."""

from __future__ import annotations

import io

import numpy as np
import torch

from rlpipe.data.sample import Sample, Status
from rlpipe.rollout.samples_io import sample_from_dict, sample_to_dict


def test_a_sample_with_routed_experts_round_trips_through_a_weights_only_load() -> None:
    routes = np.arange(24, dtype=np.int32).reshape(4, 3, 2)
    sample = Sample(
        prompt="q", prompt_tokens=[1, 2], response_tokens=[3, 4, 5], rollout_log_probs=[-0.1, -0.2, -0.3],
        status=Status.TRUNCATED, rollout_routed_experts=routes,
    )  # fmt: skip
    buffer = io.BytesIO()
    torch.save({"buffer": [sample_to_dict(sample)]}, buffer)
    buffer.seek(0)
    back = sample_from_dict(torch.load(buffer, weights_only=True)["buffer"][0])  # as a checkpoint's common state
    assert np.array_equal(back.rollout_routed_experts, routes) and back.rollout_routed_experts.dtype == np.int32
    assert back.status is Status.TRUNCATED and back.tokens == [1, 2, 3, 4, 5]
    plain = sample_from_dict(sample_to_dict(Sample(prompt="q")))
    assert plain.rollout_routed_experts is None
