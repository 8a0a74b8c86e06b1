"""Multi-turn episodes under dynamic sampling and partial rollout, through RolloutRole (the tool demo's tokenizer,
random weights, a scripted environment, one-token turns). Where the engine abort lands is left to thread timing (seen:
before a chunk's first token, or after its episodes ended), so the checks hold wherever it lands: kept groups are
whole episodes, buffered ones resume to whole episodes, every episode is the template's conversation token for token,
and no environment is leaked. An abort in the middle of an episode is set up deterministically, and resumed, in
tests/rollout/test_multi_turn.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mode_helpers import demo_config

from rlpipe.data.sample import Status
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.rollout.role import RolloutRole
from tests.rollout.multi_turn_helpers import conversation

torch.set_num_threads(1)
EVERY_TOKEN = "[" + ",".join(map(str, range(27))) + "]"  # one-token turns: the episode's shape is the environment's
MULTI_TURN = [
    "experiment=tool-cpu", "rollout.env=mode_helpers.three_turn_env", f"rollout.stop_token_ids={EVERY_TOKEN}",
    "rollout.shuffle=false", "rollout.batch_size=4", "rollout.n_samples=2", "rollout.num_rollout=2",
    "rollout.over_sampling_batch_size=8", "rollout.dynamic_sampling_filter_path=mode_helpers.keep_all",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


def role_for(cache: Path, *overrides: str) -> RolloutRole:
    cfg = demo_config(cache, *MULTI_TURN, *overrides)
    assert cfg.ckpt.hf_checkpoint is not None
    return RolloutRole(cfg, HFEngine(cfg.ckpt.hf_checkpoint, seed=0))


def assert_whole_episode(role: RolloutRole, sample) -> None:
    assert sample.status == Status.COMPLETED and sample.metadata["turns"] == 3 and sample.reward is not None
    assert sample.prompt_tokens + sample.response_tokens == conversation(role.tokenizer, sample, ["1", "2"])


def test_partial_rollout_buffers_episodes_mid_way_and_finishes_them_with_their_turns(cache: Path) -> None:
    role = role_for(cache, "rollout.partial_rollout=true")
    first = role.generate(0)
    assert first.metrics["groups_kept"] == 4 and first.metrics["env/turns_mean"] == 3.0
    for sample in first.samples:
        assert_whole_episode(role, sample)
    buffered = [s for g in role.source.buffer for s in g]
    unfinished = [s for s in buffered if s.status in (Status.PENDING, Status.ABORTED)]
    assert set(role.episodes.live) == {s.metadata["episode_id"] for s in unfinished if "episode_id" in s.metadata}
    heads = {id(s): list(s.response_tokens) for s in buffered}

    second = role.generate(1)
    resumed = second.samples[: len(buffered)]  # resumed groups come first, in buffer order
    assert [id(s) for s in resumed] == [id(s) for s in buffered]
    for sample in resumed:
        assert sample.response_tokens[: len(heads[id(sample)])] == heads[id(sample)]
        assert_whole_episode(role, sample)


def test_without_partial_rollout_aborted_episodes_free_their_environments(cache: Path) -> None:
    role = role_for(cache)
    for rollout_id in range(2):
        rollout = role.generate(rollout_id)
        assert len(rollout.samples) == 8 and all(s.metadata["turns"] == 3 for s in rollout.samples)
        assert not role.source.buffer and not role.episodes.live
