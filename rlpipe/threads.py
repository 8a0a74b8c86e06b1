"""Blocking calls awaited from an event loop without ever holding it up, even when they never return."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any


def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """`fn(*args)` on a fresh daemon thread, as a future of this event loop, which stays free meanwhile.

    A thread cannot be killed: when the caller stops waiting (it timed out) the call runs on in the
    background until it returns, and its result is ignored. Daemon, so a call that never returns cannot hold up
    the process's exit; not the loop's default executor, which `asyncio.run` would wait for on the way out."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled: the caller timed out
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as err:  # handed to the awaiting coroutine, which decides
            outcome = (None, err)
        with contextlib.suppress(RuntimeError):  # the loop closed while this call overran: nobody waits for it
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=f"rlpipe-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return future
