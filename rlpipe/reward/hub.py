"""The reward registry: `rm_type` -> async reward function, and `score_groups` / `score_samples`, the entry points.

Every entry has one signature, `async fn(sample, ctx) -> float`; the registry rejects duplicates and an
unknown name gets an error listing the valid ones (verl's `register_adv_est` pattern). A custom reward
(`ctx.custom_rm_path`) takes precedence over `rm_type`, as in Miles, and may score whole groups
(`ctx.group_rm`). Built-in rewards and what selects them (`rm_type`):

    exact_match  token ids up to EOS decode to str(label)            1 / 0   (offline toy tasks)
    math         math-verify parse + verify of the response          1 / 0
    deepscaler   last \\boxed{} after </think>, math-verify           1 / 0
    dapo         "Answer:" line, Minerva normalisation               +1 / -1
    f1           SQuAD token F1                                      [0, 1]
    reasoning_gym  the problem's own reasoning-gym verifier          [0, 1]  (rlpipe.data.reasoning_gym)
    remote       HTTP reward service at rm_url                       service's number
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext
from rlpipe.reward.custom import load_custom_reward
from rlpipe.reward.dapo import dapo_reward
from rlpipe.reward.deepscaler import deepscaler_reward
from rlpipe.reward.exact_match import exact_match_reward
from rlpipe.reward.f1 import f1_reward
from rlpipe.reward.math_grader import math_reward
from rlpipe.reward.reasoning_gym import reasoning_gym_reward
from rlpipe.reward.remote import remote_reward
from rlpipe.threads import in_daemon_thread

if TYPE_CHECKING:  # the pool (pebble, multiprocessing) is the rollout side's; the config phase imports this hub
    from rlpipe.reward.pool import RewardPool

RewardFn = Callable[[Sample, RewardContext], Awaitable[float]]

_REGISTRY: dict[str, RewardFn] = {}


def register(name: str, fn: RewardFn) -> None:
    """Add reward `fn` under `name`; a name already taken is an error, never a silent override."""
    if name in _REGISTRY:
        raise ValueError(f"reward {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"reward {name!r}: {fn.__qualname__} must be `async def fn(sample, ctx) -> float`")
    _REGISTRY[name] = fn


def get_reward(name: str) -> RewardFn:
    """The reward registered as `name`; unknown names list the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown rm_type {name!r}; valid: {', '.join(sorted(_REGISTRY))}") from None


register("exact_match", exact_match_reward)
register("math", math_reward)
register("deepscaler", deepscaler_reward)
register("dapo", dapo_reward)
register("f1", f1_reward)
register("remote", remote_reward)
register("reasoning_gym", reasoning_gym_reward)

IO_REWARDS = frozenset({"remote"})  # built-ins that wait on the network: they stay in the event loop, off the pool
# Built-ins that cost microseconds, less than a trip to a worker process: rollout.reward_workers unset keeps them
# in-process (bench/reward_throughput.py measures both).
LIGHT_REWARDS = frozenset({"exact_match", "f1"})

# The built-in names, for the config schema to validate `rm_type` against.
REWARD_TYPES: tuple[str, ...] = tuple(sorted(_REGISTRY))


@functools.cache
def _custom_reward(path: str, group_rm: bool) -> Callable[..., Any]:
    """load_custom_reward once per path: importing per call would re-run signature checks per sample."""
    return load_custom_reward(path, group_rm=group_rm)


class RewardError(RuntimeError):
    """A reward call raised or timed out under `rollout.reward_failure: fail`; the message leads with the reward's
    own error (type and message), then names the reward and the sample. The reward's exception is the cause."""


class EnvironmentFailure(RuntimeError):
    """A multi-turn episode's environment raised or timed out (`Sample.metadata["env_error"]`): the sample has no
    trustworthy reward, so `rollout.reward_failure` treats it as a failed reward call."""


@dataclass(repr=False)
class Scored:
    """What `score_groups` made of a batch: the groups that keep, and how many reward calls failed.

    failures: calls that raised or timed out (whatever `reward_failure` then did); timeouts: those of them that
    ran past `reward_timeout_s`; dropped: groups removed under `reward_failure: drop_group`."""

    kept: list[list[Sample]]
    failures: int = 0
    timeouts: int = 0
    dropped: int = 0

    def __repr__(self) -> str:
        # Short on purpose: asyncio.run (3.11) formats the main task, result included, while restoring SIGINT, and a
        # full repr of 8,192 samples cost 0.6 s per scored rollout (bench/rollout_manager.py --profile).
        return f"Scored({len(self.kept)} groups kept, {self.failures} failures, {self.dropped} dropped)"

    def metrics(self) -> dict[str, float]:
        """The counts under the names the rollout metrics use."""
        return {
            "reward_failures": float(self.failures),
            "reward_timeouts": float(self.timeouts),
            "groups_dropped/reward_failure": float(self.dropped),
        }


@dataclass(frozen=True)
class _Failure:
    """A reward call that raised (`error`) or ran past the timeout (`timed_out`; error is then the TimeoutError)."""

    error: Exception
    timed_out: bool


def reward_function(ctx: RewardContext) -> tuple[Callable[..., Any], str, bool]:
    """The run's reward: (function, its name for messages, whether it scores whole groups). A custom reward
    (`ctx.custom_rm_path`) takes precedence over `rm_type`, as in Miles."""
    if ctx.custom_rm_path is not None:
        return _custom_reward(ctx.custom_rm_path, ctx.group_rm), ctx.custom_rm_path, ctx.scores_groups
    return get_reward(ctx.rm_type), ctx.rm_type, ctx.scores_groups


def worth_a_pool(ctx: RewardContext) -> bool:
    """Whether rollout.reward_workers unset starts a pool for this reward (at enough calls): host work that costs
    more than the trip to a worker (a custom plain function may cost anything, so it does)."""
    return computes_on_host(ctx) and (ctx.custom_rm_path is not None or ctx.rm_type not in LIGHT_REWARDS)


def computes_on_host(ctx: RewardContext) -> bool:
    """Whether the run's reward is CPU work that a process pool speeds up: a built-in that is not a network call,
    or a custom reward written as a plain function (an `async def` one is taken to wait on I/O)."""
    if ctx.custom_rm_path is not None:
        return not inspect.iscoroutinefunction(_custom_reward(ctx.custom_rm_path, ctx.group_rm))
    return ctx.rm_type not in IO_REWARDS


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async reward and return its result: a sync one on its own thread (`in_daemon_thread`), so that
    a slow or hanging one can be timed out instead of freezing the event loop."""
    result = fn(*args) if inspect.iscoroutinefunction(fn) else await in_daemon_thread(fn, *args)
    return await result if inspect.isawaitable(result) else result


async def _attempt(fn: Callable[..., Any], arg: Any, ctx: RewardContext) -> Any:
    """One reward call bounded by `ctx.reward_timeout_s`: its value, or a `_Failure` if it raised or timed out.

    The bound holds for sync rewards (their thread is left behind) and for async ones at their `await`s: an async
    function that computes for long without awaiting holds the event loop and is only stopped once it awaits."""
    deadline = asyncio.timeout(ctx.reward_timeout_s)
    try:
        async with deadline:
            return await _call(fn, arg, ctx)
    except Exception as err:
        return _Failure(err, timed_out=deadline.expired())


async def _attempt_inline(fn: RewardFn, arg: Sample, ctx: RewardContext) -> Any:
    """One call of a built-in host reward in this event loop: its value, or a `_Failure` if it raised."""
    try:
        return await fn(arg, ctx)
    except Exception as err:
        return _Failure(err, timed_out=False)


async def _attempt_in_pool(pool: RewardPool, arg: Any) -> Any:
    """One reward call in the pool's worker processes, which time it out themselves (`reward_timeout_s` from the
    call's start, not its wait in the queue): its value, or a `_Failure`."""
    try:
        return await pool.result(arg)
    except Exception as err:
        return _Failure(err, timed_out=isinstance(err, TimeoutError))


def _checked(value: Any, who: str) -> float:
    """A reward as a finite float; anything else is a bug in the reward function, reported by name."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"reward {who} returned {value!r}; expected a finite number")
    return float(value)


def _values(result: Any, samples: list[Sample], who: str, per_group: bool) -> list[float]:
    """The rewards one call returned for `samples`, checked (a group reward returns one per sample)."""
    if not per_group:
        return [_checked(result, who)]
    if not isinstance(result, list | tuple) or len(result) != len(samples):
        raise TypeError(
            f"group reward {who} returned {result!r} for a group of {len(samples)} samples; "
            f"expected a list of {len(samples)} numbers"
        )
    return [_checked(value, who) for value in result]


def _failure_message(
    failure: _Failure, who: str, samples: list[Sample], groups: list[list[Sample]], ctx: RewardContext
) -> str:
    """The error `reward_failure: fail` stops with: the reward's own error first, then where (the call's samples by
    position in the scored batch, and their prompt), then what to do."""
    err = failure.error
    if failure.timed_out:
        own = f"TimeoutError: no reward within rollout.reward_timeout_s={ctx.reward_timeout_s:g} s"
    else:
        where = _raised_at(err)
        own = f"{type(err).__name__}: {err}{where}"
    batch = [sample for group in groups for sample in group]
    at = [pos for pos, sample in enumerate(batch) if any(sample is mine for mine in samples)]
    which = f"sample {at[0]}" if len(at) == 1 else f"the group of samples {at}"
    return (
        f"{own}\n  from reward {who} on {which} of the {len(batch)} in this batch (Sample.index "
        f"{samples[0].index}, prompt {str(samples[0].prompt)[:80]!r}).\n  "
        "rollout.reward_failure=fail stops the run: fix the reward, raise rollout.reward_timeout_s, or set "
        "rollout.reward_failure=zero (score such samples 0) or drop_group (drop their groups)"
    )


def _raised_at(err: Exception) -> str:
    """ " (at file:line)" of the innermost frame that raised `err`: from its traceback, or, for an error raised in a
    reward worker process, from the text of the worker's traceback that pebble attaches."""
    remote = re.findall(r'File "([^"]+)", line (\d+)', getattr(err, "traceback", "") or "")
    if remote:
        return f" (at {remote[-1][0]}:{remote[-1][1]})"
    frames = traceback.extract_tb(err.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


async def score_groups(groups: list[list[Sample]], ctx: RewardContext, pool: RewardPool | None = None) -> Scored:
    """Score every sample of `groups` concurrently, set each `sample.reward`, and apply `ctx.reward_failure` to
    the calls that raise or time out: "fail" raises `RewardError`, "zero" scores their samples 0.0, "drop_group"
    leaves their groups out of `Scored.kept` (every sample of a dropped group gets reward None).

    At most `ctx.max_concurrency` reward calls are in flight (it bounds the load on a remote RM); a sync custom
    reward runs on worker threads, so it must be thread-safe (pure functions of the sample are). Running them one
    at a time instead would make a reward that hangs on every sample cost the whole batch times the timeout. With
    `ctx.group_rm` and a custom reward each group is one call. Each call is bounded by `ctx.reward_timeout_s`.
    With `pool`, rewards that compute on the host (`computes_on_host`) run in its worker processes instead, and
    calls it began while the samples were generated (`RewardPool.start`) are collected rather than made again.
    Multi-turn samples: the reward an environment gave (`metadata["env_reward"]`) is the sample's reward, and a
    failed environment (`metadata["env_error"]`) counts as a failed call. A
    reward that returns something other than a finite number is a bug and raises TypeError under every policy.
    """
    fn, who, per_group = reward_function(ctx)
    pooled = pool if pool is not None and computes_on_host(ctx) else None
    # A built-in that computes on the host, in-process: called in turn, no task or timer per call (which cost
    # more than exact_match itself); a timeout could not stop it anyway, as it never awaits.
    inline = pooled is None and ctx.custom_rm_path is None and computes_on_host(ctx)
    # One entry per reward call: (position of its group, the samples it scores).
    calls = [(g, group) for g, group in enumerate(groups)]
    if not per_group:
        calls = [(g, [sample]) for g, group in calls for sample in group]
    limit = asyncio.Semaphore(ctx.max_concurrency)

    async def bounded(samples: list[Sample]) -> Any:
        if failed := [s.metadata["env_error"] for s in samples if "env_error" in s.metadata]:
            return _Failure(EnvironmentFailure(failed[0]), timed_out=False)  # the episode never finished
        if not per_group and "env_reward" in samples[0].metadata:
            return samples[0].metadata["env_reward"]  # the environment judged its own episode
        arg = samples if per_group else samples[0]
        if inline:
            return await _attempt_inline(fn, arg, ctx)
        async with limit:
            return await (_attempt_in_pool(pooled, arg) if pooled else _attempt(fn, arg, ctx))

    if pooled is not None and not per_group:  # one task per group for the calls no one began while generating
        for group in groups:
            pooled.start([s for s in group if not _judged_by_env(s) and not pooled.started(s)])
    if inline:
        results = [await bounded(samples) for _, samples in calls]
    else:
        results = await asyncio.gather(*(bounded(samples) for _, samples in calls))
    scored, dropped = Scored(kept=[]), set()
    for (g, samples), result in zip(calls, results, strict=True):
        if isinstance(result, _Failure):
            scored.failures += 1
            scored.timeouts += result.timed_out
            if ctx.reward_failure == "fail":
                raise RewardError(_failure_message(result, who, samples, groups, ctx)) from result.error
            values = [0.0] * len(samples) if ctx.reward_failure == "zero" else [None] * len(samples)
            if ctx.reward_failure == "drop_group":
                dropped.add(g)
        else:
            values = _values(result, samples, who, per_group)
        for sample, value in zip(samples, values, strict=True):
            sample.reward = value
    for g, group in enumerate(groups):
        if g in dropped:
            for sample in group:
                sample.reward = None
        else:
            scored.kept.append(group)
    scored.dropped = len(dropped)
    return scored


def _judged_by_env(sample: Sample) -> bool:
    """The environment scored the episode, or failed it: no reward call is made for this sample."""
    return "env_reward" in sample.metadata or "env_error" in sample.metadata


def group_by_index(samples: list[Sample]) -> list[list[Sample]]:
    """The samples of each group_index, groups in first-seen order, input order kept inside each."""
    by_group: dict[int, list[Sample]] = {}
    for sample in samples:
        by_group.setdefault(sample.group_index, []).append(sample)
    return list(by_group.values())


async def score_samples(samples: list[Sample], ctx: RewardContext) -> list[float | None]:
    """`score_groups` for a flat list (groups by `group_index`): the rewards in input order, also written to each
    `sample.reward`. Under `reward_failure: drop_group` the samples of a dropped group come back as None."""
    await score_groups(group_by_index(samples), ctx)
    return [sample.reward for sample in samples]
