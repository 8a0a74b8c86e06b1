"""Rewards in worker processes (`rlpipe.reward.pool`): the same rewards and failure policies as in-process, calls
timed out by ending their worker, each sample scored once, and scoring under way while the engine still generates.

Tests assert on outcomes, never on elapsed seconds: hanging rewards sleep 60 s against a 3 s timeout, and the
overlap test waits (at most 120 s) for an event that only a reward computed mid-generation produces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlpipe.data.sample import Sample, Status
from rlpipe.reward import RewardContext, RewardError, score_groups
from rlpipe.reward.pool import AUTO_MIN_CALLS, RewardPool, auto_workers, pool_size
from rlpipe.rollout.engine import GenerateOutput, SamplingParams
from rlpipe.rollout.generate import RolloutSource

REWARDS = """
import time
from pathlib import Path

def raising(sample, ctx):
    if int(sample.label) % 3 == 0:
        raise ValueError(f"bad label {sample.label}")
    return 1.0

def hanging(sample, ctx):
    if sample.label == "hang":
        time.sleep(60)
    return 1.0

def logged(sample, ctx):
    # one line per call in the file the sample names, so a test can count the calls
    with open(sample.metadata["log"], "a") as f:
        f.write(f"{sample.index}\\n")
    return float(len(sample.response_tokens))

def by_group(samples, ctx):
    return [float(len(samples))] * len(samples)
"""


def context(**fields: object) -> RewardContext:
    base: dict[str, object] = {"rm_type": "math", "eos_token_id": 1, "special_token_ids": frozenset({1}), "decode": str}
    return RewardContext(**(base | fields))


@pytest.fixture
def rewards(write_module) -> str:
    return write_module("pool_rewards_mod", REWARDS)


@pytest.fixture
def pool_of() -> Iterator:
    pools: list[RewardPool] = []

    def make(ctx: RewardContext, workers: int = 2) -> RewardPool:
        pools.append(RewardPool(ctx, workers))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


def math_groups() -> list[list[Sample]]:
    """Four groups of four: right answers in three forms, a wrong one."""
    answers = ["\\boxed{0.5}", "$\\frac{1}{2}$", "The answer is 1/2", "\\boxed{3}"]
    return [
        [
            Sample(prompt="q", label="1/2", index=4 * g + k, group_index=g, response_text=text)
            for k, text in enumerate(answers)
        ]
        for g in range(4)
    ]


def test_math_rewards_in_the_pool_equal_the_in_process_ones(pool_of) -> None:
    local, pooled = math_groups(), math_groups()
    asyncio.run(score_groups(local, context()))
    scored = asyncio.run(score_groups(pooled, context(), pool_of(context())))
    assert [[s.reward for s in g] for g in pooled] == [[s.reward for s in g] for g in local]
    assert [s.reward for s in pooled[0]] == [1.0, 1.0, 1.0, 0.0]
    assert scored.failures == 0 and len(scored.kept) == 4


def test_a_reward_that_raises_in_a_worker_is_reported_as_in_process(rewards: str, pool_of) -> None:
    ctx = context(custom_rm_path=f"{rewards}.raising", reward_failure="fail")
    groups = [[Sample(prompt="p", label=label, index=i, group_index=0) for i, label in enumerate(["1", "6"])]]
    with pytest.raises(RewardError) as info:
        asyncio.run(score_groups(groups, ctx, pool_of(ctx)))
    message = str(info.value)
    assert message.startswith("ValueError: bad label 6")
    assert f"{rewards}.py:7" in message  # where the user's code raised, read from the worker's traceback
    zero = context(custom_rm_path=f"{rewards}.raising", reward_failure="zero")
    scored = asyncio.run(score_groups(groups, zero, pool_of(zero)))
    assert [s.reward for s in groups[0]] == [1.0, 0.0] and (scored.failures, scored.timeouts) == (1, 0)


def test_a_hanging_call_times_out_and_the_pool_goes_on(rewards: str, pool_of) -> None:
    """One worker: the hanging call must be ended (its worker replaced) for the calls queued behind it to run. The
    group's task runs out of its 5 x 3 s first; then each sample is called alone, and only the hanging ones fail."""
    ctx = context(custom_rm_path=f"{rewards}.hanging", reward_failure="zero", reward_timeout_s=3.0)
    pool = pool_of(ctx, workers=1)
    labels = ["hang", "ok", "ok", "hang", "ok"]
    groups = [[Sample(prompt="p", label=label, index=i, group_index=0) for i, label in enumerate(labels)]]
    scored = asyncio.run(score_groups(groups, ctx, pool))
    assert [s.reward for s in groups[0]] == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert (scored.failures, scored.timeouts) == (2, 2)
    again = [[Sample(prompt="p", label="ok", index=0, group_index=0)]]
    asyncio.run(score_groups(again, ctx, pool))
    assert again[0][0].reward == 1.0


def test_a_group_reward_runs_in_the_pool_one_call_per_group(rewards: str, pool_of) -> None:
    ctx = context(custom_rm_path=f"{rewards}.by_group", group_rm=True)
    groups = [[Sample(prompt="p", index=3 * g + k, group_index=g) for k in range(g + 1)] for g in range(3)]
    asyncio.run(score_groups(groups, ctx, pool_of(ctx)))
    assert [[s.reward for s in g] for g in groups] == [[1.0], [2.0, 2.0], [3.0, 3.0, 3.0]]


def test_a_started_sample_is_scored_once_and_a_grown_one_again(rewards: str, pool_of, tmp_path: Path) -> None:
    ctx = context(custom_rm_path=f"{rewards}.logged")
    pool = pool_of(ctx)
    log = tmp_path / "calls.log"
    samples = [
        Sample(prompt="p", index=i, group_index=0, response_tokens=[7] * (i + 1), metadata={"log": str(log)})
        for i in range(3)
    ]
    pool.start(samples)  # one task, three calls
    samples[2].response_tokens.append(7)  # it grew after its call began: that call's answer is stale
    asyncio.run(score_groups([samples], ctx, pool))
    assert [s.reward for s in samples] == [1.0, 2.0, 4.0]
    deadline = time.monotonic() + 120  # the stale call may still be writing its line
    while sorted(log.read_text().split()) != ["0", "1", "2", "2"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(log.read_text().split()) == ["0", "1", "2", "2"]


class OneAtATimeEngine:
    """Answers prompt 0 first, then waits until its reward has been computed before answering the rest: a rollout
    only finishes if rewards are scored while generation still runs."""

    weight_version = 0

    def __init__(self, log: Path) -> None:
        self.log = log

    def generate(self, prompts: list[list[int]], params: SamplingParams, on_output=None) -> list[list[GenerateOutput]]:
        outputs = [[GenerateOutput([5, 1], "x", [-0.1, -0.2], "stop")] for _ in prompts]
        on_output(0, outputs[0])
        deadline = time.monotonic() + 120
        while not (self.log.exists() and self.log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.log.exists():
            raise AssertionError("the first sample's reward was not computed while the engine generated")
        for i in range(1, len(prompts)):
            on_output(i, outputs[i])
        return outputs


def test_rewards_are_scored_while_the_engine_still_generates(rewards: str, pool_of, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    ctx = context(custom_rm_path=f"{rewards}.logged")
    source = RolloutSource(dataset=None, engine=OneAtATimeEngine(log), reward=ctx, decode=lambda ids, **_: "x")
    source.reward_pool = pool_of(ctx)
    samples = [
        Sample(prompt="p", index=i, group_index=0, prompt_tokens=[3, 4], metadata={"log": str(log)}, loss_mask=[])
        for i in range(4)
    ]
    source.continue_samples(samples, SamplingParams(max_new_tokens=4), rollout_id=0)
    assert all(s.status is Status.COMPLETED for s in samples)
    assert source.score_groups([samples]) == [samples]
    assert [s.reward for s in samples] == [2.0] * 4
    assert sorted(log.read_text().split()) == ["0", "1", "2", "3"]  # each scored once: the early calls were used


def test_pool_size_follows_the_setting_and_starts_only_for_big_batches() -> None:
    assert pool_size(0, 10_000) == 0 and pool_size(3, 1) == 3
    assert pool_size(None, AUTO_MIN_CALLS - 1) == 0
    assert pool_size(None, AUTO_MIN_CALLS) == (auto_workers() if auto_workers() >= 2 else 0)
