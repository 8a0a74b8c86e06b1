"""SGLang servers on the nodes that hold their GPUs: one EngineHostActor per server process (an EnginePart), started
together, each engine's node rank 0 waited for until it answers /health.

Where each engine's GPUs are is asked of Ray, not assumed: a tiny probe task on every engine bundle reports its node
and the GPU Ray gave that bundle (`seats`). A server process that exits, or a node that goes away, while the engines
start stops the run at once with the engine, its node (IP and Ray node id) and its log's last lines.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from rlpipe.cluster.actors import EngineHostActor, where_am_i
from rlpipe.cluster.engine_layout import EnginePart, Seat, engine_parts
from rlpipe.cluster.groups import fetch, on_bundle
from rlpipe.cluster.node_watch import NodeWatch
from rlpipe.cluster.placement import PlacementPlan
from rlpipe.config import Resolved
from rlpipe.rollout.sglang.process import ServerStartError

PROBE_GPU = 0.001  # the probe's GPU share: enough for Ray to name the bundle's GPU, small enough to fit beside anyone
POLL_S = 0.5  # how often a starting engine is asked whether it answers yet


def seats(group: Any, bundles: list[int]) -> dict[int, Seat]:
    """Each bundle's node and GPU, as Ray reports them to a task running on it."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(where_am_i)
    refs = [
        task.options(
            num_cpus=0, num_gpus=PROBE_GPU,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=b),
        ).remote()
        for b in bundles
    ]  # fmt: skip
    found = fetch(refs, "placement probe")
    return {b: Seat(f["node_id"], f["node_ip"], str(f["gpus"][0])) for b, f in zip(bundles, found, strict=True)}


def describe(part: EnginePart) -> str:
    """An engine process in the user's words: which engine, which node, which GPUs."""
    rank = f"node rank {part.node_rank} of {part.nnodes}, " if part.nnodes > 1 else ""
    where = f"GPUs {part.cuda_visible_devices} of node {part.node_ip}, Ray node {part.node_id[:12]}"
    return f"SGLang engine {part.engine} ({rank}{where})"


class EngineHosts:
    """Every SGLang server process of the run, started by an actor on its own node; `urls` are the engines'
    HTTP addresses (node rank 0 of each), in engine order. `stop` ends them all."""

    def __init__(
        self, run: Resolved, plan: PlacementPlan, group: Any, log_dir: Path, watch: NodeWatch | None = None
    ) -> None:
        self.watch = watch
        where = seats(group, [b for engine in plan.engine_bundles for b in engine])
        self.parts = engine_parts([list(e) for e in plan.engine_bundles], where)
        self.actors = [
            on_bundle(EngineHostActor, group, part.bundle, 0.0).remote(run.cfg, part, str(log_dir))
            for part in self.parts
        ]
        self.urls: list[str] = []

    def start(self, timeout_s: float = 900.0) -> list[str]:
        """Launch every process (node rank 0 first gets its node's ports: HTTP, and the rendezvous SGLang's other
        node ranks join at), then wait until every engine answers; ServerStartError names what failed and where."""
        import ray

        addresses: dict[int, tuple[int, str | None]] = {}
        for part, actor in zip(self.parts, self.actors, strict=True):
            if part.serves_http:
                http, rendezvous = fetch(actor.free_ports.remote(2), describe(part), self.watch)
                addresses[part.engine] = (http, f"{part.node_ip}:{rendezvous}" if part.nnodes > 1 else None)
        starts = []
        for part, actor in zip(self.parts, self.actors, strict=True):
            port, rendezvous = addresses[part.engine]
            if not part.serves_http:  # a port of its own node (SGLang parses one; only node rank 0 listens on it)
                port = fetch(actor.free_ports.remote(1), describe(part), self.watch)[0]
            starts.append(actor.start.remote(port, rendezvous))
        urls = [fetch(ref, describe(part), self.watch) for ref, part in zip(starts, self.parts, strict=True)]
        self.urls = [url for url, part in zip(urls, self.parts, strict=True) if part.serves_http]
        deadline = time.monotonic() + timeout_s
        while True:
            refs = [actor.state.remote() for actor in self.actors]
            states = [fetch(ref, describe(part), self.watch) for ref, part in zip(refs, self.parts, strict=True)]
            for (code, _), actor, part in zip(states, self.actors, self.parts, strict=True):
                if code is not None:
                    tail = ray.get(actor.log_tail.remote())
                    raise ServerStartError(f"{describe(part)} exited with code {code} while starting.\n{tail}")
            waiting = [p for (_, up), p in zip(states, self.parts, strict=True) if p.serves_http and not up]
            if not waiting:
                return self.urls
            if self.watch is not None:
                self.watch.check()
            if time.monotonic() > deadline:
                names = "; ".join(describe(p) for p in waiting)
                raise ServerStartError(f"not answering /health after {timeout_s:g} s: {names}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Stop every server process whose node is still there."""
        import ray
        from ray.exceptions import RayActorError

        for actor in self.actors:
            with contextlib.suppress(RayActorError):  # its node is gone, and the process with it
                ray.get(actor.stop.remote())
