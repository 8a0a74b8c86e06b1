"""Shared fixtures for the SGLang tests: two tiny checkpoints (different seeds), a fake server over the first, and
a blank recipe (experiment=none, files in tmp_path, CPU) with error capture, as in tests/config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from rlpipe.config import ConfigError, Problem, load
from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from tests.config.hf_folders import TINY_CONFIG, write_hf_folder
from tests.fakes.fake_sglang import FakeSGLang

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_sglang")
    return build_tiny_checkpoint(root / "a", TinyModelSpec(seed=0)), build_tiny_checkpoint(
        root / "b", TinyModelSpec(seed=1)
    )


@pytest.fixture()
def fake(ckpts: tuple[Path, Path]) -> Iterator[FakeSGLang]:
    server = FakeSGLang(ckpts[0]).start()
    yield server
    server.stop()


@pytest.fixture
def recipe(tmp_path: Path) -> list[str]:
    hf = write_hf_folder(tmp_path / "hf", TINY_CONFIG)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "label": "{i}"}}\n' for i in range(8)))
    return [
        "experiment=none",
        f"ckpt.hf_checkpoint={hf}",
        f"rollout.prompt_data={data}",
        "rollout.rm_type=math",
        "rollout.num_rollout=2",
        "rollout.max_response_len=16",  # the tiny model has 64 positions
        "cluster.accelerator=cpu",
    ]


@pytest.fixture
def problems() -> Callable[[list[str]], list[Problem]]:
    def run(overrides: list[str]) -> list[Problem]:
        with pytest.raises(ConfigError) as info:
            load(overrides)
        return info.value.problems

    return run
