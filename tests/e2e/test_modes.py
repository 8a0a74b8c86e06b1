"""Execution modes end to end on the embedded default, through launch.py in a subprocess (Megatron keeps
process-global state): async trains on data exactly one policy version stale; dynamic sampling with partial
rollout runs; rollout-only dumps rollouts that train-only then trains on without generating."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import launch as run_launch
from e2e_helpers import records

SHORT = ["warmup.steps=5", "ckpt.save=null", "ckpt.load=null", "eval.interval=null", "eval.before_train=false"]


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return run_launch(tmp_path, *SHORT, *overrides)


@pytest.mark.slow
def test_async_trains_one_version_stale_and_never_more(tmp_path: Path) -> None:
    result = launch(tmp_path, "run_name=a", "rollout.mode=async", "rollout.num_rollout=6")
    assert result.returncode == 0, result.stderr[-3000:]
    train = records(tmp_path, "a", "train")
    assert [r["rollout_id"] for r in train] == list(range(6))
    # Rollout 0 is generated before any training; every later one while the trainer trained on the one before.
    assert [r["staleness_versions_max"] for r in train] == [0.0] + [1.0] * 5
    assert all(r["staleness_versions_mean"] <= 1 and "pg_loss" in r for r in train)


@pytest.mark.slow
def test_dynamic_sampling_with_partial_rollout_runs(tmp_path: Path) -> None:
    result = launch(
        tmp_path,
        "run_name=d",
        "warmup.steps=40",  # the demo's own warm-up: reward ~0.3, so groups differ (after 5 steps nearly all are 0)
        "rollout.num_rollout=4",
        "rollout.over_sampling_batch_size=16",
        "rollout.dynamic_sampling_filter_path=rlpipe.rollout.filters.check_reward_nonzero_std",
        "rollout.max_sampling_waves=20",
        "rollout.partial_rollout=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train = records(tmp_path, "d", "train")
    assert len(train) == 4 and all(r["groups_kept"] == 8 and r["sampling_waves"] >= 1 for r in train)
    assert all(r["zero_std_groups"] == 0 for r in train)  # the filter let no flat group through


@pytest.mark.slow
def test_rollout_only_dumps_and_train_only_trains_on_them(tmp_path: Path) -> None:
    dump = str(tmp_path / "dumps" / "rollout_{rollout_id}.pkl")  # quoted on the command line: Hydra reads `{`
    first = launch(tmp_path, "run_name=r", "rollout.num_rollout=3", "debug.rollout_only=true",
                   f"debug.save_rollout_data='{dump}'")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    rolled = records(tmp_path, "r", "train")
    assert len(rolled) == 3 and not any("pg_loss" in r for r in rolled) and not records(tmp_path, "r", "warmup")
    saved = [pickle.loads(Path(dump.format(rollout_id=k)).read_bytes()) for k in range(3)]
    assert [len(d["samples"]) for d in saved] == [64, 64, 64]

    second = launch(tmp_path, "run_name=t", "rollout.num_rollout=3", f"debug.load_rollout_data='{dump}'")
    assert second.returncode == 0, second.stderr[-3000:]
    trained = records(tmp_path, "t", "train")
    assert [r["rollout_id"] for r in trained] == [0, 1, 2] and all("pg_loss" in r for r in trained)
    # The rewards trained on are the saved ones, and nothing was generated, synced or evaluated.
    assert [r["reward_mean"] for r in trained] == pytest.approx([r["reward_mean"] for r in rolled])
    assert all(r["time_sync"] < 0.01 and "staleness_versions_max" not in r for r in trained)
    assert not records(tmp_path, "t", "eval")


def test_debug_modes_are_checked_before_anything_heavy(tmp_path: Path) -> None:
    result = launch(tmp_path, "debug.train_only=true")
    assert result.returncode == 2 and "debug.train_only" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_moe_demo_with_routing_replay_and_the_corrections(tmp_path: Path) -> None:
    """The tiny MoE demo replaying the engine's experts, under IcePop-masked TIS and the CISPO loss."""
    result = launch(
        tmp_path,
        "run_name=moe",
        "model=tiny-moe",
        "rollout.num_rollout=4",
        "algo.use_rollout_routing_replay=true",
        "algo.use_tis=true",
        "algo.tis_mode=mask",
        "algo.tis_clip_low=0.5",
        "algo.policy_loss=cispo",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train = records(tmp_path, "moe", "train")
    assert [r["rollout_id"] for r in train] == [0, 1, 2, 3]
    for r in train:
        assert r["mismatch_logprob_abs_diff_max"] <= 1e-5  # fp32 engine and trainer on the same experts
        assert 0.0 <= r["tis_clipfrac"] <= 1.0 and r["nonfinite_steps"] == 0
