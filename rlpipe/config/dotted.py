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
    """Import `pkg.module.attr` (the last dot separates the attribute); ValueError says what is wrong, in words
    that follow the path ("`pkg.module.attr` <message>")."""
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError("is not a dotted path (expected module.function)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # err.name is the module that was missing: the user's (or a parent package), or a dependency of it.
        if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"does not import: module `{module_name}` not found (is it on PYTHONPATH?)") from err
        raise ValueError(f"does not import: importing `{module_name}` failed: {err}") from err
    except Exception as err:  # the user's module raised while importing
        raise ValueError(f"importing it raised {type(err).__name__}: {err}") from err
    if not hasattr(module, attr):
        raise ValueError(f"does not import: module `{module_name}` has no attribute `{attr}`")
    return getattr(module, attr)


def load_callable(path: str, n_args: int, expected: str) -> Callable[..., Any]:
    """`import_dotted`, then check the object can be called with `n_args` positional arguments (`expected`
    documents the call); ValueError says what is wrong, as import_dotted does."""
    fn = import_dotted(path)
    if not callable(fn):
        raise ValueError(f"is not callable (a {type(fn).__name__}); expected {expected}")
    try:
        signature = inspect.signature(fn)
    except ValueError:  # builtins without a signature: accept
        return fn
    try:
        signature.bind(*([None] * n_args))
    except TypeError:
        raise ValueError(f"has signature {signature}; expected {expected}") from None
    return fn


def check_dotted(key: str, path: str) -> str | None:
    """None when `path` imports to a callable accepting the documented arguments of `key`, else what is wrong."""
    n_args, doc = DOTTED_FIELDS[key]
    try:
        load_callable(path, n_args, doc)
    except ValueError as err:
        return str(err)
    return None
