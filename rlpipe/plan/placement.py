"""Which GPU of which node holds what: trainer ranks with their Megatron coordinates and engine shards, in the order
rlpipe's Ray placement group packs them (`rlpipe.cluster.placement`: bundles fill nodes in order, PACK)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slot:
    node: int
    gpu: int  # index on its node
    trainer: str | None  # "rank 3 (tp 1, cp 0, dp 1, pp 0, ep 1)"
    engine: str | None  # "engine 0, shard 1/2"


def trainer_coordinates(rank: int, cfg: dict[str, Any], data_parallel: int) -> dict[str, int]:
    """Megatron's default rank order (tp-cp-ep-dp-pp): TP varies fastest, then CP, then DP, then PP; experts are
    laid over the same ranks as expert-TP x EP x expert-DP."""
    pf = cfg["perf"]
    tp, cp = pf["tensor_parallel"], pf["context_parallel"]
    etp = pf["expert_tensor_parallel"] or tp
    coords = {
        "tp": rank % tp,
        "cp": (rank // tp) % cp,
        "dp": (rank // (tp * cp)) % data_parallel,
        "pp": rank // (tp * cp * data_parallel),
    }
    if cfg["model"]["num_experts"]:
        coords["ep"] = (rank % (tp * cp * data_parallel)) // etp % pf["expert_parallel"]
    return coords


ONE_NODE_GPUS = 8  # the GPUs of the usual node: a one-node trainer whose engines fit beside it shares its node


def engines_beside_one_node_trainer(cluster: dict[str, Any], rollout_gpus: int) -> bool:
    """Miles' one-node layout: one trainer node and engines on GPUs of their own that fit on the same 8-GPU node
    after the trainer's. Otherwise the engines' GPUs fill nodes of their own, actor_num_gpus_per_node each."""
    per_node = cluster["actor_num_gpus_per_node"]
    return not cluster["colocate"] and cluster["actor_num_nodes"] == 1 and per_node + rollout_gpus <= ONE_NODE_GPUS


def placement(cfg: dict[str, Any], topology: dict[str, Any]) -> list[Slot]:
    """Every GPU the run uses, trainer ranks first (each node's GPUs in turn), then engines' GPUs when they are
    GPUs of their own (beside a one-node trainer, or on nodes of their own); under colocate engine e's shards share
    trainer ranks e*g .. e*g+g-1."""
    cl = cfg["cluster"]
    per_node = cl["actor_num_gpus_per_node"]
    if cfg["rollout"]["engine"] == "sglang" and engines_beside_one_node_trainer(cl, topology["rollout_gpus"]):
        per_node += topology["rollout_gpus"]
    actor = topology["actor_gpus"]
    per_engine = cfg["sglang"]["rollout_num_gpus_per_engine"] if cfg["rollout"]["engine"] == "sglang" else 1
    engines: dict[int, str] = {}
    first = 0 if cl["colocate"] else actor
    if cfg["rollout"]["engine"] == "sglang":
        for e in range(topology["num_engines"]):
            for shard in range(per_engine):
                engines[first + e * per_engine + shard] = f"engine {e}, shard {shard + 1}/{per_engine}"
    total = actor if cl["colocate"] else actor + (topology["rollout_gpus"] if engines else 0)
    slots = []
    for index in range(total):
        trainer = None
        if index < actor:
            coords = trainer_coordinates(index, cfg, topology["data_parallel"])
            trainer = f"rank {index} (" + ", ".join(f"{k} {v}" for k, v in coords.items()) + ")"
        slots.append(Slot(index // per_node, index % per_node, trainer, engines.get(index)))
    return slots
