"""Simulated Ray clusters for tests and benchmarks: several raylets on this machine (ray.cluster_utils), each with
its own logical CPUs and fake GPUs, every port one the OS gives."""

from __future__ import annotations

import os
import tempfile
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
