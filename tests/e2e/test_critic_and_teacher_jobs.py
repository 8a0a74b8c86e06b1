"""PPO with a critic and on-policy distillation end to end on the embedded default job, through launch.py in a
subprocess (Megatron keeps process-global state)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import launch as run_launch
from e2e_helpers import records

SHORT = ["ckpt.load=null", "eval.interval=null", "eval.before_train=false"]


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return run_launch(tmp_path, *SHORT, *overrides)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_ppo_critic_learns_first_alone_then_with_the_actor(tmp_path: Path) -> None:
    result = launch(
        tmp_path,
        "run_name=ppo",
        "algo.advantage_estimator=ppo",
        "algo.num_critic_only_steps=12",
        "rollout.num_rollout=16",
        f"ckpt.save={tmp_path / 'ckpt'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train = records(tmp_path, "ppo", "train")
    assert all(math.isfinite(v) for r in train for v in r.values() if isinstance(v, float))
    # Critic-only rollouts leave the policy (and so the reward distribution) fixed: the value loss must fall
    # from E[R^2] (zero head) towards the variance the critic cannot explain.
    assert all("pg_loss" not in r for r in train[:12]) and all("pg_loss" in r for r in train[12:])
    losses = [r["value_loss"] for r in train]
    assert mean(losses[8:12]) < 0.85 * losses[0], losses
    assert train[0]["values_mean"] == 0.0 and train[11]["values_mean"] > 0.1  # the zero head learned the mean
    assert (tmp_path / "ckpt" / "iter_0000016" / "critic" / "metadata.json").is_file()


@pytest.mark.slow
def test_distillation_pulls_the_student_towards_a_teacher_saved_by_an_earlier_run(tmp_path: Path) -> None:
    # The teacher: the demo model after a long supervised warm-up (sampled reward ~0.98), saved as a checkpoint.
    teacher = launch(
        tmp_path,
        "run_name=teacher",
        "warmup.steps=200",
        "rollout.num_rollout=1",
        "ckpt.save={}".format(tmp_path / "teacher"),
    )
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    teacher_reward = records(tmp_path, "teacher", "train")[0]["reward_mean"]
    # The student: the demo's short warm-up (reward ~0.3), then distillation only (rewards are not used).
    student = launch(
        tmp_path,
        "run_name=student",
        "ckpt.save=null",
        "algo.advantage_estimator=on_policy_distillation",
        f"algo.opd_teacher_load={tmp_path / 'teacher'}",
        "rollout.num_rollout=40",
    )
    assert student.returncode == 0, student.stderr[-3000:]
    train = records(tmp_path, "student", "train")
    rewards, kl = [r["reward_mean"] for r in train], [r["opd_reverse_kl"] for r in train]
    assert teacher_reward > 0.9
    assert mean(rewards[-10:]) > mean(rewards[:10]) + 0.1, rewards
    assert mean(kl[-10:]) < 0.75 * mean(kl[:10]), kl
