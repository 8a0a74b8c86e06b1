"""Faults during a run end it with one paragraph and exit code 1, not a traceback: a reward that raises (under
rollout.reward_failure=fail), and a checkpoint that cannot be written (the disk fills up mid-save)."""

from __future__ import annotations

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
