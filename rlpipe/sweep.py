"""Sweeps (`rlpipe train -m`, `launch.py -m`): the cartesian product of comma-separated overrides, every point
validated and planned before any starts, each in its own output folder, run one after another on this machine or,
with `--launcher ray`, submitted as Ray jobs to a cluster (cluster.address, $RAY_ADDRESS, or a local Ray) and run as
many at once as its resources hold; one summary table (final reward, eval, wall time) and one plot of every point's
reward at the end.

Why not hydra-ray-launcher / hydra-submitit-launcher: both are Hydra launcher plugins for `@hydra.main` apps, which
rlpipe is not (it composes with Hydra's compose API so a bad config exits 2 before anything heavy starts), and neither
admits points by the resources each needs; the Ray one also ships jobs through its own autoscaler configs.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlpipe.config import ConfigError, Resolved, load
from rlpipe.metrics import MetricsLogger, save_curves

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

POLL_S = 1.0  # how often the Ray launcher asks for its jobs' status


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """The cartesian product of comma-separated sweep overrides (Hydra's basic-sweeper grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(point) for point in itertools.product(*choices)]


@dataclass
class Point:
    index: int
    overrides: list[str]  # the point's own overrides, its output_dir last
    label: str  # what varies, for tables and plots
    run: Resolved
    needs: dict[str, float] = field(default_factory=dict)  # cluster resources its roles take (Ray launcher)
    returncode: int | None = None
    seconds: float = 0.0

    @property
    def run_dir(self) -> Path:
        return Path(self.run.cfg.output_dir) / self.run.cfg.run_name


def prepare(overrides: list[str], on_ray: bool, extra_dirs: Sequence[Path] = ()) -> tuple[str, list[Point], list[str]]:
    """The sweep folder, its points resolved as they will run (in their own folder, on Ray if `on_ray`, with the
    config folders `extra_dirs`), and the problems of those that do not resolve."""
    given = [o for o in overrides if o.split("=", 1)[0].lstrip("+") == "output_dir"]
    stamp = given[0].split("=", 1)[1] if given else time.strftime("multirun/%Y-%m-%d/%H-%M-%S")
    varying = [o.split("=", 1)[0] for o in overrides if "," in o.split("=", 1)[-1]]
    points, problems = [], []
    for i, point in enumerate(sweep_points([o for o in overrides if o not in given])):
        words = [*point, *(["cluster.backend=ray"] if on_ray else []), f"output_dir={Path(stamp, str(i))}"]
        label = " ".join(o for o in point if o.split("=", 1)[0] in varying) or f"point {i}"
        try:
            points.append(Point(i, words, label, load(words, extra_dirs=extra_dirs)))
        except ConfigError as exc:
            problems.append(f"sweep point {' '.join(point)}:\n{exc.render()}")
    return stamp, points, problems


def run_locally(points: list[Point], command: list[str]) -> None:
    """Each point as its own training process (`command` + its overrides), one after another."""
    for point in points:
        print(f"[{point.index + 1}/{len(points)}] {point.label}", flush=True)
        start = time.monotonic()
        point.returncode = subprocess.call([*command, *point.overrides], env=os.environ)
        point.seconds = time.monotonic() - start


def run_on_ray(points: list[Point], command: list[str], address: str | None, max_concurrent: int | None = None) -> None:
    """Each point as a Ray job (entrypoint: `command`, this Python's `-m rlpipe train`, run from this folder, so the
    cluster must see both: a shared filesystem or the same image), started as soon as the resources its roles take
    are free."""
    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    from rlpipe.cluster.placement import plan_placement

    if address:
        context = ray.init(address=address, log_to_driver=False)
    else:  # a local Ray whose job server takes the submissions, on ports the OS gives (never a fixed one)
        from rlpipe.rollout.sglang.process import free_ports

        (dashboard,) = free_ports(1)
        context = ray.init(
            include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=dashboard, log_to_driver=False
        )
    client = JobSubmissionClient(f"http://{context.dashboard_url}")
    capacity = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    for point in points:
        point.needs = plan_placement(point.run).total()
    waiting, running = list(points), {}
    cwd = os.getcwd()
    try:
        while waiting or running:
            while waiting and admissible(
                waiting[0].needs, [p.needs for p in running.values()], capacity, max_concurrent
            ):
                point = waiting.pop(0)
                entrypoint = shlex.join([*command, *point.overrides])
                job = _submit(client, f"cd {shlex.quote(cwd)} && {entrypoint}")
                point.seconds = time.monotonic()
                running[job] = point
                print(f"[{point.index + 1}/{len(points)}] {point.label}: Ray job {job}", flush=True)
            time.sleep(POLL_S)
            for job, point in list(running.items()):
                status = client.get_job_status(job)
                if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    point.returncode = 0 if status == JobStatus.SUCCEEDED else 1
                    point.seconds = time.monotonic() - point.seconds
                    point.run_dir.parent.mkdir(parents=True, exist_ok=True)
                    (point.run_dir.parent / f"job-{point.index}.log").write_text(client.get_job_logs(job))
                    del running[job]
    finally:
        ray.shutdown()


AGENT_WAIT_S = 120.0  # how long a fresh Ray's job agent may take to register (seconds)


def _submit(client: JobSubmissionClient, entrypoint: str) -> str:
    """Submit one job. A Ray just started may not have its job agent registered yet and answers "No available agent
    to submit job, please try again later": asked again until it has one, for at most AGENT_WAIT_S."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(POLL_S)


def admissible(
    needs: dict[str, float], running: list[dict[str, float]], capacity: dict[str, float], max_concurrent: int | None
) -> bool:
    """Whether a point needing `needs` may start beside the `running` ones: within max_concurrent, and within the
    cluster's capacity of each resource; a point alone always may (if it can never fit, its job says so)."""
    if max_concurrent is not None and len(running) >= max_concurrent:
        return False
    return not running or all(sum(r.get(k, 0.0) for r in running) + needs.get(k, 0.0) <= capacity[k] for k in capacity)


def summarize(points: list[Point], folder: Path) -> str:
    """The sweep's table (final sampled reward, last eval, seconds), also written to folder/summary.md, and every
    point's reward curve in one plot, folder/rewards.png."""
    rows = ["| point | status | final reward | eval | seconds |", "|---|---|---:|---|---:|"]
    curves = {}
    for point in points:
        records = MetricsLogger.read(point.run_dir / "metrics.jsonl")
        train = [r for r in records if r.get("phase") == "train"]
        evals = [r for r in records if r.get("phase") == "eval"]
        last_eval = ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in (evals[-1] if evals else {}).items()
                              if k.endswith("/reward_mean"))  # fmt: skip
        final = f"{train[-1]['reward_mean']:.3f}" if train else "-"
        status = "ok" if point.returncode == 0 else f"failed ({point.returncode})"
        rows.append(f"| {point.label} | {status} | {final} | {last_eval or '-'} | {point.seconds:.0f} |")
        curves[point.label] = [(r["rollout_id"], r["reward_mean"]) for r in train]
    folder.mkdir(parents=True, exist_ok=True)
    table = "\n".join(rows) + "\n"
    (folder / "summary.md").write_text(table)
    save_curves(folder / "rewards.png", curves)
    return table


def multirun(
    overrides: list[str],
    launcher: str,
    extra_dirs: Sequence[Path] = (),
    address: str | None = None,
    max_concurrent: int | None = None,
) -> int:
    """`rlpipe train -m ...`: validate every point, run them (`launcher`: local or ray), summarise. Each point is
    `python -m rlpipe train` with the same config folders, the same whether the sweep came from launch.py or not."""
    stamp, points, problems = prepare(overrides, on_ray=launcher == "ray", extra_dirs=extra_dirs)
    command = [sys.executable, "-m", "rlpipe", "train", *(w for d in extra_dirs for w in ("--config-dir", str(d)))]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    where = "as Ray jobs" if launcher == "ray" else "one after another"
    print(f"rlpipe: sweep of {len(points)} jobs under {stamp}/, {where}", flush=True)
    if launcher == "ray":
        address = address or points[0].run.cfg.cluster.address or os.environ.get("RAY_ADDRESS")
        run_on_ray(points, command, address, max_concurrent)
    else:
        run_locally(points, command)
    print(summarize(points, Path(stamp)), end="")
    failed = sum(p.returncode != 0 for p in points)
    print(f"rlpipe: sweep done, {len(points) - failed} succeeded, {failed} failed; {stamp}/summary.md, rewards.png")
    return 1 if failed else 0
