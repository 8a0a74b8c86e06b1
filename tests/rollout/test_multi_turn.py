"""Multi-turn episodes: token in / token out, exact loss masks, budgets, environment failures, resumption.

The engine is the real HF engine over a tiny checkpoint with random weights; every token is made a stop token,
so each assistant turn is exactly one sampled token and an episode's shape is decided by the scripted environment
alone. The observation tokens are checked against the chat template's own rendering of the whole conversation
(an independent reference: transformers renders it, nothing of rlpipe's), for the tiny template and for Qwen2.5's
and Qwen3's (TRL's copies of them) on a character tokenizer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from trl.chat_template_utils import qwen2_5_chat_template, qwen3_chat_template

from rlpipe.data.sample import Sample, Status
from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from rlpipe.data.tokenizer import encode_prompt, load_tokenizer
from rlpipe.reward import RewardContext, RewardError, score_groups
from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.rollout.multi_turn import EpisodeRunner, ObservationRenderer, episode_metrics, scripted_episode
from rlpipe.rollout.samples_io import sample_from_dict, sample_to_dict
from tests.rollout.multi_turn_helpers import (
    ScriptedEnv,
    char_tokenizer_with,
    conversation,
    fresh,
    make_source,
    one_token_turns,
    runs,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tool_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tool") / "hf", TinyModelSpec(tool_vocab=True, seed=2))


@pytest.fixture(scope="module")
def engine(tool_ckpt: Path) -> HFEngine:
    return HFEngine(tool_ckpt, seed=0)


def test_an_episode_is_the_templates_conversation_token_for_token_with_observations_masked(engine) -> None:
    envs: list[ScriptedEnv] = []
    source = make_source(engine, engine.tokenizer, lambda: envs.append(ScriptedEnv(turns=3)) or envs[-1])
    samples = fresh(engine.tokenizer)
    source.continue_samples(samples, one_token_turns(engine.tokenizer), rollout_id=0)
    tok = engine.tokenizer
    for sample, env in zip(samples, envs, strict=True):
        assert sample.status == Status.COMPLETED
        assert [m for m, _ in runs(sample.loss_mask)] == [1, 1, 1]  # three one-token turns
        assert sample.prompt_tokens + sample.response_tokens == conversation(tok, sample, ["1", "2"])
        masked = [i for i, m in enumerate(sample.loss_mask) if m == 0]
        assert masked and all(sample.rollout_log_probs[i] == 0.0 for i in masked)
        assert all(sample.rollout_log_probs[i] < 0.0 for i, m in enumerate(sample.loss_mask) if m == 1)
        assert len(sample.loss_mask) == len(sample.response_tokens) == len(sample.rollout_log_probs)
        # the environment saw each turn's text, and the reward reads the last turn only
        turn_ids = [sample.response_tokens[i] for i, m in enumerate(sample.loss_mask) if m == 1]
        assert env.actions == [tok.decode([t], skip_special_tokens=True) for t in turn_ids]
        assert sample.last_turn_tokens == turn_ids[-1:]
        assert sample.metadata["turns"] == 3 and sample.metadata["env_reward"] == 1.0
        assert sample.metadata["env_metrics"] == {"steps": 3.0}
    assert not source.episodes.live  # every finished episode let go of its environment
    metrics = episode_metrics(samples)
    assert metrics["env/turns_mean"] == 3.0 and metrics["env/steps_mean"] == 3.0 and metrics["env/errors"] == 0.0
    assert metrics["env/masked_tokens_mean"] == sum(s.loss_mask.count(0) for s in samples) / 3


@pytest.mark.parametrize("template", [qwen2_5_chat_template, qwen3_chat_template], ids=["qwen2.5", "qwen3"])
def test_qwen_tool_results_follow_the_models_im_end_as_the_template_renders_them(template: str) -> None:
    tok = char_tokenizer_with(template)
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>'
    results = [{"role": "tool", "content": "5"}, {"role": "tool", "content": "6"}]
    prompt = encode_prompt(tok, "add 2 and 3", True)
    turn = [*tok.encode(call, add_special_tokens=False), tok.eos_token_id]  # the model stops at <|im_end|>
    observation = ObservationRenderer(tok)(results, turn[-1])
    assert tok.decode(observation) == (
        "\n<|im_start|>user\n<tool_response>\n5\n</tool_response>\n<tool_response>\n6\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    whole = tok.apply_chat_template(
        [{"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": call}, *results],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt + turn + observation == tok.encode(whole, add_special_tokens=False)


def test_budgets_end_episodes_as_truncated(engine) -> None:
    tok = engine.tokenizer
    source = make_source(engine, engine.tokenizer, lambda: ScriptedEnv(turns=5), max_turns=2)
    samples = fresh(engine.tokenizer)
    source.continue_samples(samples, one_token_turns(engine.tokenizer), rollout_id=0)
    for sample in samples:  # the environment wanted a third turn: max_turns cut it, nothing appended after turn 2
        assert (sample.status, sample.metadata["turns"]) == (Status.TRUNCATED, 2)
        assert sample.loss_mask[-1] == 1 and "env_reward" not in sample.metadata

    # an observation that would leave no room for another turn is not appended
    obs_len = len(ObservationRenderer(tok)([{"role": "tool", "content": "1"}], tok.eos_token_id))
    source = make_source(engine, engine.tokenizer, lambda: ScriptedEnv(turns=5))
    samples = fresh(engine.tokenizer)
    source.continue_samples(samples, one_token_turns(engine.tokenizer, max_new_tokens=1 + obs_len), rollout_id=0)
    assert all((s.status, s.response_length, s.metadata["turns"]) == (Status.TRUNCATED, 1, 1) for s in samples)

    # max_turn_tokens cuts a turn that would run longer
    source = make_source(engine, engine.tokenizer, lambda: ScriptedEnv(turns=5), max_turn_tokens=2)
    samples = fresh(engine.tokenizer)
    source.continue_samples(samples, SamplingParams(max_new_tokens=40, temperature=1.0), rollout_id=0)
    for sample in samples:
        assert len(sample.last_turn_tokens) <= 2
        if len(sample.last_turn_tokens) == 2 and sample.last_turn_tokens[-1] != tok.eos_token_id:
            assert sample.status == Status.TRUNCATED


def reward_ctx(engine: HFEngine, policy: str) -> RewardContext:
    tok = engine.tokenizer
    return RewardContext(
        rm_type="exact_match", eos_token_id=tok.eos_token_id, special_token_ids=frozenset(tok.all_special_ids),
        decode=tok.decode, reward_failure=policy,
    )  # fmt: skip


def test_a_failing_or_hanging_environment_ends_its_episode_and_counts_as_a_failed_reward(engine) -> None:
    made = iter([ScriptedEnv(fail_at=2), ScriptedEnv(hang_at=1), ScriptedEnv(turns=2)])
    source = make_source(engine, engine.tokenizer, lambda: next(made), env_timeout_s=0.2)
    samples = fresh(engine.tokenizer)
    source.continue_samples(samples, one_token_turns(engine.tokenizer), rollout_id=0)
    broke, hung, fine = samples
    assert "ValueError: the environment broke" in broke.metadata["env_error"]
    assert broke.metadata["turns"] == 2 and hung.metadata["turns"] == 1
    assert "no answer within rollout.env_timeout_s=0.2 s" in hung.metadata["env_error"]
    assert "env_error" not in fine.metadata and fine.metadata["env_reward"] == 1.0
    assert episode_metrics(samples)["env/errors"] == 2.0

    scored = asyncio.run(score_groups([[s] for s in samples], reward_ctx(engine, "zero")))
    assert [s.reward for s in samples] == [0.0, 0.0, 1.0]  # the environment's own reward for the finished one
    assert scored.failures == 2
    with pytest.raises(RewardError, match=r"the environment tests\.ScriptedEnv failed: ValueError"):
        asyncio.run(score_groups([[broke]], reward_ctx(engine, "fail")))


def test_an_episode_cut_short_resumes_with_its_turns(engine) -> None:
    """A partial rollout's aborted episode: the rest is generated from where it stands, against its own environment
    when it is still live, else (restored from a checkpoint) against a fresh one that was reset."""
    envs: list[ScriptedEnv] = []
    source = make_source(engine, engine.tokenizer, lambda: envs.append(ScriptedEnv(turns=3)) or envs[-1], max_turns=1)
    samples = fresh(engine.tokenizer)
    source.continue_samples(samples, one_token_turns(engine.tokenizer), rollout_id=0)
    assert all(s.status == Status.TRUNCATED for s in samples)  # max_turns=1: one turn, the observation not added

    # the same first turn again, now stopped before the model's second turn as an abort would
    source = make_source(engine, engine.tokenizer, lambda: envs.append(ScriptedEnv(turns=3)) or envs[-1], max_turns=8)
    first = fresh(engine.tokenizer)
    runner = source.episodes
    asyncio.run(runner._reset(first))
    params = one_token_turns(engine.tokenizer)
    source.generate_turn(first, params, 0, [params.max_new_tokens] * 3)
    for sample in first:
        sample.metadata["turns"] = 1
    results = asyncio.run(runner._step(first, engine.tokenizer.decode))
    assert all(runner._observe(s, r, params) for s, r in zip(first, results, strict=True))
    for sample in first:
        sample.status = Status.ABORTED
    live, restored = first[0], sample_from_dict(sample_to_dict(first[1]))
    runner.live.pop(first[1].metadata["episode_id"])  # as after a restart: only the tokens survive
    before = [list(s.response_tokens) for s in (live, restored)]
    made = len(envs)

    source.continue_samples([live, restored], params, rollout_id=1)
    for sample, prefix in zip((live, restored), before, strict=True):
        assert sample.status == Status.COMPLETED and sample.metadata["turns"] == 3
        assert sample.response_tokens[: len(prefix)] == prefix
        assert sample.prompt_tokens + sample.response_tokens == conversation(engine.tokenizer, sample, ["1", "2"])
    assert len(envs) == made + 1 and envs[-1].resets == 1  # one fresh environment, for the restored sample only
    assert len(envs[made - 3].actions) == 3 and len(envs[-1].actions) == 2  # the live one carried on


def test_warmup_traces_are_the_episode_a_rollout_would_produce(tool_ckpt: Path) -> None:
    from rlpipe.rollout.env import calculator_env
    from rlpipe.rollout.tool_calls import tool_call_text

    tok = load_tokenizer(tool_ckpt)
    runner = EpisodeRunner(make_env=calculator_env, env_name="calc", render=ObservationRenderer(tok), max_turns=3)
    sample = Sample(prompt=[{"role": "user", "content": "12345+67890="}])
    call = tool_call_text("calculator", {"expression": "12345+67890"})
    ids, mask = scripted_episode(runner, sample, [call, "80235"], tok)
    assert tok.decode(ids) == f"{call}</s>t:80235a:80235</s>"
    assert len(tok.encode(call, add_special_tokens=False)) == 15  # the tool words are whole tokens
    assert mask == [1] * 16 + [0] * 9 + [1] * 6  # the call and </s>; t:80235a: masked; 80235</s>
