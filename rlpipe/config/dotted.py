"""Pluggable functions by dotted path, as in Miles: imported and signature-checked during validation."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

# config key -> (positional parameters the function is called with, how they are documented)
DOTTED_FIELDS: dict[str, tuple[int, str]] = {
    "rollout.dynamic_sampling_filter_path": (2, "f(cfg, samples) -> bool"),
    "rollout.buffer_filter_path": (4, "f(cfg, rollout_id, buffer, num_samples) -> list[Sample]"),
    "rollout.rollout_function_path": (3, "f(cfg, rollout_id, source: RolloutSource) -> list[list[Sample]]"),
    "rollout.custom_rm_path": (2, "checked by rlpipe.reward.load_custom_reward"),
    "algo.custom_loss_function_path": (2, "f(cfg, inputs) -> (loss, metrics)"),
}


def import_dotted(path: str) -> Callable[..., Any]:
    """Import `pkg.module.attr` (the last dot separates the attribute)."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"`{path}` is not a dotted path (expected module.function)")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module `{module_name}` has no attribute `{attr}`") from None


def check_dotted(key: str, path: str) -> str | None:
    """None when `path` imports to a callable accepting the documented arguments, else what is wrong."""
    n_args, doc = DOTTED_FIELDS[key]
    try:
        fn = import_dotted(path)
    except ImportError as exc:  # ModuleNotFoundError included
        return f"does not import: {exc}"
    except Exception as exc:  # the user's module raised while importing
        return f"importing it raised {type(exc).__name__}: {exc}"
    if not callable(fn):
        return f"is not callable (a {type(fn).__name__}); expected {doc}"
    try:
        inspect.signature(fn).bind(*([None] * n_args))
    except TypeError:
        return f"has signature {inspect.signature(fn)}; expected {doc}"
    except ValueError:  # builtins without a signature: accept
        return None
    return None
