"""Fixtures for the config tests: a valid blank recipe whose files live in tmp_path, and error capture.

`load` reads the real conf/ folder; the blank recipe (`experiment=none`) plus a checkpoint folder and a
10-row prompt file in tmp_path is the smallest config that resolves, so each rule test adds only the
overrides that exercise its rule.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hf_folders import TINY_CONFIG, write_hf_folder

from rlpipe.config import ConfigError, Problem, load

PROMPT_ROWS = 10


@pytest.fixture
def recipe(tmp_path: Path) -> list[str]:
    """Overrides for a blank recipe that resolves: an HF folder laid out as a real one (the `tiny` model group's
    config.json, a tokenizer file, a weights file; none of them loadable, the config phase reads none), 10 prompts,
    math reward, CPU."""
    hf = write_hf_folder(tmp_path / "hf", TINY_CONFIG)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "label": "{i}"}}\n' for i in range(PROMPT_ROWS)))
    return [
        "experiment=none",
        f"ckpt.hf_checkpoint={hf}",
        f"rollout.prompt_data={data}",
        "rollout.rm_type=math",
        "rollout.num_rollout=3",
        "rollout.max_response_len=16",  # the tiny model has 64 positions
        "cluster.accelerator=cpu",  # not auto: the rules must not depend on the machine the tests run on
    ]


@pytest.fixture
def problems() -> Callable[..., list[Problem]]:
    """problems(overrides, **load_kwargs): the ConfigError's problems; fails the test if the config loads."""

    def run(overrides: list[str], **kwargs: object) -> list[Problem]:
        with pytest.raises(ConfigError) as info:
            load(overrides, **kwargs)  # type: ignore[arg-type]
        return info.value.problems

    return run
