"""Reward hub: `rm_type` -> async reward function, plus custom rewards loaded by dotted path.

Importing this package is cheap (no math-verify, no aiohttp): the config layer validates `rm_type`
against `REWARD_TYPES` and a custom path with `load_custom_reward` before anything heavy starts.
"""

from rlpipe.reward.context import RewardContext
from rlpipe.reward.custom import load_custom_reward
from rlpipe.reward.hub import (
    REWARD_TYPES,
    RewardError,
    Scored,
    get_reward,
    group_by_index,
    register,
    score_groups,
    score_samples,
)
from rlpipe.reward.remote import RewardServiceError

__all__ = [
    "REWARD_TYPES",
    "RewardContext",
    "RewardError",
    "RewardServiceError",
    "Scored",
    "get_reward",
    "group_by_index",
    "load_custom_reward",
    "register",
    "score_groups",
    "score_samples",
]
