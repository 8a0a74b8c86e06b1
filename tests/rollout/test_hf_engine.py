"""HFEngine against HF transformers as the reference: greedy tokens, log-probs, batching, stops, sampling,
weight updates, memory state and abort."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from rlpipe.data.tokenizer import encode_prompt
from rlpipe.rollout.engine import RolloutEngine, SamplingParams
from rlpipe.rollout.hf_engine import HFEngine

torch.set_num_threads(1)

TEXTS = ["r123", "12+345=", "c9", "r000", "1+1="]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return build_tiny_checkpoint(root / "a", TinyModelSpec(seed=0)), build_tiny_checkpoint(
        root / "b", TinyModelSpec(seed=1)
    )


@pytest.fixture()
def engine(ckpts: tuple[Path, Path]) -> HFEngine:
    return HFEngine(ckpts[0], seed=0)


def _prompts(engine: HFEngine) -> list[list[int]]:
    return [encode_prompt(engine.tokenizer, t, apply_chat_template=True) for t in TEXTS]


def _reference_log_probs(model, prompt: list[int], output: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / T) of the HF model's full forward at the output tokens (unpadded, one sequence)."""
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]  # [R, V]
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(output)[:, None]).squeeze(1)


def test_is_a_rollout_engine(engine: HFEngine) -> None:
    assert isinstance(engine, RolloutEngine)


def test_greedy_matches_hf_generate_and_forward_log_probs(engine: HFEngine, ckpts) -> None:
    reference = AutoModelForCausalLM.from_pretrained(ckpts[0]).eval()
    prompts = _prompts(engine)
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.0, n=2))
    assert [len(o) for o in outs] == [2] * len(prompts)
    for prompt, (first, second) in zip(prompts, outs, strict=True):
        hf = reference.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=8, eos_token_id=2, pad_token_id=0
        )[0, len(prompt) :].tolist()
        assert first.output_ids == hf
        assert second.output_ids == first.output_ids  # greedy samples of one prompt agree
        assert first.finish_reason == ("stop" if hf[-1] == 2 else "length")
        assert first.text == engine.tokenizer.decode(hf, skip_special_tokens=True)
        expected = _reference_log_probs(reference, prompt, first.output_ids)
        torch.testing.assert_close(torch.tensor(first.output_log_probs), expected, atol=1e-5, rtol=0)


def test_sampled_log_probs_are_tempered_full_vocab(engine: HFEngine, ckpts) -> None:
    reference = AutoModelForCausalLM.from_pretrained(ckpts[0]).eval()
    prompts = _prompts(engine)
    params = SamplingParams(max_new_tokens=6, temperature=0.7, top_k=5, top_p=0.9, n=3)
    for prompt, samples in zip(prompts, engine.generate(prompts, params), strict=True):
        for out in samples:
            expected = _reference_log_probs(reference, prompt, out.output_ids, temperature=0.7)
            torch.testing.assert_close(torch.tensor(out.output_log_probs), expected, atol=1e-5, rtol=0)


def test_left_padded_batch_equals_one_prompt_at_a_time(engine: HFEngine) -> None:
    prompts = _prompts(engine)
    assert len({len(p) for p in prompts}) > 1  # different lengths, so the batch really pads
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    batched = engine.generate(prompts, params)
    for prompt, (out,) in zip(prompts, batched, strict=True):
        (alone,) = engine.generate([prompt], params)[0]
        assert out.output_ids == alone.output_ids
        torch.testing.assert_close(
            torch.tensor(out.output_log_probs), torch.tensor(alone.output_log_probs), atol=1e-5, rtol=0
        )


def test_top_k_1_and_tiny_top_p_equal_greedy(engine: HFEngine) -> None:
    prompts = _prompts(engine)
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.0))
    for params in (SamplingParams(max_new_tokens=8, top_k=1, n=3), SamplingParams(max_new_tokens=8, top_p=1e-6, n=3)):
        for (g,), samples in zip(greedy, engine.generate(prompts, params), strict=True):
            for out in samples:
                assert out.output_ids == g.output_ids
                torch.testing.assert_close(out.output_log_probs, g.output_log_probs, atol=1e-6, rtol=0)


def test_sampling_follows_the_softmax_and_respects_top_k(engine: HFEngine, ckpts) -> None:
    reference = AutoModelForCausalLM.from_pretrained(ckpts[0]).eval()
    prompt = _prompts(engine)[0]
    with torch.no_grad():
        probs = torch.softmax(reference(input_ids=torch.tensor([prompt])).logits[0, -1], dim=-1)  # [V]
    n = 4000
    (samples,) = engine.generate([prompt], SamplingParams(max_new_tokens=1, n=n))
    counts = torch.bincount(torch.tensor([s.output_ids[0] for s in samples]), minlength=probs.numel())
    assert (counts / n - probs).abs().max() < 0.03  # binomial std at n=4000 is below 0.008
    (top3,) = engine.generate([prompt], SamplingParams(max_new_tokens=1, n=500, top_k=3))
    assert {s.output_ids[0] for s in top3} <= set(probs.topk(3).indices.tolist())


def test_seeded_sampling_is_deterministic(ckpts) -> None:
    params = SamplingParams(max_new_tokens=8, n=4)
    a, b = HFEngine(ckpts[0], seed=4), HFEngine(ckpts[0], seed=4)
    prompts = _prompts(a)
    assert a.generate(prompts, params) == b.generate(prompts, params)
    seeded = SamplingParams(max_new_tokens=8, n=4, seed=9)
    assert a.generate(prompts, seeded) == a.generate(prompts, seeded)


def test_stop_tokens_and_length(engine: HFEngine) -> None:
    prompt = _prompts(engine)[0]
    (free,) = engine.generate([prompt], SamplingParams(max_new_tokens=8, temperature=0.0))[0]
    assert free.finish_reason == "length" and len(free.output_ids) == 8
    stop_at = free.output_ids[2]
    cut = free.output_ids.index(stop_at) + 1
    (stopped,) = engine.generate(
        [prompt], SamplingParams(max_new_tokens=8, temperature=0.0, stop_token_ids=(stop_at,))
    )[0]
    assert stopped.output_ids == free.output_ids[:cut]  # the stop token is included
    assert stopped.output_log_probs == pytest.approx(free.output_log_probs[:cut], abs=1e-6)
    assert stopped.finish_reason == "stop"
    (short,) = engine.generate([prompt], SamplingParams(max_new_tokens=3, temperature=0.0))[0]
    assert short.output_ids == free.output_ids[:3] and short.finish_reason == "length"


def test_eos_ends_one_row_while_others_continue(engine: HFEngine) -> None:
    prompts = _prompts(engine)
    eos = engine.tokenizer.eos_token_id
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    (first,) = engine.generate(prompts[:1], greedy)[0]
    favourite = first.output_ids[0]
    # Swap the lm_head rows of EOS and prompt 0's first greedy token: that prompt now emits EOS first.
    head = engine.model.lm_head.weight.detach().clone()
    head[[eos, favourite]] = head[[favourite, eos]]
    engine.begin_weight_update()
    engine.update_weights_from_tensor([("lm_head.weight", head)])
    engine.end_weight_update()
    outs = engine.generate(prompts, greedy)
    assert outs[0][0].output_ids == [eos] and outs[0][0].finish_reason == "stop" and outs[0][0].text == ""
    assert outs[0][0].output_log_probs[0] == pytest.approx(first.output_log_probs[0], abs=1e-6)
    for (out,) in outs[1:]:
        assert (out.finish_reason == "stop") == (out.output_ids[-1] == eos)
        assert out.finish_reason == "stop" or len(out.output_ids) == 8
        assert eos not in out.output_ids[:-1]


def test_weight_update_matches_a_fresh_model(engine: HFEngine, ckpts) -> None:
    other = AutoModelForCausalLM.from_pretrained(ckpts[1])
    prompts = _prompts(engine)
    params = SamplingParams(max_new_tokens=8, temperature=0.0, n=1)
    before = engine.generate(prompts, params)
    named = list(other.state_dict().items())
    engine.begin_weight_update()
    engine.update_weights_from_tensor(named[:5])  # an update may come in several chunks
    engine.update_weights_from_tensor(named[5:])
    engine.end_weight_update()
    assert engine.weight_version == 1
    after = engine.generate(prompts, params)
    assert after == HFEngine(ckpts[1]).generate(prompts, params)
    assert after != before


def test_weight_update_protocol_errors(engine: HFEngine) -> None:
    weight = engine.model.lm_head.weight.detach().clone()
    with pytest.raises(RuntimeError, match="outside begin_weight_update"):
        engine.update_weights_from_tensor([("lm_head.weight", weight)])
    with pytest.raises(RuntimeError, match="without begin_weight_update"):
        engine.end_weight_update()
    engine.begin_weight_update()
    with pytest.raises(RuntimeError, match="during a weight update"):
        engine.generate(_prompts(engine), SamplingParams(max_new_tokens=2))
    with pytest.raises(KeyError, match=r"lm_head\.bias"):
        engine.update_weights_from_tensor([("lm_head.bias", weight[0])])
    with pytest.raises(ValueError, match="got shape"):
        engine.update_weights_from_tensor([("lm_head.weight", weight[:3])])
    engine.end_weight_update()
    assert engine.weight_version == 1


def test_release_and_resume_memory(engine: HFEngine) -> None:
    prompts = _prompts(engine)
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    before = engine.generate(prompts, params)
    engine.release_memory_occupation()
    with pytest.raises(RuntimeError, match="memory is released"):
        engine.generate(prompts, params)
    engine.resume_memory_occupation()
    engine.flush_cache()
    assert engine.generate(prompts, params) == before


def test_abort_from_inside_the_decode_stops_at_the_next_step(engine: HFEngine) -> None:
    calls = []

    def abort_on_third_forward(*_):
        calls.append(1)
        if len(calls) == 3:  # prefill, decode 1, decode 2
            engine.abort()

    handle = engine.model.register_forward_hook(abort_on_third_forward)
    try:
        outs = engine.generate(_prompts(engine), SamplingParams(max_new_tokens=50, temperature=0.0, n=2))
    finally:
        handle.remove()
    for samples in outs:
        for out in samples:
            assert out.finish_reason == "abort" and len(out.output_ids) == len(out.output_log_probs) == 2
    # The flag only stops the generation in flight: the next one runs to the end.
    (after,) = engine.generate(_prompts(engine)[:1], SamplingParams(max_new_tokens=5, temperature=0.0))[0]
    assert after.finish_reason == "length" and len(after.output_ids) == 5


def test_abort_from_another_thread(engine: HFEngine) -> None:
    in_decode, aborted = threading.Event(), threading.Event()
    calls = []

    def hold_second_forward(*_):
        calls.append(1)
        if len(calls) == 2:  # the generate thread waits here until the main thread has called abort()
            in_decode.set()
            assert aborted.wait(timeout=60)

    handle = engine.model.register_forward_hook(hold_second_forward)
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(engine.generate(_prompts(engine), SamplingParams(max_new_tokens=200)))
    )
    worker.start()
    try:
        assert in_decode.wait(timeout=60)
        engine.abort()
        aborted.set()
        worker.join(timeout=60)
    finally:
        handle.remove()
    assert not worker.is_alive()
    outs = [o for samples in result[0] for o in samples]
    assert all(o.finish_reason in ("abort", "stop") for o in outs)
    assert any(o.finish_reason == "abort" for o in outs)
    assert all(len(o.output_ids) <= 2 for o in outs)


def test_rejects_bad_requests(engine: HFEngine) -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        engine.generate([], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(_prompts(engine), SamplingParams(max_new_tokens=2, top_p=0.0))
