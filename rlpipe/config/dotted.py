"""Pluggable functions by dotted path, as in Miles: imported and signature-checked during validation.

Where the validation check runs: in a short-lived child process (`check_dotted_paths`), which imports each path,
checks its signature and reports one JSON line per path; the launcher waits at most `import_timeout_s()` per path
and then kills the child's process group. Importing in the launcher instead would break three promises: the
config phase imports no torch (a user's module may), it never hangs (an import that blocks cannot be stopped:
a watchdog thread could only abandon it, holding that module's import lock and whatever it had imported), and a
config problem is an error message with exit code 2 (a module calling sys.exit() on import would end the launcher
silently). The child costs one interpreter start-up plus the user's imports, once per config load, and sees the
launcher's sys.path and working folder, so it finds what an in-process import would.

The rollout side imports the functions it runs in its own process (`import_dotted`, `load_callable`): the check
has passed by then, and a module that calls sys.exit() on import still becomes a ValueError there.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

IMPORT_TIMEOUT_ENV = "RLPIPE_IMPORT_TIMEOUT_S"
DEFAULT_IMPORT_TIMEOUT_S = 60.0  # a module importing torch and transformers cold takes ~10-20 s
_STDERR_TAIL_CHARS = 800
Check = tuple[str, int, str]  # (dotted path, positional arguments it is called with, the documented call)

# config key -> (positional parameters the function is called with, how they are documented)
DOTTED_FIELDS: dict[str, tuple[int, str]] = {
    "rollout.dynamic_sampling_filter_path": (2, "f(cfg, samples) -> bool"),
    "rollout.buffer_filter_path": (4, "f(cfg, rollout_id, buffer, num_groups) -> list[list[Sample]]"),
    "rollout.rollout_function_path": (3, "f(cfg, rollout_id, source: RolloutSource) -> list[list[Sample]]"),
    "rollout.custom_rm_path": (2, "replaced by rlpipe.reward.custom.reward_signature (it depends on group_rm)"),
    "algo.custom_loss_function_path": (2, "f(cfg, inputs) -> (loss, metrics)"),
    "rollout.env": (1, "f(cfg) -> Environment (async reset(sample), async step(action) -> StepResult)"),
}


def import_dotted(path: str) -> Callable[..., Any]:
    """Import `pkg.module.attr` (the last dot separates the attribute); ValueError says what is wrong, in words
    that follow the path ("`pkg.module.attr` <message>")."""
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError("is not a dotted path (expected module.function)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # err.name is the module that was missing: the user's (or a parent package), or a dependency of it.
        if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"does not import: module `{module_name}` not found (is it on PYTHONPATH?)") from err
        raise ValueError(f"does not import: importing `{module_name}` failed: {err}") from err
    except SystemExit as err:  # sys.exit() in a module must not end the process that imports it
        raise ValueError(f"importing it called sys.exit({err.code!r})") from err
    except Exception as err:  # the user's module raised while importing
        raise ValueError(f"importing it raised {type(err).__name__}: {err}") from err
    if not hasattr(module, attr):
        raise ValueError(f"does not import: module `{module_name}` has no attribute `{attr}`")
    return getattr(module, attr)


def load_callable(path: str, n_args: int, expected: str) -> Callable[..., Any]:
    """`import_dotted`, then check the object can be called with `n_args` positional arguments (`expected`
    documents the call); ValueError says what is wrong, as import_dotted does."""
    fn = import_dotted(path)
    if not callable(fn):
        raise ValueError(f"is not callable (a {type(fn).__name__}); expected {expected}")
    try:
        signature = inspect.signature(fn)
    except ValueError:  # builtins without a signature: accept
        return fn
    try:
        signature.bind(*([None] * n_args))
    except TypeError:
        raise ValueError(f"has signature {signature}; expected {expected}") from None
    return fn


def import_timeout_s() -> float:
    """How long one path's import and check may take in `check_dotted_paths`: $RLPIPE_IMPORT_TIMEOUT_S or 60 s."""
    value = os.environ.get(IMPORT_TIMEOUT_ENV)
    return float(value) if value else DEFAULT_IMPORT_TIMEOUT_S


def check_dotted_paths(checks: dict[str, Check], timeout_s: float | None = None) -> dict[str, str]:
    """What is wrong with each `key: (path, n_args, expected)` that fails `load_callable`, checked in a child
    process (see the module docstring); the keys that pass are left out. Each path gets `timeout_s` seconds
    (default `import_timeout_s()`). A path whose import hangs or ends the child is reported as such and the
    paths after it are checked in a fresh child."""
    timeout = timeout_s if timeout_s is not None else import_timeout_s()
    pending, problems = dict(checks), {}
    while pending:
        results, failure = _check_in_child(pending, timeout)
        if failure is not None:  # the first path without a result is the one the child was importing
            results[next(key for key in pending if key not in results)] = failure
        for key, error in results.items():
            del pending[key]
            if error is not None:
                problems[key] = error
    return problems


def _check_in_child(checks: dict[str, Check], timeout: float) -> tuple[dict[str, str | None], str | None]:
    """Run `_child_main` on `checks`: (key -> error or None for each path it reported, why it stopped early or
    None). The child's process group is killed on the way out, whatever it left running."""
    request = json.dumps({"sys_path": sys.path, "checks": [[key, *check] for key, check in checks.items()]})
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(
            [sys.executable, __file__, request],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own process group: the kill reaches what the user's module started
        )
        assert child.stdout is not None
        try:
            results, overran = _read_results(child.stdout, timeout, len(checks))
        finally:
            _kill_group(child)
        if len(results) == len(checks):
            return results, None
        if overran:
            return results, (
                f"did not finish importing within {timeout:g} s: does the module block on import (a server, a "
                f"lock, input())? A slow but finite import can have more time: set {IMPORT_TIMEOUT_ENV}"
            )
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace").strip()[-_STDERR_TAIL_CHARS:]
        return results, f"importing it ended the process (exit code {child.returncode})" + (f": {tail}" if tail else "")


def _read_results(stream: IO[bytes], timeout: float, expected: int) -> tuple[dict[str, str | None], bool]:
    """The child's result lines until it has sent `expected`, closed its output (exited), or been silent for
    `timeout` s; and whether it was the silence."""
    results: dict[str, str | None] = {}
    buffer = b""
    deadline = time.monotonic() + timeout
    while len(results) < expected:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return results, True
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            result = json.loads(line)
            results[result["key"]] = result["error"]
            deadline = time.monotonic() + timeout  # each path gets the full timeout
    return results, False


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group unless the child has exited, then reap it."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def _child_main(request: str) -> None:
    """The child of `check_dotted_paths`: check each path, one JSON line per path on the real stdout; what the
    user's modules print goes to stderr. SystemExit / KeyboardInterrupt on import are reported, not obeyed."""
    spec = json.loads(request)
    sys.path[:] = spec["sys_path"]
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for key, path, n_args, expected in spec["checks"]:
        try:
            load_callable(path, n_args, expected)
            error = None
        except ValueError as err:
            error = str(err)
        except BaseException as err:  # KeyboardInterrupt, or anything else a module may raise
            error = f"importing it raised {type(err).__name__}: {err}"
        results.write(json.dumps({"key": key, "error": error}) + "\n")
        results.flush()
    os._exit(0)  # not sys.exit: threads or atexit hooks the user's modules left behind must not keep us alive


if __name__ == "__main__":
    _child_main(sys.argv[1])
