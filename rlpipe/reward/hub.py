"""The reward registry: `rm_type` -> async reward function, and `score_samples`, the one entry point.

Every entry has one signature, `async fn(sample, ctx) -> float`; the registry rejects duplicates and an
unknown name gets an error listing the valid ones (verl's `register_adv_est` pattern). A custom reward
(`ctx.custom_rm_path`) takes precedence over `rm_type`, as in Miles, and may score whole groups
(`ctx.group_rm`). Built-in rewards and what selects them (`rm_type`):

    exact_match  token ids up to EOS decode to str(label)            1 / 0   (offline toy tasks)
    math         math-verify parse + verify of the response          1 / 0
    deepscaler   last \\boxed{} after </think>, math-verify           1 / 0
    dapo         "Answer:" line, Minerva normalisation               +1 / -1
    f1           SQuAD token F1                                      [0, 1]
    remote       HTTP reward service at rm_url                       service's number
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any

from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext
from rlpipe.reward.custom import load_custom_reward
from rlpipe.reward.dapo import dapo_reward
from rlpipe.reward.deepscaler import deepscaler_reward
from rlpipe.reward.exact_match import exact_match_reward
from rlpipe.reward.f1 import f1_reward
from rlpipe.reward.math_grader import math_reward
from rlpipe.reward.remote import remote_reward

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

# The built-in names, for the config schema to validate `rm_type` against.
REWARD_TYPES: tuple[str, ...] = tuple(sorted(_REGISTRY))


@functools.cache
def _custom_reward(path: str, group_rm: bool) -> Callable[..., Any]:
    """load_custom_reward once per path: importing per call would re-run signature checks per sample."""
    return load_custom_reward(path, group_rm=group_rm)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async function and return its result (custom rewards may be either)."""
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


def _checked(value: Any, who: str) -> float:
    """A reward as a finite float; anything else is a bug in the reward function, reported by name."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"reward {who} returned {value!r}; expected a finite number")
    return float(value)


def _groups(samples: list[Sample]) -> list[list[int]]:
    """Positions of the samples of each group_index, groups in first-seen order."""
    by_group: dict[int, list[int]] = {}
    for pos, sample in enumerate(samples):
        by_group.setdefault(sample.group_index, []).append(pos)
    return list(by_group.values())


async def score_samples(samples: list[Sample], ctx: RewardContext) -> list[float]:
    """Score `samples` concurrently, set each `sample.reward`, and return the rewards in input order.

    At most `ctx.max_concurrency` reward calls are in flight (it bounds the load on a remote RM). With
    `ctx.group_rm` and a custom reward, each group (same `group_index`) is one call.
    """
    limit = asyncio.Semaphore(ctx.max_concurrency)

    async def bounded(fn: Callable[..., Any], arg: Any) -> Any:
        async with limit:
            return await _call(fn, arg, ctx)

    rewards: list[float] = [0.0] * len(samples)
    if ctx.custom_rm_path is not None:
        fn = _custom_reward(ctx.custom_rm_path, ctx.group_rm)
        who = ctx.custom_rm_path
    else:
        fn = get_reward(ctx.rm_type)
        who = ctx.rm_type

    if ctx.custom_rm_path is not None and ctx.group_rm:
        groups = _groups(samples)
        results = await asyncio.gather(*(bounded(fn, [samples[p] for p in group]) for group in groups))
        for group, group_rewards in zip(groups, results, strict=True):
            if not isinstance(group_rewards, list | tuple) or len(group_rewards) != len(group):
                raise TypeError(
                    f"group reward {who} returned {group_rewards!r} for a group of {len(group)} samples; "
                    f"expected a list of {len(group)} numbers"
                )
            for pos, value in zip(group, group_rewards, strict=True):
                rewards[pos] = _checked(value, who)
    else:
        results = await asyncio.gather(*(bounded(fn, sample) for sample in samples))
        rewards = [_checked(value, who) for value in results]

    for sample, reward in zip(samples, rewards, strict=True):
        sample.reward = reward
    return rewards
