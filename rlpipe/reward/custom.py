"""Custom rewards by dotted path (config: `custom_rm_path: pkg.module.func`, Miles' `--custom-rm-path`).

The function may be sync or async and takes two positional arguments:
    per sample (`group_rm: false`): fn(sample: Sample, ctx: RewardContext) -> float
    per group  (`group_rm: true`):  fn(samples: list[Sample], ctx: RewardContext) -> list[float]
`load_custom_reward` imports and signature-checks it, so a bad path fails during config validation,
not an hour into the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlpipe.config.dotted import load_callable


def load_custom_reward(path: str, *, group_rm: bool = False) -> Callable[..., Any]:
    """Import "pkg.module.func" and check it can be called as fn(sample_or_samples, ctx).

    Raises ValueError naming `path` and the problem: malformed path, module not found, import error,
    attribute missing, not callable, or parameters that do not accept two positional arguments.
    """
    expected = "(samples, ctx) -> list[float] (group_rm=true)" if group_rm else "(sample, ctx) -> float"
    try:
        return load_callable(path, 2, expected)  # the two positional arguments the hub passes
    except ValueError as err:
        raise ValueError(f"custom reward {path!r}: {err}") from err
