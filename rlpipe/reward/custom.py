"""Custom rewards by dotted path (config: `custom_rm_path: pkg.module.func`, Miles' `--custom-rm-path`).

The function may be sync or async and takes two positional arguments:
    per sample (`group_rm: false`): fn(sample: Sample, ctx: RewardContext) -> float
    per group  (`group_rm: true`):  fn(samples: list[Sample], ctx: RewardContext) -> list[float]
`load_custom_reward` imports and signature-checks it, so a bad path fails during config validation,
not an hour into the run.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any


def _import_module(module_name: str, path: str) -> Any:
    """Import `module_name`, telling a missing module apart from one that fails while importing."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # err.name is the module that was missing: ours (or a parent package), or a dependency of ours.
        if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(
                f"custom reward {path!r}: module {module_name!r} not found (is it on PYTHONPATH?)"
            ) from err
        raise ValueError(f"custom reward {path!r}: importing {module_name!r} failed: {err}") from err
    except Exception as err:
        raise ValueError(f"custom reward {path!r}: importing {module_name!r} failed: {err!r}") from err


def load_custom_reward(path: str, *, group_rm: bool = False) -> Callable[..., Any]:
    """Import "pkg.module.func" and check it can be called as fn(sample_or_samples, ctx).

    Raises ValueError naming `path` and the problem: malformed path, module not found, import error,
    attribute missing, not callable, or parameters that do not accept exactly two positional arguments.
    """
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"custom reward {path!r}: expected a dotted path 'pkg.module.func'")
    module = _import_module(module_name, path)
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"custom reward {path!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"custom reward {path!r}: {attr!r} is not callable (it is a {type(fn).__name__})")
    expected = "(samples, ctx) -> list[float] (group_rm=true)" if group_rm else "(sample, ctx) -> float"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise ValueError(f"custom reward {path!r}: cannot read its signature ({err}); expected {expected}") from err
    try:
        signature.bind(None, None)  # the two positional arguments the hub passes
    except TypeError as err:
        raise ValueError(f"custom reward {path!r}: wrong parameters {signature}: {err}; expected {expected}") from err
    return fn
