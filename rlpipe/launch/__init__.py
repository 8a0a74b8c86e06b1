"""Cluster launchers generated from the resolved config: a Slurm batch script and a KubeRay RayJob manifest, each
starting a Ray cluster the size the config asks for and running `rlpipe train` against it (`rlpipe launcher
slurm|k8s`, or `python -m rlpipe.launch`)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from rlpipe.config import Resolved
from rlpipe.plan.placement import engines_beside_one_node_trainer

RAY_PORT = 6379  # Ray's default GCS port, overridable at submit time ($RLPIPE_RAY_PORT)


class UnsupportedLayout(ValueError):
    """A layout rlpipe's Ray placement does not run yet."""


@dataclass(frozen=True)
class ClusterShape:
    """Nodes the run needs, all alike. Ray fills nodes with the trainer ranks first, then the engines' GPUs
    (rlpipe.cluster.placement): with one trainer node whose engines fit beside it on an 8-GPU node, that one node
    holds both roles' GPUs (Miles' one-node layout); otherwise the engines take whole nodes of their own after the
    trainer's, an engine larger than a node spanning several (SGLang's --nnodes)."""

    nodes: int
    gpus_per_node: int
    cpus_per_node: int

    @classmethod
    def of(cls, run: Resolved, cpus_per_node: int) -> ClusterShape:
        cl, topo = run.cfg.cluster, run.topology
        per_node = 0 if topo.device == "cpu" else cl.actor_num_gpus_per_node
        if run.cfg.rollout.engine != "sglang" or cl.colocate:
            return cls(cl.actor_num_nodes, per_node, cpus_per_node)
        if engines_beside_one_node_trainer(cl.model_dump(), topo.rollout_gpus):
            return cls(1, per_node + topo.rollout_gpus, cpus_per_node)
        per_engine = run.cfg.sglang.rollout_num_gpus_per_engine
        if per_engine % per_node and per_node % per_engine:
            raise UnsupportedLayout(
                f"SGLang engines of {per_engine} GPUs (sglang.rollout_num_gpus_per_engine) do not tile nodes of "
                f"{per_node} GPUs (cluster.actor_num_gpus_per_node): an engine would straddle two nodes unevenly. "
                "Make one a multiple of the other."
            )
        return cls(cl.actor_num_nodes + -(-topo.rollout_gpus // per_node), per_node, cpus_per_node)


def job_command(overrides: list[str]) -> str:
    """The job's own command, run on the head node against the cluster the launcher started ($RLPIPE_RAY_ADDRESS)."""
    words = ["python", "-m", "rlpipe", "train", *overrides, "cluster.backend=ray"]
    return " ".join(shlex.quote(w) for w in words) + ' "cluster.address=${RLPIPE_RAY_ADDRESS}"'
