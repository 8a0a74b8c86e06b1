"""The tiny main job on Ray (trainer and rollout manager as CPU actors) learns exactly as in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _rewards(tmp_path: Path, backend: str, *extra: str) -> list[float]:
    overrides = [
        f"cluster.backend={backend}", "rollout.num_rollout=12", f"run_name={backend}", f"output_dir={tmp_path}", *extra,
        f"demo.cache_dir={tmp_path / 'cache'}", "ckpt.save=null", "ckpt.load=null", "log.progress=false",
        "eval.interval=null", "eval.before_train=false",
    ]  # fmt: skip
    # Ray's socket paths must stay under 108 bytes: a short temp folder, not pytest's deep one.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *overrides], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = map(json.loads, (tmp_path / backend / "metrics.jsonl").read_text().splitlines())
    return [r["reward_mean"] for r in records if r["phase"] == "train"]


@pytest.mark.parametrize("layout", ["disaggregated", "colocated"])
def test_ray_backend_reproduces_the_in_process_run(tmp_path: Path, layout: str) -> None:
    """Disaggregated syncs weights by a gloo broadcast; colocated hands tensors over and time-slices (the
    engine releases its memory while the trainer trains)."""
    extra = ["cluster.colocate=true"] if layout == "colocated" else []
    local, on_ray = _rewards(tmp_path, "local"), _rewards(tmp_path, "ray", *extra)
    assert len(on_ray) == 12
    assert on_ray == local  # same seeds, same roles, same math: the backend changes where, not what
