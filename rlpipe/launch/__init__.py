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
    """Nodes the run needs, all alike. rlpipe's rollout manager starts its SGLang engines on its own node, on the
    GPUs after the trainer's (rlpipe.rollout.sglang.server): disaggregated engines share the trainer's single node,
    which then holds both roles' GPUs, as in Miles' one-node examples."""

    nodes: int
    gpus_per_node: int
    cpus_per_node: int

    @classmethod
    def of(cls, run: Resolved, cpus_per_node: int) -> ClusterShape:
        cl, topo = run.cfg.cluster, run.topology
        per_node = 0 if topo.device == "cpu" else cl.actor_num_gpus_per_node
        own_engines = run.cfg.rollout.engine == "sglang" and not cl.colocate
        if own_engines and cl.actor_num_nodes > 1:
            raise UnsupportedLayout(
                f"cluster.actor_num_nodes={cl.actor_num_nodes} with SGLang engines on GPUs of their own: rlpipe starts "
                "engines on the rollout manager's node only, so multi-node runs need cluster.colocate=true for now"
            )
        return cls(cl.actor_num_nodes, per_node + (topo.rollout_gpus if own_engines else 0), cpus_per_node)


def job_command(overrides: list[str]) -> str:
    """The job's own command, run on the head node against the cluster the launcher started ($RLPIPE_RAY_ADDRESS)."""
    words = ["python", "launch.py", *overrides, "cluster.backend=ray"]
    return " ".join(shlex.quote(w) for w in words) + ' "cluster.address=${RLPIPE_RAY_ADDRESS}"'
