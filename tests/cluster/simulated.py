"""Simulated Ray clusters for tests and benchmarks: several raylets on this machine (ray.cluster_utils), each with
its own logical CPUs and fake GPUs, every port one the OS gives; and the tiny job run as a user would, on Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlpipe.rollout.sglang.process import free_ports


def simulated_cluster(nodes: int, cpus: int, gpus: int = 0, job_server: bool = False) -> Any:
    """A started `ray.cluster_utils.Cluster` of `nodes` alike nodes; with `job_server` its dashboard serves Ray's
    Jobs API on loopback (`cluster.webui_url`). Call `.shutdown()` when done."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    gcs, dashboard, agent = free_ports(3)
    head = {"num_cpus": cpus, "num_gpus": gpus, "gcs_server_port": gcs, "include_dashboard": job_server,
            "dashboard_agent_listen_port": agent}  # fmt: skip
    if job_server:
        head |= {"dashboard_port": dashboard, "dashboard_host": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus, num_gpus=gpus)
    return cluster


ROOT = Path(__file__).resolve().parents[2]


def start_tiny_job(tmp_path: Path, name: str, *overrides: str) -> subprocess.Popen[str]:
    """`launch.py` of the tiny job as `run_name=name` under tmp_path (no checkpoints, no eval, no progress bar), with
    `overrides`, started in the background (stdout and stderr piped). Ray's socket paths stay short: a temp folder
    under /tmp."""
    words = [
        f"run_name={name}", f"output_dir={tmp_path}", f"demo.cache_dir={tmp_path / 'cache'}", "ckpt.save=null",
        "ckpt.load=null", "log.progress=false", "eval.interval=null", "eval.before_train=false", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, str(ROOT / "launch.py"), *words]
    return subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_tiny_job(tmp_path: Path, name: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    """The tiny job (`start_tiny_job`) run to its end; fails the test unless it exits 0."""
    job = start_tiny_job(tmp_path, name, *overrides)
    stdout, stderr = job.communicate()
    assert job.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def train_rewards(run_dir: Path) -> list[float]:
    """The sampled reward of every train record in a run's metrics.jsonl."""
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["reward_mean"] for r in records if r["phase"] == "train"]
