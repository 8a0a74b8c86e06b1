"""Partial-rollout buffer dequeue policies: `f(cfg, rollout_id, buffer, num_samples) -> list of groups`.

The buffer (`RolloutSource.buffer`) holds whole groups (lists of `Sample`) whose generation was cut short or
that were surplus to an earlier rollout; each sample's `metadata["start_rollout_id"]` says which rollout
launched it, enough for a policy that evicts stale groups. Selected by `rollout.buffer_filter_path`; the
default pops first-in-first-out, as Miles does.
"""

from __future__ import annotations

from typing import Any


def pop_first(cfg: Any, rollout_id: int, buffer: list[Any], num_samples: int) -> list[Any]:
    """Take up to `num_samples` groups from the front of the buffer (removing them)."""
    taken = buffer[:num_samples]
    del buffer[:num_samples]
    return taken
