"""CPU-bound rewards in worker processes: math-verify and friends on every core, each call with its own timeout.

A reward like math-verify costs ~4 ms of pure Python per sample; 8,192 samples scored in the event loop take ~34 s
on one core, however many the host has (threads share the GIL). `RewardPool` runs those calls in `workers`
processes (pebble's ProcessPool, spawned: the parent may hold CUDA, Ray and aiohttp state a fork would copy):

  * each worker gets the `RewardContext` once, at start (it carries the tokenizer's decode), and imports the reward
    by name, so a task ships only its sample, slimmed of the log-probs and routed experts no reward reads;
  * `rollout.reward_timeout_s` bounds each call from the moment a worker starts it (not while it waits in the
    queue); a call past it is stopped by ending its worker, which the pool replaces. In-process, a sync reward's
    thread can only be abandoned, and an async one that never awaits cannot be stopped at all;
  * math-verify's own per-parse timeouts work again: they use signal.alarm, which needs the main thread, and
    each worker calls the reward on its main thread;
  * `start(samples)` schedules a prompt's samples the moment their generation ends, as one task (each sample still
    its own call), so rewards are computed while the engine still generates the rest; `score_groups` starts the
    samples no one started the same way, then collects every call (`result`).

Which calls go to the pool (`rlpipe.reward.hub.computes_on_host`): the built-in rewards that compute on the host
(everything but `remote`), and custom rewards that are plain functions; async custom rewards stay in the event loop
(they wait on I/O).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import multiprocessing
import os
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pebble import ProcessPool

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext

MAX_AUTO_WORKERS = 16  # each worker imports sympy (~150 MB): a 128-core node need not start 128 of them
AUTO_MIN_CALLS = 256  # rollout.reward_workers unset: below this many calls per batch the pool costs more than it saves

_worker_ctx: RewardContext | None = None
_worker_fn: Callable[..., Any] | None = None
_worker_loop: asyncio.AbstractEventLoop | None = None


def auto_workers() -> int:
    """`rollout.reward_workers` unset: one worker per core this process may use, at most MAX_AUTO_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


def pool_size(setting: int | None, calls: int) -> int:
    """Worker processes for batches of `calls` reward calls under `rollout.reward_workers` = `setting` (0: score
    in-process). Unset: `auto_workers()` from AUTO_MIN_CALLS calls up, if that is two or more."""
    if setting is not None:
        return setting
    workers = auto_workers()
    return workers if calls >= AUTO_MIN_CALLS and workers >= 2 else 0


def _init_worker(ctx: RewardContext) -> None:
    """A worker's start: the run's reward imported here (by name or dotted path), so no call's timeout pays for it."""
    from rlpipe.reward.hub import reward_function

    global _worker_ctx, _worker_fn, _worker_loop
    _worker_ctx, (_worker_fn, _, _) = ctx, reward_function(ctx)
    _worker_loop = asyncio.new_event_loop()


def _score_in_worker(arg: Sample | list[Sample]) -> Any:
    """One reward call in a worker; a coroutine is run to its end on the worker's own loop (the CPU-bound built-ins
    are `async def` only to share the registry's signature)."""
    assert _worker_fn is not None and _worker_loop is not None  # set by _init_worker
    result = _worker_fn(arg, _worker_ctx)
    return _worker_loop.run_until_complete(result) if inspect.isawaitable(result) else result


def _score_each_in_worker(samples: list[Sample]) -> list[tuple[bool, Any]]:
    """Each sample's own reward call, in turn, in one task: (True, value) or (False, the call's exception, its
    traceback text attached as `traceback`, as pebble attaches one to a task's error)."""
    outcomes: list[tuple[bool, Any]] = []
    for sample in samples:
        try:
            outcomes.append((True, _score_in_worker(sample)))
        except Exception as err:
            err.traceback = traceback.format_exc()  # type: ignore[attr-defined]
            outcomes.append((False, err))
    return outcomes


def _slim(sample: Sample) -> Sample:
    """The sample a worker needs: a shallow copy without the per-token log-probs and routed experts, which are the
    bulk of a long sample's pickle and which no reward reads."""
    return dataclasses.replace(sample, rollout_log_probs=[], rollout_routed_experts=None)


@dataclass(frozen=True)
class _Started:
    """A sample's call begun by `start`: the task scoring it (with others), its place in that task's answer, and the
    response length it was begun at (a sample that grew since needs a new call)."""

    sample: Sample
    length: int
    task: Future[list[tuple[bool, Any]]]
    position: int


class RewardPool:
    """`workers` processes scoring one run's reward (`ctx`); started on first use, reused across rollouts."""

    def __init__(self, ctx: RewardContext, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"RewardPool needs at least one worker, got {workers}")
        self.ctx = ctx
        self.workers = workers
        self._pool: ProcessPool | None = None
        self._started: dict[int, _Started] = {}  # by id(sample)
        self._lock = threading.Lock()  # start() runs on the generating thread, result() on the scoring one

    def _submit(self, fn: Callable[..., Any], timeout: float, arg: Any) -> Future[Any]:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPool(self.workers, initializer=_init_worker, initargs=(self.ctx,), context=context)
        return self._pool.submit(fn, timeout, arg)

    def submit(self, arg: Sample | list[Sample]) -> Future[Any]:
        """Schedule one reward call (a sample, or a group for a group reward); its future raises TimeoutError if the
        call ran past `reward_timeout_s`, or the reward's own exception."""
        slim = [_slim(s) for s in arg] if isinstance(arg, list) else _slim(arg)
        return self._submit(_score_in_worker, self.ctx.reward_timeout_s, slim)

    def start(self, samples: list[Sample]) -> None:
        """Begin scoring samples whose generation just ended, each its own call, all in one task: one hand-off to a
        worker for a prompt's n samples instead of n (the hand-off costs the scoring process ~0.7 ms of CPU, a sixth
        of a math-verify call). The task may run len(samples) x `reward_timeout_s`; past that, or if its worker dies,
        `result` makes each sample's call again alone, under its own timeout. Nothing for a group reward."""
        if self.ctx.scores_groups or not samples:
            return
        timeout = self.ctx.reward_timeout_s * len(samples)
        task = self._submit(_score_each_in_worker, timeout, [_slim(s) for s in samples])
        with self._lock:
            for position, sample in enumerate(samples):
                self._started[id(sample)] = _Started(sample, len(sample.response_tokens), task, position)

    def started(self, sample: Sample) -> bool:
        """Whether `start` began a call for `sample` as it now stands."""
        with self._lock:
            begun = self._started.get(id(sample))
        return begun is not None and begun.sample is sample and begun.length == len(sample.response_tokens)

    async def result(self, arg: Sample | list[Sample]) -> Any:
        """The reward of `arg`: from the call `start` began for it (if the sample has not grown since), else from a
        new call; the call's own exception if it raised."""
        with self._lock:
            begun = self._started.pop(id(arg), None) if isinstance(arg, Sample) else None
        if begun is not None and begun.sample is arg and begun.length == len(arg.response_tokens):
            try:
                ok, value = (await asyncio.wrap_future(begun.task))[begun.position]
            except Exception:  # the task as a whole ran out of time or lost its worker: this sample alone, again
                return await asyncio.wrap_future(self.submit(arg))
            if not ok:
                raise value
            return value
        return await asyncio.wrap_future(self.submit(arg))

    def forget_started(self) -> None:
        """Drop calls begun for samples that were never scored (a rollout's aborted or surplus samples)."""
        with self._lock:
            begun, self._started = list(self._started.values()), {}
        for task in {id(b.task): b.task for b in begun}.values():
            task.cancel()

    def close(self) -> None:
        """Stop the workers (calls still running are ended)."""
        self.forget_started()
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None
