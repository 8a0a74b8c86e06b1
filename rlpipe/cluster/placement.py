"""Where each role runs: a placement plan from the resolved config, and the Ray placement group for it.

    disaggregated   bundles [trainer GPUs ... | rollout GPUs ...]: trainer rank r on bundle r, engine e on its
                    rollout_num_gpus_per_engine bundles after the trainer's (the manager on engine 0's first)
    colocated       one bundle per actor GPU, both roles on every bundle (fractional GPU shares, time-sliced)
    CPU             one bundle per trainer process and one for the rollout manager (its in-process engine)

The plan is plain data (tested without Ray); `reserve` turns it into a placement group, failing at once when the
cluster is too small and within a timeout when it is busy, naming what was asked and what each node has.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rlpipe.config import Resolved

# Under colocate both roles hold a share of each GPU bundle: Ray schedules by these numbers; the real memory
# split is the engine's mem_fraction_static and offloading between phases.
COLOCATED_TRAINER_GPU = 0.4
COLOCATED_ROLLOUT_GPU = 0.2


@dataclass(frozen=True)
class PlacementPlan:
    bundles: tuple[dict[str, float], ...]
    trainer_bundles: tuple[int, ...]  # bundle index of each trainer rank
    rollout_bundles: tuple[int, ...]  # first bundle index of each rollout engine / the rollout manager
    trainer_gpus: float  # GPU share each trainer actor asks for (0 on CPU)
    rollout_gpus: float  # GPU share each rollout actor asks for
    colocated: bool
    engine_bundles: tuple[tuple[int, ...], ...] = ()  # every bundle of each SGLang engine (its GPUs), in order

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                out[key] = out.get(key, 0.0) + value
        return out


def plan_placement(run: Resolved) -> PlacementPlan:
    cfg, topo = run.cfg, run.topology
    trainers = topo.actor_gpus
    if topo.device == "cpu":  # processes, not GPUs; the in-process HF engine needs one more slot
        bundles = tuple({"CPU": 1.0} for _ in range(trainers + 1))
        return PlacementPlan(bundles, tuple(range(trainers)), (trainers,), 0.0, 0.0, cfg.cluster.colocate)
    sglang = cfg.rollout.engine == "sglang"
    per_engine = cfg.sglang.rollout_num_gpus_per_engine if sglang else 1
    first = 0 if cfg.cluster.colocate else trainers  # colocated engines share the trainer's bundles
    rollout = tuple(first + e * per_engine for e in range(topo.num_engines))
    engines = tuple(tuple(range(b, b + per_engine)) for b in rollout) if sglang else ()
    if cfg.cluster.colocate:
        bundles = tuple({"GPU": 1.0, "CPU": 1.0} for _ in range(trainers))
        return PlacementPlan(
            bundles, tuple(range(trainers)), rollout, COLOCATED_TRAINER_GPU, COLOCATED_ROLLOUT_GPU, True, engines
        )
    bundles = tuple({"GPU": 1.0, "CPU": 1.0} for _ in range(trainers + topo.rollout_gpus))
    return PlacementPlan(bundles, tuple(range(trainers)), rollout, 1.0, 1.0, False, engines)


class PlacementError(RuntimeError):
    """The cluster cannot hold the plan."""


def reserve(plan: PlacementPlan, timeout_s: float = 30.0) -> Any:
    """A ready Ray placement group for the plan. PlacementError at once when the whole cluster has less than the
    plan needs, or after `timeout_s` when it has enough but not free (other jobs hold it); both list the nodes."""
    import ray
    from ray.util import placement_group, remove_placement_group

    need, have = plan.total(), ray.cluster_resources()
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0)}
    if short:
        raise PlacementError(
            f"the run needs {_amounts(need)} and the whole cluster has {_amounts(have)} ({_nodes()}). Lower "
            "cluster.actor_num_nodes / actor_num_gpus_per_node / rollout_num_gpus, or add nodes."
        )
    group = placement_group(list(plan.bundles), strategy="PACK")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise PlacementError(
            f"the cluster could not free {_amounts(need)} for the run within {timeout_s:.0f} s: other jobs hold "
            f"part of it (free now: {_amounts(ray.available_resources())}; {_nodes()}). Wait for them, or lower "
            "cluster.actor_num_gpus_per_node / cluster.rollout_num_gpus."
        )
    return group


def _amounts(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in ("GPU", "CPU") if k in resources or k == "GPU")


def _nodes() -> str:
    """Every live node: its address, Ray id and totals, for an error a user acts on."""
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    shown = "; ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]}) {_amounts(n['Resources'])}" for n in alive)
    return f"{len(alive)} node(s): {shown}"


def node_ordered(plan: PlacementPlan, group: Any) -> PlacementPlan:
    """The plan with its bundles taken in node order: Ray's PACK strategy may number a node's bundles out of order,
    so logical slot i (trainer rank i, then the engines) gets the i-th bundle after sorting bundles by their node
    (nodes in the order of their first bundle) and index. Consecutive ranks then share a node, which keeps tensor-
    parallel groups inside one, and data/pipeline-parallel ranks span nodes in rank order."""
    from ray.util.placement_group import placement_group_table

    on_node = placement_group_table(group)["bundles_to_node_id"]
    first = {}
    for bundle in sorted(on_node):
        first.setdefault(on_node[bundle], bundle)
    order = sorted(on_node, key=lambda b: (first[on_node[b]], b))
    return dataclasses.replace(
        plan,
        trainer_bundles=tuple(order[i] for i in plan.trainer_bundles),
        rollout_bundles=tuple(order[i] for i in plan.rollout_bundles),
        engine_bundles=tuple(tuple(order[i] for i in engine) for engine in plan.engine_bundles),
    )
