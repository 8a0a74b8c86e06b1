"""Custom rewards by dotted path (config: `custom_rm_path: pkg.module.func`, Miles' `--custom-rm-path`).

The function may be sync or async and takes two positional arguments:
    per sample (`group_rm: false`): fn(sample: Sample, ctx: RewardContext) -> float
    per group  (`group_rm: true`):  fn(samples: list[Sample], ctx: RewardContext) -> list[float]
A sync one runs on worker threads, several at once (`RewardContext.max_concurrency`), so that a slow or hanging
call can time out (`rollout.reward_timeout_s`) without stalling the rest: it must be thread-safe.
Config validation imports and signature-checks it (in a child process, `rlpipe.config.dotted`), so a bad
path fails then, not an hour into the run; `load_custom_reward` does the same in the process that scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlpipe.config.dotted import load_callable

REWARD_ARGS = 2  # the positional arguments the hub passes: the sample (or group) and the context


def reward_signature(group_rm: bool) -> str:
    """The call a custom reward must accept, as error messages show it."""
    return "(samples, ctx) -> list[float] (group_rm=true)" if group_rm else "(sample, ctx) -> float"


def load_custom_reward(path: str, *, group_rm: bool = False) -> Callable[..., Any]:
    """Import "pkg.module.func" in this process and check it can be called as fn(sample_or_samples, ctx).

    Raises ValueError naming `path` and the problem: malformed path, module not found, import error (sys.exit()
    included), attribute missing, not callable, or parameters that do not accept two positional arguments.
    Config validation checks the same in a child process (`rlpipe.config.dotted.check_dotted_paths`).
    """
    try:
        return load_callable(path, REWARD_ARGS, reward_signature(group_rm))
    except ValueError as err:
        raise ValueError(f"custom reward {path!r}: {err}") from err
