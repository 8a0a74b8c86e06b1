"""Placement plans from resolved configs: pure data, no Ray."""

from __future__ import annotations

import pytest

from rlpipe.cluster.engine_layout import Seat, engine_parts
from rlpipe.cluster.placement import COLOCATED_ROLLOUT_GPU, COLOCATED_TRAINER_GPU, PlacementError, plan_placement
from rlpipe.config import load

GPU_RECIPE = ["experiment=glm4-9b-dapo", "cluster.accelerator=cuda"]


def test_disaggregated_four_plus_four() -> None:
    run = load(GPU_RECIPE, check_paths=False)  # 4 trainer GPUs (TP2 x CP2) + 4 rollout GPUs (2 engines x TP2)
    plan = plan_placement(run)
    assert len(plan.bundles) == 8 and plan.total() == {"GPU": 8.0, "CPU": 8.0}
    assert plan.trainer_bundles == (0, 1, 2, 3)
    assert plan.rollout_bundles == (4, 6)  # each engine's first GPU, after the trainer's
    assert plan.engine_bundles == ((4, 5), (6, 7))
    assert (plan.trainer_gpus, plan.rollout_gpus, plan.colocated) == (1.0, 1.0, False)


def test_colocated_eight_ignores_rollout_num_gpus() -> None:
    run = load(["experiment=colocate", "cluster.rollout_num_gpus=3"], check_paths=False)
    assert any("ignored under colocate" in w for w in run.warnings)
    plan = plan_placement(run)
    assert len(plan.bundles) == 8 and plan.total()["GPU"] == 8.0  # only the actor's 8, shared
    assert plan.trainer_bundles == tuple(range(8))
    assert plan.rollout_bundles == (0, 2, 4, 6)  # 4 engines of 2 GPUs on the same bundles
    assert plan.engine_bundles == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert (plan.trainer_gpus, plan.rollout_gpus) == (COLOCATED_TRAINER_GPU, COLOCATED_ROLLOUT_GPU)
    assert COLOCATED_TRAINER_GPU + 2 * COLOCATED_ROLLOUT_GPU <= 1.0  # what shares one bundle fits in it


def test_cpu_plan_has_a_slot_per_trainer_process_and_the_rollout_manager() -> None:
    run = load(["cluster.backend=ray", "cluster.actor_num_gpus_per_node=2", "cluster.accelerator=cpu"])
    plan = plan_placement(run)
    assert plan.bundles == ({"CPU": 1.0},) * 3
    assert plan.trainer_bundles == (0, 1) and plan.rollout_bundles == (2,)
    assert plan.trainer_gpus == plan.rollout_gpus == 0.0


def _seats(layout: str) -> dict[int, Seat]:
    """Bundle i on node layout[i] ("a", "b", ...), GPUs numbered per node in bundle order."""
    seats, used = {}, {}
    for bundle, node in enumerate(layout):
        used[node] = used.get(node, -1) + 1
        seats[bundle] = Seat(f"node-{node}", f"10.0.0.{ord(node) - 96}", str(used[node]))
    return seats


def test_engine_parts_one_process_per_node_of_each_engine() -> None:
    parts = engine_parts([[0, 1], [2, 3, 4, 5]], _seats("aabbcc"))  # engine 1 spans nodes b and c
    assert [(p.engine, p.node_rank, p.nnodes, p.node_ip, p.cuda_visible_devices, p.bundle) for p in parts] == [
        (0, 0, 1, "10.0.0.1", "0,1", 0),
        (1, 0, 2, "10.0.0.2", "0,1", 2),
        (1, 1, 2, "10.0.0.3", "0,1", 4),
    ]
    assert [p.serves_http for p in parts] == [True, True, False]


def test_an_engine_split_unevenly_over_nodes_is_refused_with_the_counts() -> None:
    with pytest.raises(PlacementError, match=r"engine 0's 4 GPUs landed unevenly on 2 nodes \(3 on 10.0.0.1"):
        engine_parts([[0, 1, 2, 3]], _seats("aaab"))
