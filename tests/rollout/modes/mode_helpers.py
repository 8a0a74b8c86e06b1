"""Shared by the execution-mode tests: a resolved tiny-demo config with its assets built, and group filters
importable by dotted path (`mode_helpers.keep_half`): pytest puts this folder on sys.path."""

from __future__ import annotations

import threading
from pathlib import Path

from rlpipe.config import load
from rlpipe.config.schema import RunConfig
from rlpipe.data.demo import build_demo_assets
from rlpipe.data.sample import Sample


def demo_config(cache: Path, *overrides: str) -> RunConfig:
    """The default tiny-cpu experiment (random weights, reverse task), assets under `cache`, plus overrides."""
    cfg = load([f"demo.cache_dir={cache}", "ckpt.load=null", "ckpt.save=null", *overrides]).cfg
    build_demo_assets(cfg)
    return cfg


def label_parity(group: list[Sample]) -> int:
    return int(str(group[0].label)[-1]) % 2


def keep_half(cfg: object, samples: list[Sample]) -> bool:
    """Keeps the prompts whose answer ends in an even digit (about half; the first four rows are all odd)."""
    return label_parity(samples) == 0


def keep_none(cfg: object, samples: list[Sample]) -> bool:
    """Rejects every group: dynamic sampling must hit its wave cap, not loop forever."""
    return False


def keep_all(cfg: object, samples: list[Sample]) -> bool:
    return True


# Set by a test's engine hook once the second engine call is in its first decode step; the filter below waits
# for it, so a rollout's first chunk is judged only when the second is surely in flight (and must be aborted, not
# cancelled) and has sampled exactly one token.
SECOND_CALL_STARTED = threading.Event()


def keep_all_once_second_call_runs(cfg: object, samples: list[Sample]) -> bool:
    assert SECOND_CALL_STARTED.wait(timeout=60)
    return True


def three_turn_env(cfg: object) -> object:
    """rollout.env for the multi-turn mode tests: a scripted environment that answers two turns, then is done."""
    from tests.rollout.multi_turn_helpers import ScriptedEnv

    return ScriptedEnv(turns=3)
