"""A local Ray for the cluster tests: no dashboard, no auth token in the home folder, temp files in tmp."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    # On a CPU machine `num_gpus` advertises fake GPUs: placement layouts become testable here.
    ray.init(num_cpus=8, num_gpus=8, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
