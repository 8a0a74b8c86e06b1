"""Placement groups on a Ray that advertises 8 (fake) GPUs: the layouts fit, an impossible one fails at its timeout
(rather than waiting forever) and says what it needed and what the cluster has."""

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


def test_infeasible_layout_fails_at_its_timeout_and_says_why(ray_cluster) -> None:
    """reserve() returns with an error once its timeout passes (a hang would stall the test, not pass it)."""
    run = load(["experiment=glm4-9b-dapo", "cluster.actor_num_gpus_per_node=8"], check_paths=False)  # 8 + 4 > 8
    with pytest.raises(PlacementError) as err:
        reserve(plan_placement(run), timeout_s=3)
    message = str(err.value)
    assert "within 3 s" in message
    assert "'GPU': 12.0" in message and "'GPU': 8.0" in message
