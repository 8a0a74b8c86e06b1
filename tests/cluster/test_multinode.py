"""Placement across nodes, on simulated clusters (ray.cluster_utils: several raylets on this machine, each with its
own CPUs and fake GPUs): bundles taken in node order put consecutive trainer ranks on one node and the engines after
them; the tiny job with two data-parallel trainer ranks on two raylets and the rollout manager on a third learns
exactly as on one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from simulated import run_tiny_job, simulated_cluster, train_rewards

from rlpipe.cluster.placement import node_ordered, plan_placement, reserve
from rlpipe.config import load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def connected() -> Iterator[callable]:
    """connected(nodes, cpus, gpus): a simulated cluster this process has joined; both gone afterwards."""
    import ray

    made = []

    def start(nodes: int, cpus: int, gpus: int) -> object:
        cluster = simulated_cluster(nodes, cpus, gpus)
        made.append(cluster)
        ray.init(address=cluster.address, log_to_driver=False)
        return cluster

    yield start
    ray.shutdown()
    for cluster in made:
        cluster.shutdown()


def _nodes_of(group: object) -> dict[int, str]:
    from ray.util.placement_group import placement_group_table

    return placement_group_table(group)["bundles_to_node_id"]


DISAGGREGATED = ["experiment=glm4-9b-dapo", "cluster.actor_num_nodes=2", "cluster.actor_num_gpus_per_node=8",
                 "cluster.rollout_num_gpus=8"]  # fmt: skip
COLOCATED = ["experiment=glm4-9b-dapo", "cluster.colocate=true", "cluster.actor_num_nodes=4",
             "cluster.actor_num_gpus_per_node=8"]  # fmt: skip


@pytest.mark.parametrize(("overrides", "nodes"), [(DISAGGREGATED, 3), (COLOCATED, 4)], ids=["2x8+1x8", "4x8-colocated"])
def test_ranks_fill_nodes_in_order(connected, overrides: list[str], nodes: int) -> None:
    from ray.util import remove_placement_group

    connected(nodes, 8, 8)
    run = load(overrides, check_paths=False)
    plan = plan_placement(run)
    group = reserve(plan, timeout_s=300)
    try:
        ordered, on_node = node_ordered(plan, group), _nodes_of(group)
        rank_nodes = [on_node[b] for b in ordered.trainer_bundles]
        per_node = run.cfg.cluster.actor_num_gpus_per_node
        for rank, node in enumerate(rank_nodes):  # rank by rank: ranks r and r' share a node iff r // 8 == r' // 8
            assert [n == node for n in rank_nodes] == [
                r // per_node == rank // per_node for r in range(len(rank_nodes))
            ]
        assert len(set(rank_nodes)) == run.cfg.cluster.actor_num_nodes
        tp = run.cfg.perf.tensor_parallel
        for first in range(0, len(rank_nodes), tp):  # every tensor-parallel group inside one node
            assert len(set(rank_nodes[first : first + tp])) == 1
        per_engine = run.cfg.sglang.rollout_num_gpus_per_engine
        engine_nodes = [on_node[b] for b in ordered.rollout_bundles]
        if run.cfg.cluster.colocate:  # engine e on the GPUs of trainer ranks e*g .. e*g+g-1
            assert engine_nodes == [rank_nodes[e * per_engine] for e in range(len(engine_nodes))]
        else:  # the engines on a node of their own, after the trainer's
            assert set(engine_nodes).isdisjoint(rank_nodes) and len(set(engine_nodes)) == 1
    finally:
        remove_placement_group(group)


def _rewards(tmp_path: Path, name: str, *extra: str) -> tuple[list[float], dict]:
    done = run_tiny_job(
        tmp_path, name, "cluster.backend=ray", "cluster.actor_num_gpus_per_node=2", "rollout.global_batch_size=64",
        "rollout.num_rollout=6", *extra,
    )  # fmt: skip
    assert "rlpipe: placement:" in done.stdout
    return train_rewards(tmp_path / name), json.loads((tmp_path / name / "placement.json").read_text())


def test_tiny_job_across_three_nodes_learns_as_on_one(tmp_path: Path) -> None:
    """One CPU per raylet: the two trainer ranks and the rollout manager cannot share a node."""
    cluster = simulated_cluster(3, 1)
    try:
        spread, placement = _rewards(tmp_path, "spread", f"cluster.address={cluster.address}")
    finally:
        cluster.shutdown()
    together, one = _rewards(tmp_path, "together")
    nodes = [r["node_id"] for r in placement["trainer_ranks"]] + [placement["rollout_manager"]["node_id"]]
    roles = [*placement["trainer_ranks"], placement["rollout_manager"]]
    assert {r["cwd"] for r in roles} == {str(tmp_path)}  # every role works in the folder the run was launched from
    assert len(set(nodes)) == 3
    assert len({r["node_id"] for r in one["trainer_ranks"]} | {one["rollout_manager"]["node_id"]}) == 1
    assert len(spread) == 6 and spread == together  # where the roles run changes nothing of what they compute


@pytest.mark.parametrize(
    ("overrides", "nodes", "first_gpu"),
    [
        (DISAGGREGATED, 3, 0),  # the engines' node holds no trainer rank: they start at its GPU 0
        (["experiment=glm4-9b-dapo"], 1, 4),  # one 8-GPU node: 4 trainer ranks on GPUs 0-3, engines from GPU 4
    ],
    ids=["own-node", "shared-node"],
)
def test_engines_start_after_the_trainer_gpus_of_their_node(connected, overrides, nodes, first_gpu) -> None:
    import ray
    from ray.util import remove_placement_group

    from rlpipe.cluster.actors import TrainerActor
    from rlpipe.cluster.groups import _on_bundle
    from rlpipe.cluster.ray_run import engines_first_gpu

    connected(nodes, 8, 8)
    run = load(overrides, check_paths=False)
    plan = plan_placement(run)
    group = reserve(plan, timeout_s=300)
    try:
        ordered = node_ordered(plan, group)
        world = len(ordered.trainer_bundles)  # trainer actors, not started (their `init` builds the model)
        actors = [
            _on_bundle(TrainerActor, group, bundle, ordered.trainer_gpus).remote(run.cfg, rank, world, "cuda")
            for rank, bundle in enumerate(ordered.trainer_bundles)
        ]
        ranks = ray.get([actor.where.remote() for actor in actors])
        assert engines_first_gpu(run, ordered, group, ranks) == first_gpu
    finally:
        remove_placement_group(group)
