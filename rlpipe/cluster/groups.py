"""Actor groups that answer the loop's calls exactly as the in-process roles do.

`TrainerGroup` fans each call out to every trainer rank (they step together) and returns rank 0's answer;
`RolloutGroup` forwards to the rollout manager. Weights travel trainer rank 0 -> object store -> rollout
manager without passing through the driver: `hf_named_tensors` returns an object reference that the rollout
actor resolves itself. A dead actor surfaces as `ActorDied` naming its role and the cause.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpipe.cluster.actors import DRIVER_CWD, RolloutActor, TrainerActor
from rlpipe.cluster.node_watch import POLL_S, ActorDied, NodeWatch
from rlpipe.cluster.placement import PlacementPlan
from rlpipe.config import Resolved
from rlpipe.data.tokenizer import SftExample


@dataclass(frozen=True)
class Broadcast:
    """A weight broadcast in flight: what the receivers must expect, and the senders' pending calls."""

    specs: list
    senders: list
    bucket_bytes: int  # the sender's bucket size: the receiver must cut the same buckets


def fetch(refs: Any, role: str, watch: NodeWatch | None = None) -> Any:
    """ray.get(refs), a dead actor reported as ActorDied naming `role`, a role's own error re-raised as itself; with
    a `watch`, a node of the run that leaves the cluster meanwhile ends the wait with NodeLost, also when what
    failed first is a peer of the lost role (a collective whose other end is gone)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    every = list(refs) if isinstance(refs, list) else [refs]
    try:
        pending = every
        while watch is not None and pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            if pending:
                watch.check()
        return ray.get(refs)
    except (RayActorError, RayTaskError) as exc:
        if watch is not None:  # a lost node says more than what it made fail
            watch.settle(every)
        if isinstance(exc, RayActorError):
            raise ActorDied(f"the {role} actor died: {exc}") from None
        raise exc.as_instanceof_cause() from None  # the role raised: its own exception type, remote traceback


def on_bundle(actor_cls: type, group: Any, bundle: int, num_gpus: float, env: dict[str, str] | None = None) -> Any:
    """`actor_cls` as a Ray actor on `bundle`, working in the driver's folder (DRIVER_CWD: a config's relative paths
    mean the same there, on a shared filesystem), with `env` added to its environment."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=bundle)
    runtime_env = {"env_vars": {DRIVER_CWD: os.getcwd(), **(env or {})}}
    # CPU 0.5: two roles may share a CPU bundle under colocate; Ray's CPU counts are for scheduling only.
    return ray.remote(actor_cls).options(
        num_cpus=0.5, num_gpus=num_gpus, scheduling_strategy=strategy, runtime_env=runtime_env
    )


class TrainerGroup:
    """Every trainer rank as an actor; calls run on all ranks in step."""

    def __init__(self, run: Resolved, plan: PlacementPlan, group: Any, watch: NodeWatch | None = None) -> None:
        self.watch = watch
        world = len(plan.trainer_bundles)
        device = run.topology.device
        self.actors = [
            on_bundle(TrainerActor, group, bundle, plan.trainer_gpus).remote(run.cfg, rank, world, device)
            for rank, bundle in enumerate(plan.trainer_bundles)
        ]
        init_method = fetch(self.actors[0].rendezvous.remote(), "trainer rank 0", self.watch)
        fetch([a.init.remote(init_method) for a in self.actors], "trainer", self.watch)
        self.broadcast: list | None = None  # the tensor specs, once connect_broadcast has run

    def _all(self, method: str, *args: Any) -> Any:
        return fetch([a.call.remote(method, *args) for a in self.actors], "trainer", self.watch)[0]

    def init_weights(self) -> tuple[int, dict[str, Any]]:
        return self._all("init_weights")

    def rl_update(self, samples: Any) -> dict[str, float]:
        import ray

        return self._all("rl_update", ray.put(samples))  # one copy in the object store for every rank

    def sft_update(self, examples: list[SftExample], lr: float) -> dict[str, float]:
        import ray

        return self._all("sft_update", ray.put(examples), lr)

    def adapter_named_tensors(self) -> Any:
        return self._all("adapter_named_tensors")

    def eval_loss(self, samples: Any) -> dict[str, float]:
        import ray

        return self._all("eval_loss", ray.put(samples))

    def hf_named_tensors(self) -> Any:
        """The next weights for the engines: an object reference to rank 0's (object-store sync), or, with
        broadcast sync, the broadcast already under way for the rollout side to receive."""
        if self.broadcast is not None:
            refs = [a.broadcast_weights.remote(self.bucket_bytes, self.flat) for a in self.actors]
            return Broadcast(self.broadcast, refs, self.bucket_bytes)
        refs = [a.weights.remote() for a in self.actors]
        fetch(refs[1:], "trainer", self.watch)  # the other ranks only helped gather
        return refs[0]

    def connect_broadcast(self, rollout: RolloutGroup, run: Resolved) -> None:
        """Open the weight-sync group between trainer rank 0 and the rollout side (both join concurrently)."""
        cfg = run.cfg
        rendezvous = fetch(self.actors[0].rendezvous.remote(), "trainer rank 0", self.watch)
        address, port = rendezvous.removeprefix("tcp://").split(":")
        receivers = run.topology.rollout_gpus if cfg.rollout.engine == "sglang" else 1
        backend = "nccl" if run.topology.device == "cuda" else "gloo"
        fetch(
            [
                self.actors[0].open_weight_sync.remote(address, int(port), 1 + receivers, backend),
                rollout.actor.open_weight_sync.remote(address, int(port), 1 + receivers, backend),
            ],
            "weight sync",
            self.watch,
        )
        self.bucket_bytes = cfg.cluster.weight_sync_bucket_mb * 2**20
        self.flat = cfg.rollout.engine != "sglang"  # SGLang receives tensor by tensor
        self.broadcast = fetch([a.weight_specs.remote() for a in self.actors], "trainer", self.watch)[0]

    def save(self, next_rollout: int, loop_state: dict[str, Any]) -> None:
        self._all("save", next_rollout, loop_state)

    def offload(self) -> None:
        self._all("offload")

    def onload(self) -> None:
        self._all("onload")


class RolloutGroup:
    """The rollout manager actor behind RolloutRole's calls."""

    def __init__(
        self,
        run: Resolved,
        plan: PlacementPlan,
        group: Any,
        log_dir: Path,
        engine_urls: list[str] | None = None,
        watch: NodeWatch | None = None,
    ) -> None:
        self.watch = watch
        # With SGLang the manager only routes to the servers (`engine_urls`): it holds no GPU share of its own.
        gpus = 0.0 if run.cfg.rollout.engine == "sglang" else plan.rollout_gpus
        actor = on_bundle(RolloutActor, group, plan.rollout_bundles[0], gpus)
        self.actor = actor.remote(run, str(log_dir), engine_urls)

    def close(self) -> None:
        fetch(self.actor.close.remote(), "rollout manager", self.watch)

    def update_weights(self, weights: Any) -> int:
        if isinstance(weights, Broadcast):  # receive while the trainer sends
            ref = self.actor.receive_weights.remote(weights.specs, weights.bucket_bytes)
            return fetch([*weights.senders, ref], "weight sync", self.watch)[-1]
        return fetch(self.actor.call.remote("update_weights", weights), "rollout manager", self.watch)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args: fetch(self.actor.call.remote(method, *args), "rollout manager", self.watch)
