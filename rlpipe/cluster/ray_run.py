"""Running a resolved job on Ray: connect (or start a local Ray), reserve the plan, start the role actors,
hand them to the same loop the in-process mode uses."""

from __future__ import annotations

import os
from pathlib import Path

from rlpipe.cluster.groups import RolloutGroup, TrainerGroup
from rlpipe.cluster.placement import plan_placement, reserve
from rlpipe.config import Resolved
from rlpipe.loop import Loop, Summary


def run_on_ray(run: Resolved, run_dir: Path) -> Summary:
    import ray

    plan = plan_placement(run)
    started_here = not ray.is_initialized()
    if started_here:
        address = run.cfg.cluster.address or os.environ.get("RAY_ADDRESS")  # `ray job submit` sets RAY_ADDRESS
        if address:
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
        trainer = TrainerGroup(run, plan, group)
        rollout = RolloutGroup(run, plan, group, run_dir / "logs")
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
