"""What a reward function may know besides the sample: tokenizer facts and reward-service settings.

Tokenizer-free on purpose: the context carries the few ids and the decode function the rewards need,
so it pickles across Ray and tests can build one without loading a tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RewardContext:
    """Settings shared by every reward call of a run (built once from the frozen RunConfig).

    rm_type:          registry name of the reward (`REWARD_TYPES`); ignored when `custom_rm_path` is set
    eos_token_id:     the id that ends a completed response
    special_token_ids: every special id (pad, bos, eos, chat markers); `exact_match` scores 0 if one
                      appears before EOS
    decode:           token ids -> text, without dropping anything (used by `exact_match`)
    rm_url:           endpoint of the `remote` reward service
    timeout_s:        per-attempt timeout of one remote request, seconds
    max_retries:      extra attempts after the first failed remote request
    retry_backoff_s:  wait before the first retry; doubles each retry
    max_concurrency:  reward calls in flight at once in `score_samples` (bounds load on a remote RM)
    custom_rm_path:   "pkg.module.func" of a user reward; takes precedence over rm_type, as in Miles
    group_rm:         the custom reward scores one prompt's group at once: `(samples, ctx) -> list[float]`;
                      no effect on built-in rewards (as in Miles, where they are gathered per sample)
    reward_timeout_s: longest one reward call (a sample, or a group with group_rm) may take, retries of a remote
                      call included; a slower call counts as failed
    reward_failure:   what a call that raises or times out does: "fail" raises `RewardError`, "zero" scores
                      its samples 0.0, "drop_group" drops its group from the rollout (`rlpipe.reward.hub`)
    """

    rm_type: str
    eos_token_id: int
    special_token_ids: frozenset[int]
    decode: Callable[[list[int]], str]
    rm_url: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    max_concurrency: int = 64
    custom_rm_path: str | None = None
    group_rm: bool = False
    reward_timeout_s: float = 60.0
    reward_failure: Literal["fail", "zero", "drop_group"] = "fail"

    @property
    def scores_groups(self) -> bool:
        """One reward call per group: a custom reward with `group_rm` (it has no effect on built-ins)."""
        return self.custom_rm_path is not None and self.group_rm

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"RewardContext.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"RewardContext.max_retries must be >= 0, got {self.max_retries}")
        if self.retry_backoff_s < 0:
            raise ValueError(f"RewardContext.retry_backoff_s must be >= 0, got {self.retry_backoff_s}")
        if self.max_concurrency < 1:
            raise ValueError(f"RewardContext.max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.reward_timeout_s <= 0:
            raise ValueError(f"RewardContext.reward_timeout_s must be > 0, got {self.reward_timeout_s}")
        if self.reward_failure not in ("fail", "zero", "drop_group"):
            raise ValueError(f"RewardContext.reward_failure must be fail, zero or drop_group: {self.reward_failure!r}")
        if self.custom_rm_path is None and self.rm_type == "remote" and not self.rm_url:
            raise ValueError(
                "rm_type 'remote' needs rm_url (the reward service endpoint, e.g. http://host:8000/reward)"
            )
