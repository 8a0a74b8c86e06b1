"""Per-iteration time of the tiny job on Ray (trainer and rollout manager as actors) vs in-process.

    python bench/ray_overhead.py [--rollouts 60] [--repeats 2] [override ...]

Runs `launch.py` back to back, alternating in-process and Ray (the machine is shared and noisy), reads each
run's metrics.jsonl, and reports the median seconds per rollout (generate + train + sync, after 5 warm-up
rollouts), the ratio Ray / in-process, and Ray's start-up (wall time minus the loop's own time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(backend: str, rollouts: int, out: Path, cache: Path, extra: list[str]) -> tuple[float, float]:
    """(median seconds per rollout, seconds outside the rollout loop) of one launch."""
    name = f"{backend}-{time.monotonic_ns()}"
    cmd = [
        sys.executable, str(ROOT / "launch.py"), f"cluster.backend={backend}", f"rollout.num_rollout={rollouts}",
        f"run_name={name}", f"output_dir={out}", f"demo.cache_dir={cache}", "ckpt.save=null", "ckpt.load=null",
        "log.progress=false", "eval.interval=null", "eval.before_train=false", *extra,
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=out)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["phase"] == "train"]
    per_rollout = [r["time_rollout"] + r["time_train"] + r["time_sync"] for r in train]
    loop_time = sum(per_rollout)
    return statistics.median(per_rollout[5:]), wall - loop_time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollouts", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="launch.py overrides for both runs (e.g. a bigger model)")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp), Path(tmp) / "cache"
        for _ in range(args.repeats):
            for backend in ("local", "ray"):
                results[backend].append(one_run(backend, args.rollouts, out, cache, args.overrides))
    local = statistics.median(r[0] for r in results["local"])
    ray = statistics.median(r[0] for r in results["ray"])
    outside_local = statistics.median(r[1] for r in results["local"])
    outside_ray = statistics.median(r[1] for r in results["ray"])
    print(f"seconds per rollout   in-process {local:.4f}   ray {ray:.4f}   ratio ray/in-process {ray / local:.2f}")
    print(
        f"seconds outside the loop (start-up, warm-up, eval, teardown)   in-process {outside_local:.1f}   "
        f"ray {outside_ray:.1f}   ray start-up overhead {outside_ray - outside_local:.1f}"
    )


if __name__ == "__main__":
    main()
