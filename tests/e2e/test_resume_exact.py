"""Exact resume: a run SIGKILLed at ten points, rerun after each kill, ends exactly where the uninterrupted run
ends: the same metrics.jsonl records (every field but wall-clock times) and bit-identical final weights.

One chain of runs in one run folder: each rerun resumes from whatever the kills before it left (no checkpoint, a
torn metrics line, a half-written checkpoint folder, ...), then is killed at the next point; the last rerun
finishes. `kill_at.py` is the fault injector (tests only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
KILL_AT = Path(__file__).with_name("kill_at.py")

SHORT_RUN = [
    "log.progress=false", "rollout.num_rollout=6", "ckpt.save_interval=1", "ckpt.keep_last=2",
    "warmup.steps=3", "rollout.batch_size=4", "rollout.n_samples=4", "eval.interval=2", "demo.n_eval=8",
]  # fmt: skip

# (function as callers look it up, which call, kill before/after it) in the order a run meets them; each kill
# happens in a rerun that resumed from what the earlier kills left.
KILLS = [  # ..., and the newest checkpoint the kill leaves
    ("rlpipe.train.role:TrainerRole.sft_update", 2, "after", None),  # mid warm-up: nothing saved yet
    ("rlpipe.rollout.hf_engine:HFEngine._decode", 2, "before", None),  # generating rollout 0 (call 1: the first eval)
    ("rlpipe.train.checkpoint:_save_one", 1, "after", None),  # mid-checkpoint: tensors written, folder not in place
    ("rlpipe.metrics:MetricsLogger.log", 6, "torn", 1),  # half of rollout 1's line on disk (3 warm-up, eval, 0, 1)
    ("rlpipe.metrics:_write_atomically", 1, "after", 1),  # resumed at 1, history rewritten, nothing new yet
    ("rlpipe.loop:RolloutRole.evaluate", 1, "before", 1),  # during the eval after rollout 1 (none at a resume)
    ("rlpipe.loop:Loop.sync_weights", 3, "after", 2),  # rollout 2 trained and synced, not yet saved
    ("rlpipe.train.role:prune_iterations", 1, "before", 3),  # checkpoint 3 saved, older ones not yet pruned
    ("rlpipe.train.checkpoint:_save_one", 1, "after", 3),  # mid-checkpoint again, with older ones in place
    ("rlpipe.train.role:export_hf", 1, "before", 4),  # checkpoint 4 saved and pruned, its HF copy not written
]


def _launch(out: Path, cache: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """Run in a session of its own, output to files: a SIGKILLed run can leave helper processes behind (megatron
    checkpoint writers) that would hold a pipe open; the whole session is killed once the run has ended."""
    args = [f"output_dir={out}", f"demo.cache_dir={cache}", f"ckpt.save_hf='{out}/hf/{{rollout_id}}'", *SHORT_RUN]
    log = out.parent / f"{out.name}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, *prefix, *args], cwd=out.parent, stdout=fh, stderr=fh, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, returncode, "", log.read_text())


def _records(out: Path) -> list[dict]:
    lines = (out / "tiny-reverse" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")} for line in lines]


@pytest.mark.slow
def test_killed_ten_times_the_run_ends_exactly_as_the_uninterrupted_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "ref").mkdir()
    (tmp_path / "killed").mkdir()
    reference = _launch(tmp_path / "ref", cache, str(ROOT / "launch.py"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = tmp_path / "killed"
    stderr = []
    tracker = killed / "tiny-reverse" / "checkpoints" / "latest_checkpointed_iteration.txt"
    for target, nth, when, newest in KILLS:
        run = _launch(killed, cache, str(KILL_AT), target, str(nth), when)
        assert run.returncode == -9, (target, run.returncode, run.stderr[-3000:])  # the kill, not an error
        assert (int(tracker.read_text()) if tracker.exists() else None) == newest, target  # killed where meant
        stderr.append(run.stderr)
    final = _launch(killed, cache, str(ROOT / "launch.py"))
    assert final.returncode == 0, final.stderr[-3000:]
    torn = next(i for i, (_, _, when, _) in enumerate(KILLS) if when == "torn")
    assert "skipped a torn or malformed record" in stderr[torn + 1]  # the rerun after the torn write said so

    assert _records(killed) == _records(tmp_path / "ref")
    ref_weights = load_file(tmp_path / "ref" / "hf" / "6" / "model.safetensors")
    weights = load_file(killed / "hf" / "6" / "model.safetensors")
    assert ref_weights.keys() == weights.keys()
    assert all(torch.equal(ref_weights[k], weights[k]) for k in ref_weights)
    # ckpt.keep_last=2: only the two newest checkpoints remain.
    kept = sorted(p.name for p in (killed / "tiny-reverse" / "checkpoints").glob("iter_*"))
    assert kept == ["iter_0000005", "iter_0000006"]
