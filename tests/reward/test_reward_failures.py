"""Reward calls that raise or time out, under each `rollout.reward_failure` policy (fail / zero / drop_group).

Checked: the user's error leads the message under "fail"; "zero" scores just the failed samples 0; "drop_group"
drops exactly the groups with a failed call and dynamic sampling draws more in their place (or names the failures
when the waves run out); a sync or async reward sleeping past `reward_timeout_s` counts as a timeout instead of
hanging; a refused remote RM names its URL. Timeouts are tiny (0.2 s) against 30 s sleeps: the tests assert on
outcomes, never on elapsed seconds.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from rlpipe.config import load
from rlpipe.data.sample import Sample
from rlpipe.reward import RewardContext, RewardError, RewardServiceError, score_groups, score_samples
from rlpipe.rollout.engine import GenerateOutput, SamplingParams
from rlpipe.rollout.generate import RolloutSource
from rlpipe.rollout.waves import DynamicSamplingError, collect_groups

# Fails on the samples whose label is a multiple of 3: "bad label" for sync calls.
RAISING = """
def score(sample, ctx):
    if int(sample.label) % 3 == 0:
        raise ValueError(f"bad label {sample.label}")
    return 1.0

def rank(samples, ctx):
    return [score(s, ctx) for s in samples]
"""

SLEEPING = """
import asyncio
import time

def score(sample, ctx):
    if sample.label == "slow":
        time.sleep(30)
    return 1.0

async def ascore(sample, ctx):
    if sample.label == "slow":
        await asyncio.sleep(30)
    return 1.0
"""


def ctx(path: str, failure: str = "fail", **overrides: object) -> RewardContext:
    fields: dict[str, object] = {
        "rm_type": "f1",
        "eos_token_id": 1,
        "special_token_ids": frozenset({1}),
        "decode": lambda ids: "",
        "custom_rm_path": path,
        "reward_failure": failure,
    }
    return RewardContext(**(fields | overrides))


def groups_of(labels: list[list[str]]) -> list[list[Sample]]:
    """One group per inner list, samples indexed in order (group_index = group position)."""
    flat = [(g, label) for g, group in enumerate(labels) for label in group]
    samples = [Sample(prompt=f"p{g}", label=label, index=i, group_index=g) for i, (g, label) in enumerate(flat)]
    return [[s for s in samples if s.group_index == g] for g in range(len(labels))]


# ------------------------------------------------------------------------------------------------ raising
def test_fail_stops_with_the_rewards_own_error_first(write_module) -> None:
    write_module("rwf_raise_fail", RAISING)
    with pytest.raises(RewardError) as info:
        asyncio.run(score_groups(groups_of([["1", "2"], ["4", "6"]]), ctx("rwf_raise_fail.score")))
    message = str(info.value)
    assert message.startswith("ValueError: bad label 6")  # the user's error, type and message, first
    assert "rwf_raise_fail.py:4" in message  # where the user's code raised
    assert "reward rwf_raise_fail.score on sample 3 of the 4 in this batch" in message
    assert "rollout.reward_failure" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_zero_scores_only_the_failed_samples_zero(write_module) -> None:
    write_module("rwf_raise_zero", RAISING)
    groups = groups_of([["1", "3"], ["4", "5"], ["6", "9"]])
    scored = asyncio.run(score_groups(groups, ctx("rwf_raise_zero.score", "zero")))
    assert scored.kept == groups
    assert [[s.reward for s in g] for g in groups] == [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert scored.metrics() == {
        "reward_failures": 3.0,
        "reward_timeouts": 0.0,
        "groups_dropped/reward_failure": 0.0,
    }


@pytest.mark.parametrize("group_rm", [False, True])
def test_drop_group_drops_exactly_the_groups_with_a_failed_call(write_module, group_rm: bool) -> None:
    write_module(f"rwf_raise_drop_{group_rm}", RAISING)
    path = f"rwf_raise_drop_{group_rm}.{'rank' if group_rm else 'score'}"
    groups = groups_of([["1", "2"], ["4", "3"], ["5", "7"], ["9", "8"]])
    scored = asyncio.run(score_groups(groups, ctx(path, "drop_group", group_rm=group_rm)))
    assert scored.kept == [groups[0], groups[2]]
    assert scored.dropped == 2 and scored.failures == 2  # one failed call per dropped group either way
    assert all(s.reward is None for g in (groups[1], groups[3]) for s in g)  # nothing half-scored survives
    assert [s.reward for g in scored.kept for s in g] == [1.0] * 4


def test_flat_score_samples_marks_dropped_groups_none(write_module) -> None:
    write_module("rwf_raise_flat", RAISING)
    batch = [s for g in groups_of([["1", "3"], ["4", "5"]]) for s in g]
    assert asyncio.run(score_samples(batch, ctx("rwf_raise_flat.score", "drop_group"))) == [None, None, 1.0, 1.0]


# ------------------------------------------------------------------------------------------------ timeouts
@pytest.mark.parametrize("func", ["score", "ascore"])
def test_reward_sleeping_past_its_timeout_is_a_timeout_not_a_hang(write_module, func: str) -> None:
    """A sync reward (run on a worker thread) and an async one: each 30 s sleep ends as a failed call at 0.2 s.
    (Only slow samples here: on a loaded machine a fast call may take longer than 0.2 s too.)"""
    write_module(f"rwf_sleep_{func}", SLEEPING)
    path = f"rwf_sleep_{func}.{func}"
    groups = groups_of([["slow", "slow"]])
    scored = asyncio.run(score_groups(groups, ctx(path, "zero", reward_timeout_s=0.2)))
    assert [s.reward for s in groups[0]] == [0.0, 0.0]
    assert (scored.failures, scored.timeouts) == (2, 2)

    with pytest.raises(RewardError, match=r"^TimeoutError: no reward within rollout.reward_timeout_s=0.2 s"):
        asyncio.run(score_groups(groups_of([["slow"]]), ctx(path, reward_timeout_s=0.2)))


def test_refused_remote_reward_service_names_its_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/reward"
    remote = ctx(None, rm_type="remote", rm_url=url, max_retries=0)  # type: ignore[arg-type]
    with pytest.raises(RewardError) as info:
        asyncio.run(score_samples([Sample(prompt="p", index=7)], remote))
    message = str(info.value)
    assert message.startswith("RewardServiceError: reward service " + url)
    assert "reward remote on sample 0 of the 1 in this batch (Sample.index 7" in message
    assert isinstance(info.value.__cause__, RewardServiceError)


# ------------------------------------------------------------------------------- drop_group in a rollout
class CountingEngine:
    """Answers every prompt at once with one "stop" token per response; no model."""

    weight_version = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams, on_output=None) -> list[list[GenerateOutput]]:
        outputs = [[GenerateOutput([1], "", [-0.5], "stop") for _ in range(params.n)] for _ in prompts]
        for i, responses in enumerate(outputs if on_output is not None else []):
            on_output(i, responses)
        return outputs

    def abort(self) -> None:
        pass


class Prompts:
    """Prompt i has label str(i): the RAISING reward fails on every third prompt."""

    def __init__(self) -> None:
        self.offset = 0

    def next_batch(self, n: int) -> list[Sample]:
        rows = range(self.offset, self.offset + n)
        self.offset += n
        return [Sample(prompt=f"q{i}", label=str(i), index=i, prompt_tokens=[5, 6]) for i in rows]


def rollout_config(tmp_path: Path, *overrides: str):
    """The default tiny demo's config (its assets are never built: the engine and prompts here are stand-ins)."""
    base = [f"demo.cache_dir={tmp_path}", "ckpt.load=null", "ckpt.save=null", "rollout.shuffle=false"]
    sizes = ["rollout.batch_size=4", "rollout.n_samples=2", "rollout.reward_failure=drop_group"]
    return load([*base, *sizes, *overrides]).cfg


def test_drop_group_in_a_rollout_draws_more_prompts_like_a_filtered_group(tmp_path: Path, write_module) -> None:
    write_module("rwf_raise_rollout", RAISING)
    cfg = rollout_config(tmp_path)
    reward = ctx("rwf_raise_rollout.score", "drop_group")
    source = RolloutSource(Prompts(), CountingEngine(), reward, lambda *a, **k: "")
    groups = collect_groups(cfg, 0, source)
    # Wave 1 draws prompts 0-3 (0 and 3 fail), wave 2 draws 4-7 (6 fails): 1, 2, 4, 5 make the batch.
    assert [g[0].label for g in groups] == ["1", "2", "4", "5"]
    assert all(s.reward == 1.0 for g in groups for s in g)
    assert [s.group_index for g in groups for s in g] == [0, 0, 1, 1, 2, 2, 3, 3]
    m = source.metrics
    assert m["sampling_waves"] == 2 and m["groups_dropped/reward_failure"] == 3 and m["reward_failures"] == 6


def test_drop_group_that_leaves_too_few_groups_names_the_failures(tmp_path: Path, write_module) -> None:
    write_module("rwf_always_fails", "def score(sample, ctx):\n    raise RuntimeError('grader down')\n")
    cfg = rollout_config(tmp_path, "rollout.max_sampling_waves=2")
    source = RolloutSource(Prompts(), CountingEngine(), ctx("rwf_always_fails.score", "drop_group"), lambda *a, **k: "")
    with pytest.raises(DynamicSamplingError) as info:
        collect_groups(cfg, 0, source)
    message = str(info.value)
    assert "rollout.reward_failure=drop_group (8 groups dropped" in message and "after 2 waves" in message
