"""The benchmarks still run: each once at its smallest size (their numbers are not checked here; the speed
claims live in bench/RESULTS.md, measured back to back). Nothing here depends on how fast the machine is:
config_latency runs with a goal no case can meet, and must still exit 0 unless asked to --check."""

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
        ["vs_trl.py", "--iterations", "6", "--skip", "1", "--workdir", "."],  # "." is the test's tmp_path
        ["async_overlap.py", "--rounds", "1", "--rollouts", "3", "--skip", "1", "--response-len", "8"],
        ["config_latency.py", "--runs", "1", "--goal", "0"],  # every case OVER: timings alone never fail it
        ["packing.py", "--rounds", "1", "--iters", "1", "--seqs", "2", "--seq-len", "32"],
        ["weight_conversion.py", "--hidden", "96", "--layers", "2", "--ffn", "128", "--vocab", "512", "--workdir", "."],
        ["batch_planner.py", "--samples", "64", "--rounds", "1", "--budget", "4096", "--max-len", "2048", "--dp", "2"],
        ["reward_throughput.py", "--samples", "16", "--light", "16"],
        [
            "rollout_manager.py",
            "--prompts",
            "4",
            "--samples",
            "2",
            "--tokens",
            "8",
            "--rollouts",
            "2",
            "--workdir",
            ".",
        ],
        ["logprob_head.py", "--rounds", "1", "--iters", "1", "--tokens", "16", "--vocab", "256"],
        ["data_scale.py", "--small", "200", "--large", "900", "--eager-rows", "90", "--batches", "3", "--workdir", "."],
        [
            "lora_memory.py",
            "--hidden",
            "128",
            "--layers",
            "2",
            "--ffn",
            "256",
            "--vocab",
            "512",
            "--ranks",
            "4",
            "--steps",
            "1",
            "--seq-len",
            "16",
            "--workdir",
            ".",
        ],
    ],
    ids=lambda args: args[0],
)
def test_benchmark_runs(args: list[str], tmp_path: Path) -> None:
    done = run_bench(args, tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    if args[0] == "gpu_check.sh":  # the log the device machine sends back
        assert "megatron rows+swiglu" in (tmp_path / "gpu_train.log").read_text()
    if args[0] == "config_latency.py":
        assert "| OVER |" in done.stdout
    if args[0] == "lora_memory.py":  # Adam's state is the trainable parameters' (two moments each), at any scale
        assert "r=4: optimizer state / full = 0.0" in done.stdout


def test_config_latency_check_fails_on_a_missed_goal(tmp_path: Path) -> None:
    """With --check, a case over the goal (here: any, the goal is 0 s) makes the benchmark exit 1."""
    done = run_bench(["config_latency.py", "--runs", "1", "--goal", "0", "--check"], tmp_path)
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-3000:])
    assert "case(s) over the 0.0 s goal" in done.stdout


def run_bench(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """bench/<args[0]> with the rest as its arguments, run from tmp_path, with $OUT = tmp_path."""
    python_dir = str(Path(sys.executable).parent)  # the wrapper calls `python3`: this one
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "OUT": str(tmp_path),
        "PATH": f"{python_dir}:{os.environ['PATH']}",
    }
    runner = ["bash"] if args[0].endswith(".sh") else [sys.executable]
    return subprocess.run(
        [*runner, str(ROOT / "bench" / args[0]), *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
