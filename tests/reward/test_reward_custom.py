"""Custom rewards by dotted path: modules written to tmp_path, loaded, checked and scored."""

from __future__ import annotations

import asyncio
import re

import pytest

from rlpipe.data.sample import Sample
from rlpipe.reward import RewardContext, load_custom_reward, score_samples


def custom_ctx(path: str, group_rm: bool = False, max_concurrency: int = 64) -> RewardContext:
    return RewardContext(
        rm_type="f1",  # ignored: the custom path takes precedence
        eos_token_id=1,
        special_token_ids=frozenset({1}),
        decode=lambda ids: "",
        custom_rm_path=path,
        group_rm=group_rm,
        max_concurrency=max_concurrency,
    )


def samples(texts: list[str], groups: list[int]) -> list[Sample]:
    return [
        Sample(prompt="p", label="yes", response_text=t, group_index=g, index=i)
        for i, (t, g) in enumerate(zip(texts, groups, strict=True))
    ]


def test_sync_per_sample_reward(write_module) -> None:
    write_module(
        "rw_sync_mod",
        """
        def score(sample, ctx):
            return 1.0 if sample.response_text == sample.label else 0.25
        """,
    )
    batch = samples(["yes", "no"], [0, 0])
    assert asyncio.run(score_samples(batch, custom_ctx("rw_sync_mod.score"))) == [1.0, 0.25]
    assert [s.reward for s in batch] == [1.0, 0.25]


def test_async_per_sample_reward(write_module) -> None:
    write_module(
        "rw_async_mod",
        """
        import asyncio

        async def score(sample, ctx):
            await asyncio.sleep(0)
            return len(sample.response_text)
        """,
    )
    assert asyncio.run(score_samples(samples(["a", "abc"], [0, 1]), custom_ctx("rw_async_mod.score"))) == [1.0, 3.0]


def test_group_reward_gets_each_group_once(write_module) -> None:
    write_module(
        "rw_group_mod",
        """
        CALLS = []

        def rank(samples, ctx):
            # reward = rank of the response length inside its group (0 = shortest)
            CALLS.append([s.index for s in samples])
            order = sorted(range(len(samples)), key=lambda i: len(samples[i].response_text))
            ranks = [0] * len(samples)
            for r, i in enumerate(order):
                ranks[i] = r
            return ranks
        """,
    )
    import rw_group_mod

    batch = samples(["aaa", "b", "cc", "dddd", "e"], [7, 3, 7, 3, 7])
    rewards = asyncio.run(score_samples(batch, custom_ctx("rw_group_mod.rank", group_rm=True)))
    assert sorted(rw_group_mod.CALLS) == [[0, 2, 4], [1, 3]]  # one call per group_index, input order kept
    assert rewards == [2.0, 0.0, 1.0, 1.0, 0.0]


def test_group_reward_of_wrong_length_is_an_error(write_module) -> None:
    write_module("rw_short_mod", "def rank(samples, ctx):\n    return [1.0]\n")
    with pytest.raises(TypeError, match=r"rw_short_mod.rank returned \[1.0\] for a group of 2 samples"):
        asyncio.run(score_samples(samples(["a", "b"], [0, 0]), custom_ctx("rw_short_mod.rank", group_rm=True)))


def test_non_numeric_reward_is_an_error(write_module) -> None:
    write_module("rw_str_mod", "def score(sample, ctx):\n    return 'high'\n")
    with pytest.raises(TypeError, match=re.escape("rw_str_mod.score returned 'high'; expected a finite number")):
        asyncio.run(score_samples(samples(["a"], [0]), custom_ctx("rw_str_mod.score")))


def test_concurrency_is_bounded(write_module) -> None:
    write_module(
        "rw_slow_mod",
        """
        import asyncio

        IN_FLIGHT = 0
        PEAK = 0

        async def score(sample, ctx):
            global IN_FLIGHT, PEAK
            IN_FLIGHT += 1
            PEAK = max(PEAK, IN_FLIGHT)
            for _ in range(5):  # yield so that other calls can start if the bound lets them
                await asyncio.sleep(0)
            IN_FLIGHT -= 1
            return 1.0
        """,
    )
    import rw_slow_mod

    asyncio.run(score_samples(samples(["a"] * 10, [0] * 10), custom_ctx("rw_slow_mod.score", max_concurrency=3)))
    assert rw_slow_mod.PEAK == 3


def test_load_checks_signature(write_module) -> None:
    write_module(
        "rw_sig_mod",
        """
        def one(sample):
            return 1.0

        def three(sample, ctx, extra):
            return 1.0

        def with_default(sample, ctx, scale=2.0):
            return scale

        def star(*args):
            return 1.0

        NOT_A_FUNCTION = 3
        """,
    )
    with pytest.raises(ValueError, match=r"'rw_sig_mod.one': has signature \(sample\); expected \(sample, ctx\)"):
        load_custom_reward("rw_sig_mod.one")
    with pytest.raises(ValueError, match=r"'rw_sig_mod.three': has signature.*expected \(samples, ctx\)"):
        load_custom_reward("rw_sig_mod.three", group_rm=True)
    with pytest.raises(ValueError, match=re.escape("'rw_sig_mod.NOT_A_FUNCTION': is not callable (a int)")):
        load_custom_reward("rw_sig_mod.NOT_A_FUNCTION")
    assert load_custom_reward("rw_sig_mod.with_default").__name__ == "with_default"
    assert load_custom_reward("rw_sig_mod.star").__name__ == "star"


def test_load_reports_missing_module_and_attribute(write_module) -> None:
    write_module("rw_present_mod", "def score(sample, ctx):\n    return 1.0\n")
    write_module("rw_broken_dep_mod", "import rw_dependency_that_is_not_installed\n")
    with pytest.raises(
        ValueError, match=re.escape("'rw_absent_mod.score': does not import: module `rw_absent_mod` not")
    ):
        load_custom_reward("rw_absent_mod.score")
    with pytest.raises(
        ValueError, match=re.escape("'no_such_pkg.sub.score': does not import: module `no_such_pkg.sub`")
    ):
        load_custom_reward("no_such_pkg.sub.score")
    with pytest.raises(ValueError, match="module `rw_present_mod` has no attribute `scorer`"):
        load_custom_reward("rw_present_mod.scorer")
    with pytest.raises(ValueError, match="importing `rw_broken_dep_mod` failed: No module named 'rw_dependency"):
        load_custom_reward("rw_broken_dep_mod.score")
    with pytest.raises(ValueError, match="is not a dotted path"):
        load_custom_reward("score")
