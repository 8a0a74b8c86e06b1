"""Noticing a node that leaves the cluster while the run waits on it, and saying which node and what ran there.

A call into an actor on a lost node can wait long before Ray reports the actor dead (and a rollout manager waiting
on an SGLang engine on a lost node is itself alive and waits on HTTP). So every wait of the driver on its roles
(`rlpipe.cluster.groups.fetch`) wakes every POLL_S seconds and asks Ray whether each node of the run's placement
group is still alive; the first one that is not ends the run with NodeLost naming its address, its Ray node id and
the roles it held. Ray marks a node dead once its raylet stops answering health checks (about 15 s by default);
an actor Ray cannot reach meanwhile ("temporarily unavailable") waits for that verdict (`await_verdict`), and so does
a failure that may be a lost peer's doing, such as a collective whose other rank is gone (`settle`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rlpipe.cluster.placement import PlacementPlan

POLL_S = 2.0
# Ray's default health checks call a silent node dead after 5 failed checks 3 s apart, each waiting up to 10 s.
NODE_VERDICT_S = 60.0


class ActorDied(RuntimeError):
    """A role's actor (process) died; the message says which and why."""


class NodeLost(ActorDied):
    """A node the run placed roles on left the cluster."""


@dataclass(frozen=True)
class NodeWatch:
    """The run's nodes (Ray node id -> the roles placed there, in the user's words)."""

    roles: dict[str, list[str]]

    @classmethod
    def of(cls, plan: PlacementPlan, group: Any) -> NodeWatch:
        """The roles of a node-ordered `plan` on the nodes of its placement group."""
        from ray.util.placement_group import placement_group_table

        on_node = placement_group_table(group)["bundles_to_node_id"]
        roles: dict[str, list[str]] = {}
        ranks: dict[str, list[int]] = {}
        for rank, bundle in enumerate(plan.trainer_bundles):
            ranks.setdefault(on_node[bundle], []).append(rank)
        for node, held in ranks.items():
            roles.setdefault(node, []).append(f"trainer ranks {held}")
        for engine, bundles in enumerate(plan.engine_bundles):
            for node in dict.fromkeys(on_node[b] for b in bundles):
                roles.setdefault(node, []).append(f"SGLang engine {engine}")
        roles.setdefault(on_node[plan.rollout_bundles[0]], []).append("the rollout manager")
        return cls(roles)

    def check(self) -> None:
        """Raise NodeLost if Ray reports one of the run's nodes dead."""
        import ray

        for node in ray.nodes():
            if node["NodeID"] in self.roles and not node["Alive"]:
                held = ", ".join(self.roles[node["NodeID"]])
                raise NodeLost(
                    f"node {node['NodeManagerAddress']} (Ray node {node['NodeID'][:12]}) left the cluster; it ran "
                    f"{held}. The run stopped there: resume it from its last checkpoint (the same command) once the "
                    "node is back or replaced."
                )

    def await_verdict(self, wait_s: float = NODE_VERDICT_S) -> None:
        """After an actor became unreachable: raise NodeLost as soon as Ray declares one of the run's nodes dead;
        return if none is within `wait_s` (the actor itself failed then)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            self.check()
            time.sleep(POLL_S / 4)

    def settle(self, refs: list[Any]) -> None:
        """After one of `refs` failed: let the others end too (at most NODE_VERDICT_S), and if one of them could not
        reach its actor, wait for Ray's verdict on the nodes; NodeLost when a node went, else return (the first
        failure is the role's own)."""
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline, pending = time.monotonic() + NODE_VERDICT_S, refs
        while pending and time.monotonic() < deadline:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S / 4)
            self.check()
        for ref in (r for r in refs if r not in pending):
            try:
                ray.get(ref)
            except ActorUnavailableError:
                self.await_verdict()
            except Exception:  # only an unreachable actor is evidence of a lost node
                pass
