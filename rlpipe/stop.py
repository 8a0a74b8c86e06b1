"""Stopping a run on SIGINT / SIGTERM without losing it.

The first signal only asks: the loop finishes the rollout in hand, saves a checkpoint at that safe point, says how
to resume and exits (`StopRequested`). A second signal means "now": it raises KeyboardInterrupt, which unwinds
through every `finally` (engines, Ray) and ends in one line from the CLI, not a traceback. Slurm and Kubernetes
send SIGTERM before they kill a job, so a preempted run keeps its last rollout too.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(Exception):
    """The run stopped early at a safe point because a signal asked it to (exit code 128 + signal number)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop:
    """While entered (in the main thread), SIGINT/SIGTERM set `signum` instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            print(
                f"\nrlpipe: {name} received: finishing this step, then saving a checkpoint and stopping "
                "(send it again to stop at once, without saving)",
                file=sys.stderr,
                flush=True,
            )
            return
        print(f"\nrlpipe: second {name}: stopping now", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
