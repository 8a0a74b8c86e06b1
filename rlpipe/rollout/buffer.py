"""Partial-rollout buffer dequeue policies: `f(cfg, rollout_id, buffer, num_samples) -> list`.

Selected by `rollout.buffer_filter_path`; the default pops first-in-first-out.
"""

from __future__ import annotations

from typing import Any


def pop_first(cfg: Any, rollout_id: int, buffer: list[Any], num_samples: int) -> list[Any]:
    """Take up to `num_samples` entries from the front of the buffer (removing them)."""
    taken = buffer[:num_samples]
    del buffer[:num_samples]
    return taken
