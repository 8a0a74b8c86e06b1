"""One engine contract, run against the in-process HFEngine and the SGLangEngine client (over a fake SGLang
server generating with the same checkpoint): same inputs, same checks, HF transformers as the reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlpipe.data.tokenizer import encode_prompt, load_tokenizer
from rlpipe.rollout.engine import RolloutEngine, SamplingParams
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.rollout.sglang.client import SGLangEngine
from tests.fakes.fake_sglang import FakeSGLang

TEXTS = ["r123", "12+345=", "c9"]


@pytest.fixture(params=["hf", "sglang"])
def engine(request: pytest.FixtureRequest, ckpts: tuple[Path, Path]) -> Iterator[RolloutEngine]:
    if request.param == "hf":
        yield HFEngine(ckpts[0], seed=0)
        return
    fake = FakeSGLang(ckpts[0]).start()
    yield SGLangEngine(fake.url, [fake.url], max_inflight=2)
    fake.stop()


@pytest.fixture(scope="module")
def prompts(ckpts: tuple[Path, Path]) -> list[list[int]]:
    tok = load_tokenizer(ckpts[0])
    return [encode_prompt(tok, t, apply_chat_template=True) for t in TEXTS]


def _eos(ckpt: Path) -> int:
    return load_tokenizer(ckpt).eos_token_id


def test_is_a_rollout_engine(engine: RolloutEngine) -> None:
    assert isinstance(engine, RolloutEngine)


def test_n_samples_per_prompt_and_finish_reasons(engine: RolloutEngine, prompts, ckpts) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=4, seed=3)
    out = engine.generate(prompts, params)
    assert [len(group) for group in out] == [4, 4, 4]
    for group in out:
        for o in group:
            assert 1 <= len(o.output_ids) <= 6
            assert len(o.output_log_probs) == len(o.output_ids)
            assert all(lp <= 0 for lp in o.output_log_probs)
            if o.finish_reason == "length":
                assert len(o.output_ids) == 6
            else:
                assert o.finish_reason == "stop" and o.output_ids[-1] == _eos(ckpts[0])


def test_stop_token_finishes_with_stop(engine: RolloutEngine, prompts) -> None:
    greedy = SamplingParams(max_new_tokens=5, temperature=0.0)
    first = engine.generate(prompts[:1], greedy)[0][0]
    stop_at = first.output_ids[1] if len(first.output_ids) > 1 else first.output_ids[0]
    stopped = engine.generate(prompts[:1], SamplingParams(max_new_tokens=5, temperature=0.0, stop_token_ids=(stop_at,)))
    o = stopped[0][0]
    assert o.finish_reason == "stop" and o.output_ids[-1] == stop_at
    assert o.output_ids == first.output_ids[: len(o.output_ids)]


def test_greedy_is_deterministic_and_matches_a_forward_pass(engine: RolloutEngine, prompts, ckpts) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=0.0, n=2)
    a, b = engine.generate(prompts, params), engine.generate(prompts, params)
    assert [[o.output_ids for o in g] for g in a] == [[o.output_ids for o in g] for g in b]
    model = AutoModelForCausalLM.from_pretrained(str(ckpts[0]), dtype=torch.float32).eval()
    for prompt, group in zip(prompts, a, strict=True):
        assert group[0].output_ids == group[1].output_ids
        out = group[0].output_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + out])).logits[0, len(prompt) - 1 : -1]  # [R, V]
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(out)[:, None]).squeeze(1)
        assert out == logits.argmax(-1).tolist()
        torch.testing.assert_close(torch.tensor(group[0].output_log_probs), ref, atol=1e-4, rtol=0)


def test_weight_update_equals_a_fresh_model_with_those_weights(engine: RolloutEngine, prompts, ckpts) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    before = [g[0].output_ids for g in engine.generate(prompts, params)]
    new = AutoModelForCausalLM.from_pretrained(str(ckpts[1]), dtype=torch.float32).state_dict()
    engine.begin_weight_update()
    engine.update_weights_from_tensor(list(new.items()))
    engine.end_weight_update()
    engine.flush_cache()
    assert engine.weight_version == 1
    after = [g[0].output_ids for g in engine.generate(prompts, params)]
    fresh = [g[0].output_ids for g in HFEngine(ckpts[1]).generate(prompts, params)]
    assert after == fresh
    assert after != before


def test_update_outside_begin_end_fails(engine: RolloutEngine, ckpts) -> None:
    weight = AutoModelForCausalLM.from_pretrained(str(ckpts[1])).state_dict()["model.norm.weight"]
    with pytest.raises(RuntimeError, match="begin_weight_update"):
        engine.update_weights_from_tensor([("model.norm.weight", weight)])
    assert engine.weight_version == 0
