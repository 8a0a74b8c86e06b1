"""The sandboxed Python tool: model-written code in a fresh, limited interpreter with no network.

Each call runs `python -I` (isolated: no user site, no PYTHON* variables) in a new session and an empty temporary
folder, the code on stdin, and these bounds:

    time      CPU seconds (RLIMIT_CPU, the kernel kills the process) and wall-clock seconds (the whole process
              group killed), whichever ends first
    memory    address space (RLIMIT_AS): an allocation beyond it is a MemoryError
    output    stdout and stderr go to files capped by RLIMIT_FSIZE; what comes back is cut to `output_chars`
    files     open files (RLIMIT_NOFILE), no core dumps
    network   a network namespace of its own when `unshare -rn` works on the host (nothing to connect to, not even
              the host's loopback); in any case an audit hook (PEP 578) refuses sockets, subprocesses, fork/exec
              and signals before the code runs

The audit hook alone is a guard against accidents, not a security boundary (code can still reach the OS through
extension modules); run untrusted models' code on hosts where the namespace is available, or in a container.
Every failure (an exception, a limit, a kill) comes back to the model as an error message (`ToolError`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpipe.rollout.env import ToolEnv
from rlpipe.rollout.tool_calls import ToolError, calculator

# Runs in the child before the user's code: limits, then the audit hook, then the code read from stdin.
_RUNNER = r"""
import resource, sys
cpu, memory, fsize, nofile = map(int, sys.argv[1:5])
for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, fsize),
                     (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
code = sys.stdin.read()
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty", "pty.",
           "os.kill", "os.killpg")
def guard(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"the sandbox does not allow {event}")
sys.addaudithook(guard)
del guard, resource
try:
    exec(compile(code, "<tool>", "exec"), {"__name__": "__main__"})
except (SystemExit, KeyboardInterrupt):
    raise
except BaseException as exc:
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<tool>":
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f"line {line}: " if line else ""
    sys.stderr.write(f"{where}{type(exc).__name__}: {exc}\n")
    sys.exit(1)
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds of one sandboxed run."""

    cpu_s: int = 5
    wall_s: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    open_files: int = 64
    output_chars: int = 4000


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare -rn --` when this host lets an unprivileged process have its own (empty) network namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, "-rn", "--") if probe.returncode == 0 else ()


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> str:
    """Run `code` in the sandbox; its stdout (and stderr, if any). Raises ToolError on an exception (naming it
    and its line), a limit or a kill."""
    argv = [*network_namespace_prefix(), sys.executable, "-I", "-c", _RUNNER]
    argv += [str(limits.cpu_s), str(limits.memory_bytes), str(limits.file_bytes), str(limits.open_files)]
    with tempfile.TemporaryDirectory(prefix="rlpipe-sandbox-") as folder:
        out, err, work = Path(folder) / "stdout", Path(folder) / "stderr", Path(folder) / "work"
        work.mkdir()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, cwd=work, start_new_session=True,
                env={"PATH": os.defpath, "LANG": "C.UTF-8"},
            )  # fmt: skip
            try:
                proc.communicate(code.encode(), timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise ToolError(f"the code ran past {limits.wall_s:g} s and was stopped") from None
            finally:
                _kill_group(proc)  # anything it left behind in its session
        stdout_text, stderr_text = _read(out, limits), _read(err, limits)
    if proc.returncode == 0:
        return stdout_text + (f"\n[stderr]\n{stderr_text}" if stderr_text else "")
    raise ToolError(_failure(proc.returncode, stderr_text, limits))


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read(path: Path, limits: SandboxLimits) -> str:
    with path.open("rb") as fh:
        data = fh.read(limits.output_chars + 1)
    text = data.decode(errors="replace")
    return text[: limits.output_chars] + ("\n[output cut]" if len(text) > limits.output_chars else "")


def _failure(returncode: int, stderr: str, limits: SandboxLimits) -> str:
    """The message a failed run gives the model: the exception (its line in the code), or the limit that hit."""
    if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
        return f"the code used more than {limits.cpu_s} s of CPU time and was stopped"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if returncode == -signal.SIGXFSZ or (lines and f"[Errno {errno.EFBIG}]" in lines[-1]):  # Python ignores SIGXFSZ
        return f"the code wrote more than {limits.file_bytes} bytes of output and was stopped"
    return lines[-1] if lines else f"the code ended with exit status {returncode}"


def python(code: str) -> str:
    """Run Python code in a sandbox (no network, bounded time and memory) and return what it prints.

    Args:
        code: A complete Python program; print the values you need.
    """
    return run_python(code)


def python_env(cfg: object = None) -> ToolEnv:
    """A tool environment with the sandboxed `python` tool and the `calculator`."""
    limits = SandboxLimits()
    return ToolEnv({"python": python, "calculator": calculator}, timeout_s=limits.wall_s + 5.0)
