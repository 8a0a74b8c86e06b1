"""Fixtures for the trainer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def world_of_one() -> Iterator[None]:
    """torch.distributed + Megatron groups for one process, torn down afterwards."""
    from rlpipe.train.distributed import init_single_process, teardown

    torch.set_num_threads(1)
    init_single_process()
    yield
    teardown()
