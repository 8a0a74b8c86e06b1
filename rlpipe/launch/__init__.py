"""Cluster launchers generated from the resolved config: a Slurm batch script and a KubeRay RayJob manifest, each
starting a Ray cluster the size the config asks for and running `launch.py` against it (`python -m rlpipe.launch`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from rlpipe.config import Resolved

RAY_PORT = 6379  # Ray's default GCS port, overridable at submit time ($RLPIPE_RAY_PORT)


class UnsupportedLayout(ValueError):
    """A layout rlpipe's Ray placement does not run yet."""


@dataclass(frozen=True)
class ClusterShape:
    """Nodes the run needs, all alike. rlpipe's rollout manager starts its SGLang engines on its own node
    (rlpipe.cluster.ray_run.engines_first_gpu): with one trainer node, disaggregated engines share it, which then
    holds both roles' GPUs (Miles' one-node layout); with more, they take one node of their own after the trainer's."""

    nodes: int
    gpus_per_node: int
    cpus_per_node: int

    @classmethod
    def of(cls, run: Resolved, cpus_per_node: int) -> ClusterShape:
        cl, topo = run.cfg.cluster, run.topology
        per_node = 0 if topo.device == "cpu" else cl.actor_num_gpus_per_node
        if run.cfg.rollout.engine != "sglang" or cl.colocate:
            return cls(cl.actor_num_nodes, per_node, cpus_per_node)
        if cl.actor_num_nodes == 1:
            return cls(1, per_node + topo.rollout_gpus, cpus_per_node)
        if topo.rollout_gpus > per_node:
            raise UnsupportedLayout(
                f"cluster.rollout_num_gpus={topo.rollout_gpus} is more than one node of {per_node} GPUs: rlpipe starts "
                "every engine on the rollout manager's node, so the engines must fit one node (or colocate)"
            )
        return cls(cl.actor_num_nodes + 1, per_node, cpus_per_node)


def job_command(overrides: list[str]) -> str:
    """The job's own command, run on the head node against the cluster the launcher started ($RLPIPE_RAY_ADDRESS)."""
    words = ["python", "launch.py", *overrides, "cluster.backend=ray"]
    return " ".join(shlex.quote(w) for w in words) + ' "cluster.address=${RLPIPE_RAY_ADDRESS}"'
