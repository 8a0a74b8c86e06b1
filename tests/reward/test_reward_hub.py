"""The registry: names, duplicates, unknown names, a light import, and RewardContext checks."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from rlpipe.data.sample import Sample
from rlpipe.reward import REWARD_TYPES, RewardContext, get_reward, register, score_samples
from rlpipe.reward.exact_match import exact_match_reward


def ctx(**overrides: object) -> RewardContext:
    fields: dict[str, object] = {
        "rm_type": "f1",
        "eos_token_id": 1,
        "special_token_ids": frozenset({0, 1}),
        "decode": lambda ids: "",
    }
    fields.update(overrides)
    return RewardContext(**fields)


def test_reward_types_are_the_sorted_builtin_names() -> None:
    assert REWARD_TYPES == ("dapo", "deepscaler", "exact_match", "f1", "math", "reasoning_gym", "remote")
    for name in REWARD_TYPES:
        assert asyncio.iscoroutinefunction(get_reward(name))


def test_unknown_rm_type_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown rm_type 'maths'; valid: dapo, deepscaler, exact_match"):
        get_reward("maths")
    with pytest.raises(ValueError, match="unknown rm_type 'nope'"):
        asyncio.run(score_samples([Sample(prompt="p")], ctx(rm_type="nope")))


def test_duplicate_registration_is_rejected() -> None:
    with pytest.raises(ValueError, match="'exact_match' is already registered"):
        register("exact_match", exact_match_reward)
    assert get_reward("exact_match") is exact_match_reward


def test_sync_function_cannot_be_registered() -> None:
    def sync_reward(sample: Sample, context: RewardContext) -> float:
        return 1.0

    with pytest.raises(TypeError, match="must be `async def"):
        register("sync_reward_for_test", sync_reward)
    assert "sync_reward_for_test" not in REWARD_TYPES


def test_importing_the_hub_stays_light() -> None:
    """The config layer imports REWARD_TYPES; math-verify (sympy), aiohttp and torch must stay unloaded."""
    code = (
        "import sys; from rlpipe.reward import REWARD_TYPES; "
        "print(sorted(m for m in ('math_verify', 'sympy', 'aiohttp', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_empty_batch_scores_to_empty_list() -> None:
    assert asyncio.run(score_samples([], ctx())) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"retry_backoff_s": -0.1}, "retry_backoff_s must be >= 0"),
        ({"max_concurrency": 0}, "max_concurrency must be >= 1"),
        ({"rm_type": "remote"}, "rm_type 'remote' needs rm_url"),
    ],
)
def test_context_rejects_bad_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ctx(**overrides)
