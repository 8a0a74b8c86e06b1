"""The roles as Ray actors on CPU: two data-parallel trainer processes (gloo) take the same step as one
in-process trainer, and a weight sync leaves the engine serving exactly the trainer's weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rlpipe.cluster.groups import RolloutGroup, TrainerGroup
from rlpipe.cluster.placement import plan_placement, reserve
from rlpipe.config import load
from rlpipe.data.demo import build_demo_assets


def _run(tmp_path: Path, trainers: int, *overrides: str):
    return load([
        "cluster.backend=ray", "cluster.accelerator=cpu", f"cluster.actor_num_gpus_per_node={trainers}",
        f"demo.cache_dir={tmp_path / 'cache'}", "ckpt.save=null", "ckpt.load=null", "rollout.num_rollout=1",
        *overrides,
    ])  # fmt: skip


@contextlib.contextmanager
def _roles(run, tmp_path: Path) -> Iterator[tuple[TrainerGroup, RolloutGroup]]:
    """The trainer group and the rollout manager of `run` on a reserved placement group, released afterwards."""
    from ray.util import remove_placement_group

    build_demo_assets(run.cfg)
    group = reserve(plan_placement(run), timeout_s=30)
    try:
        yield (
            TrainerGroup(run, plan_placement(run), group),
            RolloutGroup(run, plan_placement(run), group, tmp_path / "logs"),
        )
    finally:
        remove_placement_group(group)


def test_data_parallel_step_matches_in_process_and_sync_is_exact(ray_cluster, tmp_path: Path) -> None:
    import ray

    run = _run(tmp_path, trainers=2)
    assert run.topology.data_parallel == 2
    with _roles(run, tmp_path) as (trainer, rollout):
        assert trainer.init_weights() == (0, {})
        rollout.update_weights(trainer.hf_named_tensors())
        assert _digests(trainer, rollout)[0] == _digests(trainer, rollout)[1]

        samples = rollout.generate(0).samples
        assert len(samples) == 64 and all(s.reward is not None for s in samples)
        # The untrained model earns no reward (zero advantages, zero gradient): give it graded rewards, so the
        # step below really moves the weights.
        for i, sample in enumerate(samples):
            sample.reward = float(i % 3) / 2
        ray_metrics = trainer.rl_update(samples)
        ray_weights = dict(ray.get(trainer.hf_named_tensors()))
        rollout.update_weights(trainer.hf_named_tensors())
        trainer_digest, engine_digest = _digests(trainer, rollout)
        assert trainer_digest == engine_digest

        trainer.connect_broadcast(rollout, run)  # the disaggregated path: a gloo group, bucketed
        trainer.bucket_bytes = 64 * 1024  # several buckets for this model
        trainer.rl_update(samples)
        version = rollout.update_weights(trainer.hf_named_tensors())
        assert version == 3
        assert _digests(trainer, rollout)[0] == _digests(trainer, rollout)[1] != trainer_digest

    local_metrics, local_weights, _ = _in_process_step(_run(tmp_path, trainers=1), samples)
    start = dict(_hf_weights(run))
    assert max((local_weights[k] - start[k]).abs().max().item() for k in start) > 1e-4  # the step moved them
    assert max((ray_weights[k] - local_weights[k]).abs().max().item() for k in local_weights) < 1e-6
    assert ray_metrics["loss"] == pytest.approx(local_metrics["loss"], abs=1e-6)
    assert ray_metrics["grad_norm"] == pytest.approx(local_metrics["grad_norm"], rel=1e-5)


def _digests(trainer: TrainerGroup, rollout: RolloutGroup) -> tuple[str, str]:
    import ray

    trainer_digest = ray.get([a.weights_digest.remote() for a in trainer.actors])[0]
    return trainer_digest, ray.get(rollout.actor.engine_weights_digest.remote())


def _hf_weights(run):
    from safetensors.torch import load_file

    return load_file(f"{run.cfg.ckpt.hf_checkpoint}/model.safetensors").items()


def _in_process_step(run, samples, held_out=None) -> tuple[dict[str, float], dict[str, torch.Tensor], dict]:
    """One in-process trainer's step on `samples`: its metrics, weights and (given held-out samples) eval loss."""
    from rlpipe.train.distributed import init_single_process, teardown
    from rlpipe.train.role import TrainerRole

    torch.set_num_threads(1)
    init_single_process()
    try:
        role = TrainerRole(run.cfg)
        role.init_weights()
        metrics = role.rl_update(samples)
        return metrics, dict(role.hf_named_tensors()), role.eval_loss(held_out) if held_out else {}
    finally:
        teardown()


def test_lora_adapter_sync_and_the_sft_eval_loss_on_ray(ray_cluster, tmp_path: Path) -> None:
    """LoRA with lora.sync=adapter over two data-parallel trainer actors: only the adapters travel to the rollout
    manager, and the engine then serves exactly the trainer's merged weights; the trainer group answers the SFT job's
    eval loss as one in-process trainer does."""
    run = _run(tmp_path, 2, "lora.rank=4", "lora.sync=adapter", "algo.loss_type=sft_loss", "rollout.n_samples=1")
    with _roles(run, tmp_path) as (trainer, rollout):
        assert trainer.init_weights() == (0, {})
        samples = rollout.generate(0).samples  # the next conversations, as supervised samples
        metrics = trainer.rl_update(samples)
        assert metrics["sft_loss"] > 0 and metrics["nonfinite_steps"] == 0
        assert rollout.update_adapter(trainer.adapter_named_tensors()) == 1
        assert _digests(trainer, rollout)[0] == _digests(trainer, rollout)[1]
        held_out = rollout.eval_conversations()
        ray_loss = trainer.eval_loss(held_out["reverse"])
    local = _run(tmp_path, 1, "lora.rank=4", "algo.loss_type=sft_loss", "rollout.n_samples=1")
    *_, local_loss = _in_process_step(local, samples, held_out["reverse"])
    assert ray_loss["loss"] == pytest.approx(local_loss["loss"], rel=1e-5)
