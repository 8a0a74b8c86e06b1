"""A job submitted through Ray's Jobs API (what `ray job submit --working-dir . -- python launch.py ...` does) to a
running Ray head on loopback: the working folder travels as the job's runtime env, the job finds the cluster through
the RAY_ADDRESS Ray sets, trains to the end, and its logs say where every role ran and where the run folder is."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from simulated import simulated_cluster

ROOT = Path(__file__).resolve().parents[2]
JOB_DEADLINE_S = 900  # a stuck job fails the test at this deadline instead of hanging it


def test_a_job_submitted_to_a_running_cluster_trains_to_the_end(tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    cluster = simulated_cluster(1, 4, job_server=True)
    try:
        client = JobSubmissionClient(f"http://{cluster.webui_url}")
        overrides = [
            "cluster.backend=ray", "rollout.num_rollout=2", "run_name=jobs-api", f"output_dir={tmp_path / 'out'}",
            f"demo.cache_dir={tmp_path / 'cache'}", "ckpt.save=null", "ckpt.load=null", "eval.interval=null",
            "eval.before_train=false",
        ]  # fmt: skip
        job = client.submit_job(
            entrypoint=" ".join([sys.executable, "launch.py", *overrides]),
            runtime_env={"working_dir": str(ROOT), "env_vars": {"RAY_AUTH_MODE": "disabled"}},
        )
        deadline = time.monotonic() + JOB_DEADLINE_S
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            assert time.monotonic() < deadline, f"job still {status} after {JOB_DEADLINE_S} s"
            time.sleep(1)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-3000:]
    finally:
        cluster.shutdown()
    assert "rlpipe: placement:" in logs and str(tmp_path / "out" / "jobs-api") in logs
    records = [json.loads(line) for line in (tmp_path / "out" / "jobs-api" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["phase"] == "train" for r in records) == 2
