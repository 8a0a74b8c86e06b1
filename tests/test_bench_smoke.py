"""The benchmarks still run: each once at its smallest size (their numbers are not checked here; the speed
claims live in bench/RESULTS.md, measured back to back)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args",
    [
        ["gpu_check.sh", "--tiny", "--profile"],  # runs gpu_train.py through the device machine's wrapper
        ["vs_trl.py", "--iterations", "6", "--skip", "1"],
        ["async_overlap.py", "--rounds", "1", "--rollouts", "3", "--skip", "1", "--response-len", "8"],
        ["config_latency.py", "--runs", "1"],
        ["packing.py", "--rounds", "1", "--iters", "1", "--seqs", "2", "--seq-len", "32"],
        ["logprob_head.py", "--rounds", "1", "--iters", "1", "--tokens", "16", "--vocab", "256"],
    ],
    ids=lambda args: args[0],
)
def test_benchmark_runs(args: list[str], tmp_path: Path) -> None:
    python_dir = str(Path(sys.executable).parent)  # the wrapper calls `python3`: this one
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "OUT": str(tmp_path),
        "PATH": f"{python_dir}:{os.environ['PATH']}",
    }
    runner = ["bash"] if args[0].endswith(".sh") else [sys.executable]
    done = subprocess.run(
        [*runner, str(ROOT / "bench" / args[0]), *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    if args[0] == "gpu_check.sh":  # the log the device machine sends back
        assert "megatron rows+swiglu" in (tmp_path / "gpu_train.log").read_text()
