"""Running a resolved job on Ray: connect (or start a local Ray), reserve the plan, start the role actors,
hand them to the same loop the in-process mode uses."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import urllib.parse
from pathlib import Path

from rlpipe.cluster.engine_hosts import EngineHosts
from rlpipe.cluster.groups import RolloutGroup, TrainerGroup
from rlpipe.cluster.node_watch import ActorDied, NodeWatch
from rlpipe.cluster.placement import node_ordered, plan_placement, reserve
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
    rollout = engines = None
    try:
        plan = node_ordered(plan, group)
        watch = NodeWatch.of(plan, group)
        trainer = TrainerGroup(run, plan, group, watch)
        ranks = ray.get([actor.where.remote() for actor in trainer.actors])
        if plan.engine_bundles:  # SGLang servers, each started on the node of its GPUs
            engines = EngineHosts(run, plan, group, run_dir / "logs", watch)
            engines.start()
        rollout = RolloutGroup(run, plan, group, run_dir / "logs", engines.urls if engines else None, watch)
        _record_placement(ranks, rollout, engines, run_dir)
        if run.cfg.cluster.weight_sync == "broadcast":
            trainer.connect_broadcast(rollout, run)
        return Loop(run, trainer, rollout, run_dir).train()  # type: ignore[arg-type]
    finally:
        with contextlib.suppress(ActorDied):  # a rollout manager on a lost node has nothing left to close
            if rollout is not None:
                rollout.close()
        if engines is not None:
            engines.stop()
        from ray.util import remove_placement_group

        remove_placement_group(group)
        if started_here:
            ray.shutdown()


def _record_placement(ranks: list[dict], rollout: RolloutGroup, engines: EngineHosts | None, run_dir: Path) -> None:
    """Where every role landed (`ranks`: each trainer rank's TrainerActor.where; the SGLang server processes), in the
    run folder (placement.json) and the job's log."""
    import ray

    manager = ray.get(rollout.actor.where.remote())
    parts = [dataclasses.asdict(p) for p in engines.parts] if engines else []
    record = {"trainer_ranks": ranks, "rollout_manager": manager, "engine_processes": parts}
    (run_dir / "placement.json").write_text(json.dumps(record, indent=1))
    ips = {r["node_id"]: r["node_ip"] for r in [*ranks, manager, *parts]}
    shown = []
    for k, (node, ip) in enumerate(ips.items()):
        here = [f"trainer ranks {[i for i, r in enumerate(ranks) if r['node_id'] == node] or '-'}"]
        here += [f"engine {p['engine']}" + (f" (node rank {p['node_rank']})" if p["nnodes"] > 1 else "")
                 for p in parts if p["node_id"] == node]  # fmt: skip
        here += ["rollout manager"] if manager["node_id"] == node else []
        shown.append(f"node {k} ({ip}): " + ", ".join(here))
    print(f"rlpipe: placement: {'; '.join(shown)}", flush=True)
