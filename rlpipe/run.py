"""Running one resolved job in this process: show the plan, prepare the run folder, build, loop, report."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from rlpipe.config import Resolved
from rlpipe.config.render import print_summary
from rlpipe.quiet import quiet_third_party
from rlpipe.run_folder import prepare_run_folder


def run_job(run: Resolved) -> int:
    cfg = run.cfg
    print_summary(run)
    run_dir = prepare_run_folder(run)

    quiet_third_party()
    from rlpipe.report import print_report  # heavy imports only from here on

    if cfg.demo is not None:
        from rlpipe.data.demo import build_demo_assets

        build_demo_assets(cfg)
    if cfg.cluster.backend == "ray":
        from rlpipe.cluster.node_watch import ActorDied
        from rlpipe.cluster.placement import PlacementError
        from rlpipe.cluster.ray_run import ClusterUnreachable, run_on_ray
        from rlpipe.loop import NonFiniteTraining
        from rlpipe.rollout.sglang.process import ServerStartError

        try:
            summary = run_on_ray(run, run_dir)
        except (PlacementError, ActorDied, ClusterUnreachable, ServerStartError, NonFiniteTraining) as exc:
            print(f"rlpipe: {exc}", file=sys.stderr)
            return 1
    else:
        summary = _run_in_process(run, run_dir)
        if isinstance(summary, int):  # stopped by an error it has reported
            return summary
    print_report(summary, run_dir)
    return 0


def _run_in_process(run: Resolved, run_dir: Path):
    """Trainer and engine in this process: the run's summary, or the exit code of an error it reported in a
    paragraph instead of a traceback: 2 for bad prompt data (the user's input, as with a config problem), 1 for a
    failure of the run (a file that would not load, a checkpoint it could not write, a reward that failed under
    reward_failure=fail, dynamic sampling out of waves). What to do next is in each message."""
    import torch

    from rlpipe.data.dataset import DatasetError
    from rlpipe.loading import LoadError
    from rlpipe.loop import NonFiniteTraining
    from rlpipe.reward import RewardError
    from rlpipe.rollout.waves import DynamicSamplingError
    from rlpipe.train import distributed
    from rlpipe.train.checkpoint import CheckpointWriteError

    if run.topology.device == "cpu":
        torch.set_num_threads(1)  # measured: one thread beats two for this size of model on 2 cores
    distributed.init_single_process()
    try:
        return _train_in_process(run, run_dir)
    except DatasetError as exc:  # the prompt file's contents are only read with the tokenizer
        print(f"rlpipe: bad prompt data: {exc}", file=sys.stderr)
        return 2
    except (LoadError, CheckpointWriteError, RewardError, DynamicSamplingError, NonFiniteTraining) as exc:
        print(f"rlpipe: {exc}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()


def _train_in_process(run: Resolved, run_dir: Path):
    """Build the engine and both roles, then run the loop (debug modes build one side only)."""
    from rlpipe.loop import Loop
    from rlpipe.rollout.engines import started_engine
    from rlpipe.rollout.role import RolloutRole
    from rlpipe.train.role import TrainerRole

    cfg = run.cfg
    engine_context = contextlib.nullcontext(None) if cfg.debug.train_only else started_engine(run, run_dir / "logs")
    # The rollout role first: reading the prompt file is cheaper than building the trainer.
    with engine_context as engine, contextlib.closing(RolloutRole(cfg, engine)) as rollout:
        trainer = None if cfg.debug.rollout_only else TrainerRole(cfg)
        return Loop(run, trainer, rollout, run_dir).train()  # type: ignore[arg-type]
