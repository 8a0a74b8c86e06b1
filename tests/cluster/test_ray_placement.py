"""Placement groups on a Ray that advertises 8 (fake) GPUs: the layouts fit; one larger than the cluster fails at
once, one the cluster holds but others use at its timeout (rather than waiting forever), saying what it needed and
what the nodes have."""

from __future__ import annotations

import pytest

from rlpipe.cluster.placement import PlacementError, plan_placement, reserve
from rlpipe.config import load


@pytest.mark.parametrize("experiment", ["glm4-9b-dapo", "colocate"])
def test_layouts_fit_on_eight_gpus(ray_cluster, experiment: str) -> None:
    import ray
    from ray.util import remove_placement_group
    from ray.util.placement_group import placement_group_table

    plan = plan_placement(load([f"experiment={experiment}"], check_paths=False))
    group = reserve(plan, timeout_s=300)  # generous: only a broken layout waits it out, a busy machine does not
    try:
        table = placement_group_table(group)
        assert table["state"] == "CREATED"
        assert [dict(b) for b in table["bundles"].values()] == [dict(b) for b in plan.bundles]
        assert ray.available_resources().get("GPU", 0) == 0  # all 8 GPUs held by the group
    finally:
        remove_placement_group(group)


def test_a_layout_larger_than_the_cluster_fails_at_once_naming_its_nodes(ray_cluster) -> None:
    run = load(["experiment=glm4-9b-dapo", "cluster.actor_num_gpus_per_node=8"], check_paths=False)  # 8 + 4 > 8
    with pytest.raises(PlacementError) as err:
        reserve(plan_placement(run), timeout_s=3600)  # a wait would stall the test, not pass it
    message = str(err.value)
    assert "needs 12 GPU, 12 CPU and the whole cluster has 8 GPU, 8 CPU (1 node(s): " in message


def test_a_layout_the_cluster_holds_but_others_use_fails_at_its_timeout(ray_cluster) -> None:
    import ray
    from ray.util import placement_group, remove_placement_group

    other = placement_group([{"GPU": 1.0}] * 6)  # another job holds 6 of the 8 GPUs
    ray.get(other.ready())
    try:
        with pytest.raises(PlacementError) as err:
            reserve(plan_placement(load(["experiment=glm4-9b-dapo"], check_paths=False)), timeout_s=3)
    finally:
        remove_placement_group(other)
    assert "could not free 8 GPU, 8 CPU for the run within 3 s" in str(err.value) and "free now: 2 GPU" in str(
        err.value
    )
