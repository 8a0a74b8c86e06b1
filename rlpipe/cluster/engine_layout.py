"""Which SGLang server process runs where: each engine's GPUs (its bundles of the placement group) grouped by node.

An engine whose `sglang.rollout_num_gpus_per_engine` GPUs sit on one node is one server process there. An engine
larger than a node spans several: one process per node, all launched with SGLang's `--nnodes N --node-rank k
--dist-init-addr HOST:PORT` (HOST the node of node rank 0, which alone serves HTTP); SGLang splits its tensor-parallel
ranks evenly over the nodes, so each node must hold the same number of the engine's GPUs.

Each process sees exactly its GPUs (CUDA_VISIBLE_DEVICES = the GPU ids Ray gave those bundles, the way Ray narrows
an actor's GPUs) and starts at its first visible one, so nothing depends on how Ray numbered the node's GPUs.

Plain data in, plain data out: tested without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlpipe.cluster.placement import PlacementError


@dataclass(frozen=True)
class Seat:
    """One bundle of the placement group: the node it is on and the GPU Ray gave it there."""

    node_id: str
    node_ip: str
    gpu: str  # Ray's GPU id on that node (an entry of the node's CUDA_VISIBLE_DEVICES)


@dataclass(frozen=True)
class EnginePart:
    """The server process of engine `engine` on one node: node rank `node_rank` of `nnodes`, on `gpus` there."""

    engine: int
    node_rank: int
    nnodes: int
    node_id: str
    node_ip: str
    gpus: tuple[str, ...]
    bundle: int  # the placement-group bundle its launcher runs on (the part's first)

    @property
    def serves_http(self) -> bool:
        return self.node_rank == 0

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.gpus)


def engine_parts(engine_bundles: list[list[int]], seats: dict[int, Seat]) -> list[EnginePart]:
    """The server processes of every engine (`engine_bundles[e]`: engine e's bundles, in order), node rank 0 on the
    node of the engine's first bundle; PlacementError when an engine's GPUs are split unevenly over nodes."""
    parts = []
    for engine, bundles in enumerate(engine_bundles):
        by_node: dict[str, list[int]] = {}
        for bundle in bundles:
            by_node.setdefault(seats[bundle].node_id, []).append(bundle)
        sizes = {node: len(b) for node, b in by_node.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{len(b)} on {seats[b[0]].node_ip} (node {node[:8]})" for node, b in by_node.items())
            raise PlacementError(
                f"SGLang engine {engine}'s {len(bundles)} GPUs landed unevenly on {len(by_node)} nodes ({shown}); an "
                "engine spanning nodes needs the same number of GPUs on each. Make sglang.rollout_num_gpus_per_engine "
                "divide the GPUs the engines have per node, or a multiple of a whole node."
            )
        for rank, (node, on_node) in enumerate(by_node.items()):
            seat = seats[on_node[0]]
            gpus = tuple(seats[b].gpu for b in on_node)
            parts.append(EnginePart(engine, rank, len(by_node), node, seat.node_ip, gpus, on_node[0]))
    return parts
