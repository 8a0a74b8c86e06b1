"""The SFT job end to end on the embedded default (`+experiment=sft-cpu`): it learns (train and held-out loss fall,
greedy accuracy rises), it runs without an engine (Miles' --debug-train-only), and a run killed mid-way resumes from
its checkpoint and ends exactly as the uninterrupted one (metrics and final weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from e2e_helpers import ROOT, launch, records
from safetensors.torch import load_file

KILL_AT = Path(__file__).with_name("kill_at.py")
SHORT = ["+experiment=sft-cpu", "rollout.num_epoch=5", "eval.interval=30", "ckpt.save_interval=30"]  # 60 steps


def test_sft_job_learns_the_task_from_conversations(tmp_path: Path) -> None:
    result = launch(tmp_path, *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    train = records(tmp_path, "tiny-sft-reverse", "train")
    evals = records(tmp_path, "tiny-sft-reverse", "eval")
    assert [r["rollout_id"] for r in train] == list(range(60))
    assert all(r["sft_tokens"] == 64 * 4 for r in train)  # 64 conversations x (3 digits + end of turn)
    assert train[-1]["sft_loss"] < train[0]["sft_loss"] / 4
    first, last = evals[0], evals[-1]
    assert [e["rollout_id"] for e in evals] == [0, 30, 60]
    assert last["reverse/loss"] < first["reverse/loss"] - 1.5
    assert first["reverse/reward_mean"] < 0.05 and last["reverse/reward_mean"] > 0.5  # greedy exact match
    assert "train sft_loss" in result.stdout and "eval reverse/loss" in result.stdout
    assert (tmp_path / "out" / "tiny-sft-reverse" / "loss_curve.png").stat().st_size > 0


def test_sft_job_without_an_engine_reports_the_eval_loss_only(tmp_path: Path) -> None:
    result = launch(tmp_path, *SHORT, "rollout.num_epoch=1", "debug.train_only=true", "eval.interval=6")
    assert result.returncode == 0, result.stderr[-3000:]
    evals = records(tmp_path, "tiny-sft-reverse", "eval")
    assert evals and all(set(e) == {"phase", "rollout_id", "reverse/loss", "reverse/perplexity"} for e in evals)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "hf" / "model.safetensors")


def test_a_killed_sft_job_resumes_and_ends_as_the_uninterrupted_one(tmp_path: Path) -> None:
    def run(name: str, *prefix: str) -> subprocess.CompletedProcess[str]:
        out = tmp_path / name
        args = [f"output_dir={out}", f"demo.cache_dir={tmp_path / 'cache'}", "log.progress=false",
                f"ckpt.save_hf={out}/hf", *SHORT]  # fmt: skip
        command = [sys.executable, *(prefix or [str(ROOT / "launch.py")]), *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    assert run("ref").returncode == 0
    killed = run("killed", str(KILL_AT), "rlpipe.train.role:TrainerRole.rl_update", "45", "before")
    assert killed.returncode == -9, killed.stderr[-3000:]  # killed after the checkpoint at 30, before step 45
    resumed = run("killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at rollout 30" in resumed.stdout

    def history(name: str) -> list[dict]:
        lines = (tmp_path / name / "tiny-sft-reverse" / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")} for line in lines]

    assert history("killed") == history("ref")
    ref, got = _final_weights(tmp_path / "ref"), _final_weights(tmp_path / "killed")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
