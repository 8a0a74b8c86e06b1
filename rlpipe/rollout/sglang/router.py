"""sglang-router (0.3.2) as a subprocess: start it, register engines with POST /workers, stop it.

Facts measured against the installed sglang-router 0.3.2: `python -m sglang_router.launch_router --host H --port P
--policy ...`; GET /health answers 200 as soon as the router is up, /readiness only once a worker is healthy;
POST /workers {"url"} is queued ("accepted") and the worker shows up in GET /workers with is_healthy after the
router has probed its /health, /server_info and /model_info. The router forwards /generate; it does not forward
weight updates, memory release, abort or pause (SGLangEngine sends those to each engine). Besides its HTTP port the
router opens a Prometheus metrics port, 29000 on all interfaces unless --prometheus-port / --prometheus-host say
otherwise: both ports are passed explicitly, free ones picked at launch by default.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from rlpipe.rollout.sglang.process import ManagedProcess, ServerStartError, free_ports


class SGLangRouter:
    """The router process and its worker registry.

    port / prometheus_port: the router's HTTP and metrics ports on `host`; None (the default) takes free ones
    from the OS, so two routers, or a router and anything else on the machine, never collide."""

    def __init__(
        self,
        log_path: str | Path,
        *,
        port: int | None = None,
        prometheus_port: int | None = None,
        host: str = "127.0.0.1",
        policy: str = "cache_aware",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        picked = iter(free_ports([port, prometheus_port].count(None), host))
        self.port = port if port is not None else next(picked)
        self.prometheus_port = prometheus_port if prometheus_port is not None else next(picked)
        self.url = f"http://{host}:{self.port}"
        command = [sys.executable, "-m", "sglang_router.launch_router", "--host", host, "--port", str(self.port)]
        command += ["--prometheus-host", host, "--prometheus-port", str(self.prometheus_port)]
        command += ["--policy", policy, "--log-level", "warn", *extra_args]
        self.process = ManagedProcess(command, self.url + "/health", log_path)

    def start(self, timeout_s: float = 60.0) -> SGLangRouter:
        self.process.start_healthy(timeout_s)
        return self

    def add_worker(self, worker_url: str, timeout_s: float = 60.0) -> None:
        """Register an engine and wait until the router reports it healthy."""
        _request("POST", self.url + "/workers", {"url": worker_url})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(w["url"] == worker_url and w.get("is_healthy") for w in self.workers()):
                return
            time.sleep(0.2)
        raise ServerStartError(
            f"router {self.url} did not report worker {worker_url} healthy in {timeout_s:g} s.\n"
            f"{self.process.log_tail()}"
        )

    def workers(self) -> list[dict[str, Any]]:
        return _request("GET", self.url + "/workers")["workers"]

    def stop(self) -> None:
        self.process.stop()


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())
