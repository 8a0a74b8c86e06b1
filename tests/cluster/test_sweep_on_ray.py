"""Sweeps as Ray jobs: points admitted by the resources each needs, and a 2-point sweep on a simulated 2-node cluster
(its job server on loopback) that completes with its summary table and combined plot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from simulated import simulated_cluster

from rlpipe.sweep import admissible

ROOT = Path(__file__).resolve().parents[2]


def test_admission_by_resources_and_limit() -> None:
    capacity = {"CPU": 4.0, "GPU": 8.0}
    point = {"CPU": 2.0, "GPU": 4.0}
    assert admissible(point, [], capacity, None)
    assert admissible(point, [point], capacity, None)  # 4 CPUs, 8 GPUs: exactly full
    assert not admissible(point, [point, point], capacity, None)
    assert not admissible(point, [point], capacity, 1)  # --max-concurrent=1
    assert admissible({"CPU": 9.0}, [], capacity, None)  # alone it always starts (its job says why it cannot run)


def test_two_point_sweep_as_ray_jobs_completes_with_its_summary(tmp_path: Path) -> None:
    cluster = simulated_cluster(2, 2, job_server=True)
    try:
        args = [
            "-m", "--launcher=ray", "optim.lr=1e-3,3e-3", f"cluster.address={cluster.address}", "output_dir=sweep",
            "rollout.num_rollout=2", "log.progress=false", "eval.interval=null", "eval.before_train=false",
            "ckpt.save=null", "ckpt.load=null",
        ]  # fmt: skip
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
    finally:
        cluster.shutdown()
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "sweep done, 2 succeeded, 0 failed" in done.stdout
    summary = (tmp_path / "sweep" / "summary.md").read_text().splitlines()
    assert [row.split(" | ")[0:2] for row in summary[2:]] == [["| optim.lr=0.001", "ok"], ["| optim.lr=0.003", "ok"]]
    assert (tmp_path / "sweep" / "rewards.png").stat().st_size > 0
    for i in range(2):
        assert "rlpipe: placement:" in (tmp_path / "sweep" / str(i) / f"job-{i}.log").read_text()
