"""Run `launch.py` and SIGKILL this process at the Nth call of one function: a test-only fault injector.

    python tests/e2e/kill_at.py MODULE:QUALNAME N WHEN [launch.py overrides ...]

WHEN is `before` (kill as the Nth call starts), `after` (kill as it returns) or `torn` (for
`rlpipe.metrics:MetricsLogger.log` only: write the first half of the record's line, then kill, as a crash
mid-write would). The function is patched where callers look it up, so name that module.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from typing import Any


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _torn_log(logger: Any, phase: str, step: int, metrics: dict[str, float]) -> None:
    line = json.dumps({"phase": phase, "rollout_id": step, **{k: float(v) for k, v in metrics.items()}})
    with logger.path.open("a") as fh:
        fh.write(line[: len(line) // 2])
    _kill()


def install(target: str, nth: int, when: str) -> None:
    module_name, qualname = target.split(":")
    owner: Any = importlib.import_module(module_name)
    *parents, attr = qualname.split(".")
    for name in parents:
        owner = getattr(owner, name)
    original = getattr(owner, attr)
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth and when == "torn":
            _torn_log(*args, **kwargs)
        if calls == nth and when == "before":
            _kill()
        result = original(*args, **kwargs)
        if calls == nth and when == "after":
            _kill()
        return result

    setattr(owner, attr, wrapper)


if __name__ == "__main__":
    target, nth, when, *overrides = sys.argv[1:]
    install(target, int(nth), when)
    from rlpipe.cli import main

    sys.exit(main(overrides))
