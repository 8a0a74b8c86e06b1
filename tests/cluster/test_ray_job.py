"""The tiny main job on Ray (trainer and rollout manager as CPU actors) learns exactly as in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from simulated import run_tiny_job, train_rewards


def _rewards(tmp_path: Path, backend: str, *extra: str) -> list[float]:
    run_tiny_job(tmp_path, backend, f"cluster.backend={backend}", "rollout.num_rollout=12", *extra)
    return train_rewards(tmp_path / backend)


@pytest.mark.parametrize("layout", ["disaggregated", "colocated"])
def test_ray_backend_reproduces_the_in_process_run(tmp_path: Path, layout: str) -> None:
    """Disaggregated syncs weights by a gloo broadcast; colocated hands tensors over and time-slices (the
    engine releases its memory while the trainer trains)."""
    extra = ["cluster.colocate=true"] if layout == "colocated" else []
    local, on_ray = _rewards(tmp_path, "local"), _rewards(tmp_path, "ray", *extra)
    assert len(on_ray) == 12
    assert on_ray == local  # same seeds, same roles, same math: the backend changes where, not what
