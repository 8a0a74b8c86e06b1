"""Faults during a run end it with one paragraph and exit code 1, not a traceback: a reward that raises (under
rollout.reward_failure=fail), and a checkpoint that cannot be written (the disk fills up mid-save)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import ROOT, launch

SHORT = ["rollout.num_rollout=1", "eval.interval=null", "eval.before_train=false", "ckpt.load=null"]

# launch.py with megatron's per-tensor write failing as on a full disk.
DISK_FULL = """
import errno, os, runpy, sys
from megatron.core.dist_checkpointing.strategies import filesystem_async

def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

filesystem_async._write_item = disk_full
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_reward_that_raises_stops_the_run_with_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "faulty_reward.py").write_text(
        "def score(sample, ctx):\n    raise KeyError(f'no grader for {sample.label}')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    done = launch(tmp_path, *SHORT, "ckpt.save=null", "rollout.custom_rm_path=faulty_reward.score")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "rlpipe: KeyError: 'no grader for " in done.stderr and "faulty_reward.py:2" in done.stderr
    assert "reward faulty_reward.score on sample" in done.stderr
    assert "Traceback" not in done.stderr


def test_disk_full_at_a_checkpoint_is_one_paragraph_and_exit_code_1(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    args = [f"output_dir={tmp_path / 'out'}", f"demo.cache_dir={tmp_path / 'cache'}", "log.progress=false"]
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(ROOT / "launch.py"), *args, *SHORT, f"ckpt.save={ckpt}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"rlpipe: could not write checkpoint 1 to {ckpt}: disk full" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(ckpt.glob("iter_*"))  # no half-written folder left behind


def test_damaged_weights_and_checkpoint_name_the_file_instead_of_a_traceback(tmp_path: Path) -> None:
    """What only the real load can find (a truncated safetensors file, a truncated checkpoint shard) ends the run
    with one paragraph naming the file, exit code 1."""
    first = launch(tmp_path, *SHORT, "ckpt.load=null", f"ckpt.save={tmp_path / 'ckpt'}")  # builds the demo model
    assert first.returncode == 0, first.stderr[-3000:]
    for shard in (tmp_path / "ckpt" / "iter_0000001").glob("*.distcp"):
        shard.write_bytes(shard.read_bytes()[:100])
    resumed = launch(tmp_path, *SHORT[:-1], f"ckpt.load={tmp_path / 'ckpt'}", "rollout.num_rollout=2", "resume=force")
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    assert f"could not load the checkpoint to resume (ckpt.load) from {tmp_path / 'ckpt'}" in resumed.stderr
    assert "Traceback" not in resumed.stderr

    (built,) = (tmp_path / "cache").glob("tiny-qwen2-*")
    damaged = tmp_path / "damaged"
    shutil.copytree(built, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    warm = launch(tmp_path, *SHORT, "ckpt.save=null", f"ckpt.hf_checkpoint={damaged}", "run_name=warm")
    assert warm.returncode == 1, warm.stderr[-3000:]
    assert f"could not load the rollout engine's weights (ckpt.hf_checkpoint) from {damaged}" in warm.stderr
    assert "SafetensorError" in warm.stderr and "Traceback" not in warm.stderr
