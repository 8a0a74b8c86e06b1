"""A sweep on a cluster, concurrent vs one point at a time: 4 points of the tiny job as Ray jobs on a local
simulated 2-node cluster (ray.cluster_utils: two raylets of 2 logical CPUs, so two points fit at once; a point takes
2: its trainer and its rollout manager), run with
`launch.py -m --launcher=ray` and again with `--max-concurrent=1`, back to back. Goal (issue 16): concurrent at most
0.6x the sequential wall time on 2 cores.

    python bench/sweep_cluster.py                      # ~4 minutes
    python bench/sweep_cluster.py --cpus-per-node 4    # all four points fit at once
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from simulated import simulated_cluster  # noqa: E402

GOAL = 0.6


def sweep(address: str, folder: Path, limit: int | None, rollouts: int) -> float:
    args = [
        "-m", "--launcher=ray", "optim.lr=1e-3,2e-3,3e-3,4e-3", f"cluster.address={address}",
        f"output_dir={folder}", f"rollout.num_rollout={rollouts}", "log.progress=false", "eval.interval=null",
        "eval.before_train=false", "ckpt.save=null", "ckpt.load=null", f"demo.cache_dir={folder.parent / 'cache'}",
        *([f"--max-concurrent={limit}"] if limit else []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per point")
    parser.add_argument("--cpus-per-node", type=int, default=2, help="logical CPUs of each simulated node")
    args = parser.parse_args()
    cluster = simulated_cluster(2, args.cpus_per_node, job_server=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sweep(cluster.address, Path(tmp) / "warm", 1, 1)  # builds the tiny model once, outside the timing
            sequential = sweep(cluster.address, Path(tmp) / "sequential", 1, args.rollouts)
            concurrent = sweep(cluster.address, Path(tmp) / "concurrent", None, args.rollouts)
    finally:
        cluster.shutdown()
    ratio = concurrent / sequential
    print(f"| 4-point sweep, tiny job, 2 simulated nodes x {args.cpus_per_node} CPUs | wall seconds |")
    print("|---|---:|")
    print(f"| one point at a time (--max-concurrent=1) | {sequential:.1f} |")
    print(f"| concurrent (admitted by resources) | {concurrent:.1f} |")
    print(f"\nconcurrent / sequential = {ratio:.2f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
