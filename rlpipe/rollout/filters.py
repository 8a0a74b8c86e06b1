"""Dynamic-sampling group filters (DAPO): `f(cfg, samples) -> bool`, True keeps the group.

Selected by `rollout.dynamic_sampling_filter_path`; plain Python so validation can import them cheaply.
"""

from __future__ import annotations

import statistics
from typing import Any

from rlpipe.data.sample import Sample, Status


def check_reward_nonzero_std(cfg: Any, samples: list[Sample], **kwargs: Any) -> bool:
    """Keep groups whose rewards differ: equal rewards give zero GRPO advantage and a flat gradient."""
    rewards = [float(s.reward or 0.0) for s in samples]
    return len(rewards) > 1 and statistics.pstdev(rewards) > 0.0


def check_no_aborted(cfg: Any, samples: list[Sample], **kwargs: Any) -> bool:
    """Keep groups in which no sample was aborted mid-generation."""
    return all(s.status != Status.ABORTED for s in samples)
