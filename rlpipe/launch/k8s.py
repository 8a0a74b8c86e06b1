"""A KubeRay `RayJob` manifest for a resolved run (ray.io/v1): a Ray cluster of the config's shape (a head pod that
is the first node, a worker group for the rest, every pod with the node's GPUs), the job submitted to it by KubeRay
with the same overrides, and the cluster deleted when the job ends."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from rlpipe.config import Resolved
from rlpipe.launch import ClusterShape

TTL_AFTER_FINISHED_S = 600  # KubeRay keeps the finished cluster this long (logs), then deletes it


def _k8s_name(text: str) -> str:
    """An RFC 1123 name: lower case, digits and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63] or "rlpipe"


def _pod(name: str, image: str, shape: ClusterShape, memory: str) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(shape.cpus_per_node), "memory": memory}
    if shape.gpus_per_node:
        limits["nvidia.com/gpu"] = str(shape.gpus_per_node)
    container = {"name": name, "image": image, "resources": {"limits": limits, "requests": dict(limits)}}
    return {"spec": {"containers": [container]}}


def rayjob_manifest(
    run: Resolved,
    overrides: list[str],
    *,
    image: str,
    cpus_per_node: int = 16,
    memory: str = "200Gi",
    ray_version: str | None = None,
) -> str:
    shape = ClusterShape.of(run, cpus_per_node)
    start = {"num-cpus": str(shape.cpus_per_node), "num-gpus": str(shape.gpus_per_node)}
    cluster: dict[str, Any] = {
        "headGroupSpec": {"rayStartParams": dict(start), "template": _pod("ray-head", image, shape, memory)},
        "workerGroupSpecs": [],
    }
    if ray_version:
        cluster["rayVersion"] = ray_version
    workers = shape.nodes - 1
    if workers:
        cluster["workerGroupSpecs"].append(
            {
                "groupName": "nodes",
                "replicas": workers,
                "minReplicas": workers,
                "maxReplicas": workers,
                "rayStartParams": dict(start),
                "template": _pod("ray-worker", image, shape, memory),
            }
        )
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": _k8s_name(run.cfg.run_name)},
        "spec": {
            # KubeRay submits this with RAY_ADDRESS set to the new cluster, which cluster.backend=ray joins.
            "entrypoint": shlex.join(["python", "-m", "rlpipe", "train", *overrides, "cluster.backend=ray"]),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "rayClusterSpec": cluster,
        },
    }
    header = "# rlpipe: `rlpipe launcher k8s ...`; apply with `kubectl apply -f` (needs the KubeRay operator)\n"
    return header + yaml.safe_dump(manifest, sort_keys=False)
