"""Dynamic sampling and partial rollout on the real HF engine (tiny random model, reverse task).

Checked: a filter that rejects some groups forces extra waves and still yields exactly batch_size complete
groups; a filter that rejects all hits the wave cap with an error naming it; the default rollout equals one
batched n-sample engine call; an aborted sample resumes to the same tokens and log-probs as an uninterrupted
one; aborted groups go to the buffer with their tokens and the next rollout finishes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mode_helpers import SECOND_CALL_STARTED, demo_config, keep_half, label_parity
from transformers import AutoModelForCausalLM

from rlpipe.data.sample import Status
from rlpipe.rollout.generate import sampling_params
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.rollout.role import RolloutRole
from rlpipe.rollout.waves import DynamicSamplingError

torch.set_num_threads(1)

SMALL = ["rollout.shuffle=false", "rollout.batch_size=4", "rollout.n_samples=2", "rollout.num_rollout=2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


def role_for(cache: Path, *overrides: str, seed: int = 0) -> RolloutRole:
    cfg = demo_config(cache, *SMALL, *overrides)
    assert cfg.ckpt.hf_checkpoint is not None
    return RolloutRole(cfg, HFEngine(cfg.ckpt.hf_checkpoint, seed=seed))


def reference_log_probs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """log_softmax of an unpadded full forward at the response tokens (temperature 1)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]  # [R, V]
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(response)[:, None]).squeeze(1)


def test_filter_rejecting_some_forces_extra_waves_and_keeps_exactly_batch_size(cache: Path) -> None:
    role = role_for(cache, "rollout.dynamic_sampling_filter_path=mode_helpers.keep_half")
    rollout = role.generate(0)
    groups = [rollout.samples[i : i + 2] for i in range(0, len(rollout.samples), 2)]
    assert len(groups) == 4 and all(keep_half(None, g) for g in groups)
    assert [s.group_index for s in rollout.samples] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(s.status in (Status.COMPLETED, Status.TRUNCATED) and s.reward is not None for s in rollout.samples)
    assert all(len(s.response_tokens) == len(s.rollout_log_probs) == len(s.loss_mask or []) for s in rollout.samples)
    m = rollout.metrics
    drawn = 4 * m["sampling_waves"]  # each wave draws batch_size prompts (no over-sampling here)
    assert m["sampling_waves"] >= 2 and m["groups_dropped/keep_half"] >= 1
    assert m["groups_kept"] + m["groups_dropped/keep_half"] + m["groups_surplus"] + m["groups_aborted"] <= drawn
    assert role.dataset.offset == drawn  # the waves consumed exactly their prompts


def test_filter_rejecting_all_hits_the_wave_cap_with_an_error_naming_it(cache: Path) -> None:
    role = role_for(
        cache,
        "rollout.dynamic_sampling_filter_path=mode_helpers.keep_none",
        "rollout.over_sampling_batch_size=6",
        "rollout.max_sampling_waves=3",
    )
    with pytest.raises(DynamicSamplingError) as err:
        role.generate(0)
    message = str(err.value)
    assert "mode_helpers.keep_none" in message and "rollout.max_sampling_waves" in message and "3 waves" in message
    assert role.dataset.offset == 18  # 3 waves x 6 prompts, then it stopped


def test_default_rollout_equals_one_batched_n_sample_call(cache: Path) -> None:
    role = role_for(cache, seed=7)
    cfg = role.cfg
    prompts = role_for(cache).dataset.next_batch(4)
    reference = role_for(cache, seed=7).source.generate_groups(prompts, sampling_params(cfg), 0)
    samples = role.generate(0).samples
    assert [s.response_tokens for s in samples] == [s.response_tokens for g in reference for s in g]
    assert [x for s in samples for x in s.rollout_log_probs] == pytest.approx(
        [x for g in reference for s in g for x in s.rollout_log_probs], abs=1e-6
    )
    assert role.generate(1).metrics["sampling_waves"] == 1


def test_aborted_sample_resumes_to_the_uninterrupted_tokens_and_log_probs(cache: Path) -> None:
    role = role_for(cache, "rollout.temperature=0.0", "rollout.max_response_len=8")
    source, params = role.source, sampling_params(role.cfg)
    prompts = role.dataset.next_batch(3)
    whole = source.new_groups(prompts, 1, 0)
    source.continue_samples([g[0] for g in whole], params, 0)
    # Abort the same prompts during the third forward (prefill, then two tokens): the engine stops before a third.
    engine = role.engine
    calls = []

    def abort_after_three(module, args, kwargs, output):
        calls.append(1)
        if len(calls) == 3:
            engine.abort()

    handle = engine.model.register_forward_hook(abort_after_three, with_kwargs=True)
    cut = source.new_groups(prompts, 1, 0)
    source.continue_samples([g[0] for g in cut], params, 0)
    handle.remove()
    partial = [g[0] for g in cut]
    assert all(s.response_length == 2 if s.status == Status.ABORTED else s.response_length <= 2 for s in partial)
    assert any(s.status == Status.ABORTED for s in partial)
    heads = [list(s.response_tokens) for s in partial]
    source.continue_samples(partial, params, 1)  # resume: prompt + 2 tokens, 6 left of the budget
    reference = AutoModelForCausalLM.from_pretrained(role.cfg.ckpt.hf_checkpoint).eval()
    for done, again, head in zip([g[0] for g in whole], partial, heads, strict=True):
        assert again.response_tokens[: len(head)] == head and again.response_tokens == done.response_tokens
        assert again.status == done.status and again.response_length <= 8
        assert again.rollout_log_probs == pytest.approx(done.rollout_log_probs, abs=1e-5)
        want = reference_log_probs(reference, again.prompt_tokens, again.response_tokens)
        assert torch.allclose(torch.tensor(again.rollout_log_probs), want, atol=1e-4)
        assert again.metadata["start_rollout_id"] == 0 and again.rollout_id == 1


def test_partial_rollout_buffers_aborted_groups_and_the_next_rollout_finishes_them(cache: Path) -> None:
    role = role_for(
        cache,
        "rollout.partial_rollout=true",
        "rollout.over_sampling_batch_size=8",  # two chunks of 4 groups: the first fills the batch
        "rollout.dynamic_sampling_filter_path=mode_helpers.keep_all_once_second_call_runs",
    )
    engine = role.engine
    prefills = []
    SECOND_CALL_STARTED.clear()  # module state: a rerun in the same process starts unsignalled

    def hold_second_chunk(module, args, kwargs, output):
        """In the second engine call's first decode step (its first token already sampled from the prefill):
        signal the filter, then hold the step until abort() arrives, so the engine stops before a second token.
        Signalling any earlier (e.g. in the prefill) lets the abort land before or after the first token is
        sampled, by thread timing."""
        if kwargs["input_ids"].shape[1] > 1:
            prefills.append(1)
        elif len(prefills) == 2 and not SECOND_CALL_STARTED.is_set():
            SECOND_CALL_STARTED.set()
            assert engine._abort.wait(timeout=60)

    handle = engine.model.register_forward_hook(hold_second_chunk, with_kwargs=True)
    first = role.generate(0)
    handle.remove()
    assert first.metrics["groups_kept"] == 4 and first.metrics["buffer_groups"] == 4
    assert first.metrics["groups_aborted"] >= 1
    buffered = [list(g) for g in role.source.buffer]
    # Cut short after exactly the prefill's token: a row that sampled EOS there is complete, the rest aborted.
    assert all(s.response_length == 1 for g in buffered for s in g)
    assert all(s.status in (Status.ABORTED, Status.COMPLETED) for g in buffered for s in g)
    assert any(s.status == Status.ABORTED for g in buffered for s in g)
    heads = [[list(s.response_tokens) for s in g] for g in buffered]

    second = role.generate(1)
    assert second.metrics["groups_resumed"] == 4 and second.metrics["staleness_rollouts_max"] == 1
    resumed = second.samples[:8]  # resumed groups come first, in buffer order
    reference = AutoModelForCausalLM.from_pretrained(role.cfg.ckpt.hf_checkpoint).eval()
    for sample, head in zip(resumed, [h for g in heads for h in g], strict=True):
        assert sample.response_tokens[: len(head)] == head
        assert sample.status in (Status.COMPLETED, Status.TRUNCATED) and sample.reward is not None
        assert sample.metadata["start_rollout_id"] == 0 and sample.rollout_id == 1
        want = reference_log_probs(reference, sample.prompt_tokens, sample.response_tokens)
        assert torch.allclose(torch.tensor(sample.rollout_log_probs), want, atol=1e-4)
    # The buffer survives a checkpoint as plain data.
    state = role.state_dict()
    fresh = role_for(cache, "rollout.partial_rollout=true")
    fresh.load_state_dict(state)
    assert [[s.response_tokens for s in g] for g in fresh.source.buffer] == [
        [s.response_tokens for s in g] for g in role.source.buffer
    ]


def test_eval_is_reproducible_whatever_the_engine_seed(cache: Path) -> None:
    overrides = ("eval.n_samples=4", "eval.temperature=1.0")
    a, b = role_for(cache, *overrides, seed=1), role_for(cache, *overrides, seed=2)
    a.engine.generate([[5, 6]], sampling_params(a.cfg))  # move one engine's own generator on
    first = a.evaluate(0)
    assert first == a.evaluate(0) == b.evaluate(0)
    assert set(first) == {"reverse/reward_mean", "reverse/pass@4"}


def test_label_parity_splits_the_prompts(cache: Path) -> None:
    """The helper filter rejects the whole first wave (so the wave test must draw more)."""
    role = role_for(cache)
    assert [label_parity([p]) for p in role.dataset.next_batch(4)] == [1, 1, 1, 1]
