"""Placement plans from resolved configs: pure data, no Ray."""

from __future__ import annotations

from rlpipe.cluster.placement import COLOCATED_ROLLOUT_GPU, COLOCATED_TRAINER_GPU, plan_placement
from rlpipe.config import load

GPU_RECIPE = ["experiment=glm4-9b-dapo", "cluster.accelerator=cuda"]


def test_disaggregated_four_plus_four() -> None:
    run = load(GPU_RECIPE, check_paths=False)  # 4 trainer GPUs (TP2 x CP2) + 4 rollout GPUs (2 engines x TP2)
    plan = plan_placement(run)
    assert len(plan.bundles) == 8 and plan.total() == {"GPU": 8.0, "CPU": 8.0}
    assert plan.trainer_bundles == (0, 1, 2, 3)
    assert plan.rollout_bundles == (4, 6)  # each engine's first GPU, after the trainer's
    assert (plan.trainer_gpus, plan.rollout_gpus, plan.colocated) == (1.0, 1.0, False)


def test_colocated_eight_ignores_rollout_num_gpus() -> None:
    run = load(["experiment=colocate", "cluster.rollout_num_gpus=3"], check_paths=False)
    assert any("ignored under colocate" in w for w in run.warnings)
    plan = plan_placement(run)
    assert len(plan.bundles) == 8 and plan.total()["GPU"] == 8.0  # only the actor's 8, shared
    assert plan.trainer_bundles == tuple(range(8))
    assert plan.rollout_bundles == (0, 2, 4, 6)  # 4 engines of 2 GPUs on the same bundles
    assert (plan.trainer_gpus, plan.rollout_gpus) == (COLOCATED_TRAINER_GPU, COLOCATED_ROLLOUT_GPU)
    assert COLOCATED_TRAINER_GPU + 2 * COLOCATED_ROLLOUT_GPU <= 1.0  # what shares one bundle fits in it


def test_cpu_plan_has_a_slot_per_trainer_process_and_the_rollout_manager() -> None:
    run = load(["cluster.backend=ray", "cluster.actor_num_gpus_per_node=2", "cluster.accelerator=cpu"])
    plan = plan_placement(run)
    assert plan.bundles == ({"CPU": 1.0},) * 3
    assert plan.trainer_bundles == (0, 1) and plan.rollout_bundles == (2,)
    assert plan.trainer_gpus == plan.rollout_gpus == 0.0
