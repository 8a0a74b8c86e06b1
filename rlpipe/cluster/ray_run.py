"""Running a resolved job on Ray: connect (or start a local Ray), reserve the plan, start the role actors,
hand them to the same loop the in-process mode uses."""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from pathlib import Path

from rlpipe.cluster.groups import RolloutGroup, TrainerGroup
from rlpipe.cluster.placement import PlacementError, PlacementPlan, node_ordered, plan_placement, reserve
from rlpipe.config import Resolved
from rlpipe.loop import Loop, Summary

CONNECT_TIMEOUT_S = 10.0  # a head node that has not answered a TCP connect by then is not coming
DEFAULT_PORTS = {"": 6379, "ray": 10001}  # a GCS address (host:port), a Ray Client address (ray://host:port)


class ClusterUnreachable(RuntimeError):
    """The Ray cluster at `cluster.address` (or $RAY_ADDRESS) does not answer from this machine."""


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ClusterUnreachable, naming `address`, unless a TCP connection to its host and port opens within
    `timeout_s`. `ray.init` itself retries an unreachable GCS for many minutes in silence (20 attempts of about 35 s
    each in Ray 2.x), so this check runs first. Addresses it cannot parse, "auto", "local" and other schemes are
    left to Ray; a port that accepts connections but is not Ray's is too (Ray's own timeouts apply then)."""
    split = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = split.hostname, split.port
    except ValueError:  # a port that is not a number
        return
    if host is None or address in ("auto", "local") or split.scheme not in DEFAULT_PORTS:
        return
    port = port or DEFAULT_PORTS[split.scheme]
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s (the host is down, or a firewall drops the connection)"
    except ConnectionRefusedError:
        reason = "connection refused (nothing listens on that port: is Ray started there, on this port?)"
    except OSError as err:  # unknown host, no route, ...
        reason = f"{type(err).__name__}: {err.strerror or err}"
    else:
        return
    where = address if address == f"{host}:{port}" else f"{address} ({host}:{port})"
    raise ClusterUnreachable(
        f"cannot reach the Ray cluster at {where}: {reason}. Start it (`ray start --head` on the "
        "head node), or fix cluster.address (or $RAY_ADDRESS); leave both unset to start a local Ray."
    )


def run_on_ray(run: Resolved, run_dir: Path) -> Summary:
    import ray

    plan = plan_placement(run)
    started_here = not ray.is_initialized()
    if started_here:
        address = run.cfg.cluster.address or os.environ.get("RAY_ADDRESS")  # `ray job submit` sets RAY_ADDRESS
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=True)
        else:  # a local Ray sized to the plan (logical CPUs: scheduling slots, not a promise of cores)
            need = plan.total()
            ray.init(
                num_cpus=max(int(need.get("CPU", 1) + 0.999), os.cpu_count() or 1),
                num_gpus=int(need.get("GPU", 0)) or None,
                include_dashboard=False,
            )
    group = reserve(plan)
    rollout = None
    try:
        plan = node_ordered(plan, group)
        trainer = TrainerGroup(run, plan, group)
        ranks = ray.get([actor.where.remote() for actor in trainer.actors])
        rollout = RolloutGroup(run, plan, group, run_dir / "logs", engines_first_gpu(run, plan, group, ranks))
        _record_placement(ranks, rollout, run_dir)
        if run.cfg.cluster.weight_sync == "broadcast":
            trainer.connect_broadcast(rollout, run)
        return Loop(run, trainer, rollout, run_dir).train()  # type: ignore[arg-type]
    finally:
        if rollout is not None:
            rollout.close()
        from ray.util import remove_placement_group

        remove_placement_group(group)
        if started_here:
            ray.shutdown()


def _record_placement(ranks: list[dict], rollout: RolloutGroup, run_dir: Path) -> None:
    """Where every role landed (`ranks`: each trainer rank's TrainerActor.where), in the run folder
    (placement.json) and the job's log."""
    import ray

    manager = ray.get(rollout.actor.where.remote())
    nodes = list(dict.fromkeys(r["node_id"] for r in [*ranks, manager]))
    (run_dir / "placement.json").write_text(json.dumps({"trainer_ranks": ranks, "rollout_manager": manager}, indent=1))
    by_node = {n: [i for i, r in enumerate(ranks) if r["node_id"] == n] for n in nodes}
    shown = "; ".join(
        f"node {k} ({ranks[v[0]]['node_ip'] if v else manager['node_ip']}): trainer ranks {v or '-'}"
        + (", rollout manager" if manager["node_id"] == n else "")
        for k, (n, v) in enumerate(by_node.items())
    )
    print(f"rlpipe: placement: {shown}", flush=True)


def engines_first_gpu(run: Resolved, plan: PlacementPlan, group: object, ranks: list[dict]) -> int | None:
    """The GPU of the rollout manager's node its SGLang engines start from: the one after the trainer ranks' GPUs on
    that node (none there: 0), from where each trainer rank runs (`ranks`: TrainerActor.where). Engines on GPUs of
    their own must all be on that node (the manager starts them)."""
    from ray.util.placement_group import placement_group_table

    if run.cfg.rollout.engine != "sglang" or run.cfg.cluster.colocate:
        return None
    on_node = placement_group_table(group)["bundles_to_node_id"]
    manager = on_node[plan.rollout_bundles[0]]
    engine_nodes = {on_node[b] for b in plan.rollout_bundles}
    if engine_nodes != {manager}:
        raise PlacementError(
            f"the engines' GPUs landed on {len(engine_nodes)} nodes; rlpipe's rollout manager starts every engine on "
            "its own node, so cluster.rollout_num_gpus must fit one node beside the trainer ranks there (or colocate)"
        )
    here = [gpu for r in ranks if r["node_id"] == manager for gpu in r["gpus"]]
    return max(here) + 1 if here else 0
