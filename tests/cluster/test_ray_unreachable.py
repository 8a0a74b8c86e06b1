"""An unreachable `cluster.address` ends the launch with an error naming it, in seconds (ray.init alone would retry
for many minutes): the launcher runs in a subprocess under a timeout, so a regression fails instead of hanging."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rlpipe.cluster.ray_run import ClusterUnreachable, check_reachable

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A port nothing listens on: bind an ephemeral one, then close it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_closed_port_is_unreachable_with_the_address_named(scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{closed_port()}"
    with pytest.raises(ClusterUnreachable, match="connection refused") as info:
        check_reachable(address, timeout_s=5)
    assert f"cannot reach the Ray cluster at {address}" in str(info.value)


@pytest.mark.parametrize("address", ["auto", "local", "anyscale://cluster", "host:notaport"])
def test_addresses_it_cannot_check_are_left_to_ray(address: str) -> None:
    check_reachable(address, timeout_s=1)  # no error: Ray resolves these itself


def test_open_port_passes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=5)


def test_launch_with_an_unreachable_cluster_fails_fast_naming_it(tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    overrides = [
        "cluster.backend=ray", f"cluster.address={address}", f"output_dir={tmp_path}",
        f"demo.cache_dir={tmp_path / 'cache'}", "ckpt.save=null", "ckpt.load=null", "log.progress=false",
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # the start-up and the demo's assets take seconds; without the check ray.init takes minutes
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"rlpipe: cannot reach the Ray cluster at {address}" in done.stderr
    assert "Traceback" not in done.stderr
