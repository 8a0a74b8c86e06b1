"""SGLangEngine's control calls against the fake SGLang server: weight bytes arrive exactly, in buckets, inside
begin/end, to every engine; memory release/resume, pause/continue and abort reach each engine's own URL."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.sglang.client import SGLangEngine, SGLangError
from rlpipe.rollout.sglang.protocol import buckets
from tests.fakes.fake_sglang import FakeSGLang


def _trainer_weights(fake: FakeSGLang, dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
    """The fake's own parameter names, with new values (a trainer's HF-named export)."""
    gen = torch.Generator().manual_seed(7)
    return [(n, torch.randn(p.shape, generator=gen).to(dtype)) for n, p in fake.engine.model.named_parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_received_bytes_decode_to_the_trainer_weights_exactly(fake: FakeSGLang, dtype: torch.dtype) -> None:
    weights = _trainer_weights(fake, dtype)
    bucket_bytes = 64 * 1024
    engine = SGLangEngine(fake.url, [fake.url], tp_size=2, bucket_bytes=bucket_bytes)
    engine.begin_weight_update()
    engine.update_weights_from_tensor(weights)
    engine.end_weight_update()
    engine.flush_cache()

    expected_buckets = list(buckets(weights, bucket_bytes))
    assert len(expected_buckets) > 1
    assert fake.paths() == [
        "/begin_weight_update",
        *["/update_weights_from_tensor"] * len(expected_buckets),
        "/end_weight_update",
        "/flush_cache",
    ]
    received = [t for bucket in fake.received_weights for t in bucket]
    assert [n for n, _ in received] == [n for n, _ in weights]
    for (_, got), (_, sent) in zip(received, weights, strict=True):
        assert got.dtype == sent.dtype and torch.equal(got, sent)
    update = fake.requests[1][1]
    assert len(update["serialized_named_tensors"]) == 2  # one entry per TP rank
    assert update["flush_cache"] is False and update["weight_version"] == "1"
    assert fake.weight_version == "1" and engine.weight_version == 1


def test_weight_update_goes_to_every_engine(ckpts: tuple[Path, Path]) -> None:
    fakes = [FakeSGLang(ckpts[0]).start() for _ in range(2)]
    try:
        engine = SGLangEngine(fakes[0].url, [f.url for f in fakes])
        weights = [("model.norm.weight", torch.full((64,), 0.5))]
        engine.begin_weight_update()
        engine.update_weights_from_tensor(weights)
        engine.end_weight_update()
        for f in fakes:
            assert f.paths() == ["/begin_weight_update", "/update_weights_from_tensor", "/end_weight_update"]
            assert torch.equal(f.engine.model.model.norm.weight, weights[0][1])
    finally:
        for f in fakes:
            f.stop()


def test_begin_twice_and_end_without_begin_fail(fake: FakeSGLang) -> None:
    engine = SGLangEngine(fake.url, [fake.url])
    with pytest.raises(SGLangError, match="no weight-update session"):
        engine.end_weight_update()
    engine.begin_weight_update()
    with pytest.raises(SGLangError, match="already open"):
        engine.begin_weight_update()
    assert engine.weight_version == 0


def test_release_blocks_generation_until_resume(fake: FakeSGLang) -> None:
    engine = SGLangEngine(fake.url, [fake.url])
    params = SamplingParams(max_new_tokens=3, temperature=0.0)
    engine.release_memory_occupation()
    assert fake.requests[-1] == ("/release_memory_occupation", {"tags": ["weights", "kv_cache", "cuda_graph"]})
    with pytest.raises(SGLangError, match="released"):
        engine.generate([[1, 5, 6]], params)
    engine.resume_memory_occupation(tags=("weights", "kv_cache", "cuda_graph"))
    assert engine.generate([[1, 5, 6]], params)[0][0].finish_reason in ("stop", "length")
    with pytest.raises(ValueError, match="unknown memory tags"):
        engine.release_memory_occupation(tags=("weight",))


def test_pause_holds_requests_until_continue(fake: FakeSGLang) -> None:
    engine = SGLangEngine(fake.url, [fake.url])
    engine.pause_generation("in_place")
    assert fake.pause_mode == "in_place"
    result: list = []
    worker = threading.Thread(target=lambda: result.append(engine.generate([[1, 5]], SamplingParams(2, 0.0))))
    worker.start()
    assert fake.generate_arrived.wait(timeout=60)
    assert worker.is_alive() and not result  # the request arrived and is held by the pause
    engine.continue_generation()
    worker.join(timeout=60)
    assert fake.pause_mode is None and result[0][0][0].finish_reason in ("stop", "length")
    with pytest.raises(ValueError, match="pause mode"):
        engine.pause_generation("stop")


def test_abort_reaches_the_engine(fake: FakeSGLang) -> None:
    SGLangEngine(fake.url, [fake.url]).abort()
    assert fake.requests == [("/abort_request", {"abort_all": True})]


def test_distributed_update_calls(ckpts: tuple[Path, Path]) -> None:
    fakes = [FakeSGLang(ckpts[0]).start() for _ in range(2)]
    try:
        engine = SGLangEngine(fakes[0].url, [f.url for f in fakes], tp_size=2)
        engine.init_weights_update_group("10.0.0.1", 29500, world_size=5)
        with pytest.raises(SGLangError, match="between begin_weight_update"):
            engine.update_weights_from_distributed(["model.norm.weight"], [torch.bfloat16], [[64]])
        engine.begin_weight_update()
        engine.update_weights_from_distributed(["model.norm.weight"], [torch.bfloat16], [[64]])
        offsets = [f.requests[0][1]["rank_offset"] for f in fakes]
        assert offsets == [1, 3]  # trainer is rank 0; each engine holds tp_size ranks
        assert fakes[0].requests[-1][1]["dtypes"] == ["bfloat16"]
    finally:
        for f in fakes:
            f.stop()


def test_unknown_sampling_param_is_a_400(fake: FakeSGLang) -> None:
    body = {"input_ids": [1, 5], "sampling_params": {"max_tokens": 4}}
    req = urllib.request.Request(fake.url + "/generate", data=json.dumps(body).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400 and "unknown field `max_tokens`" in info.value.read().decode()
