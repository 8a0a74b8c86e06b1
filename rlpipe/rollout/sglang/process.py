"""A server subprocess with a log file, a health wait that explains failures, and a clean stop.

Used for both SGLang servers and the router. The child starts in its own session (process group) because
`sglang.launch_server` forks scheduler and detokenizer processes: stopping signals the whole group.

Their ports are asked of the OS (`free_ports`) when they are launched, never fixed: a fixed port is whatever
another job on a shared machine already holds (sglang-router's own Prometheus default, 29000, included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from rlpipe.config.secrets import argv_secrets, redact_text


class ServerStartError(RuntimeError):
    """A server process exited or never became healthy; the message ends with the tail of its log."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that are free on `host` now, for servers about to listen on them.

    Each is the port the OS gives a socket bound to port 0; all are held until the last is picked, so no two are
    the same, then released for the servers to bind. (Another process could still bind one in between; that
    server's start then fails with its log tail, as any failed start does.)"""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


class ManagedProcess:
    """`command` run in the background, stdout+stderr to `log_path`, healthy when GET `health_url` answers 200."""

    def __init__(
        self, command: Sequence[str], health_url: str, log_path: str | Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.command = list(command)
        self.health_url = health_url
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env is not None else None,
                start_new_session=True,
            )

    def wait_healthy(self, timeout_s: float, poll_s: float = 0.2) -> None:
        """Block until the health URL answers 200; raise ServerStartError if the process dies or time runs out."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.command[:4]} exited with code {self.proc.returncode} before {self.health_url} "
                    f"answered.\n{self.log_tail()}"
                )
            if self.is_healthy():
                return
            time.sleep(poll_s)
        raise ServerStartError(f"{self.health_url} not healthy after {timeout_s:g} s.\n{self.log_tail()}")

    def start_healthy(self, timeout_s: float) -> None:
        """Start, then wait until healthy; a process that never gets there is stopped before the error rises."""
        self.start()
        try:
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise

    def is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        """The log's last lines for an error message, secrets redacted: SGLang prints its ServerArgs, api_key
        included, at start-up."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        tail = redact_text("\n".join(text.splitlines()[-lines:]), known=argv_secrets(self.command))
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL it if it outlives `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:  # exited between poll() and killpg()
            self.proc.wait()
