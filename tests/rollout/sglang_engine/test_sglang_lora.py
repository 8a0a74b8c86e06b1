"""SGLang's LoRA protocol: requests name the adapter (`lora_path`), the adapter goes to every engine from memory in the
body its release takes, a name is unloaded before it is loaded again, and the server's refusals surface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.sglang.client import SGLangEngine, SGLangError
from rlpipe.rollout.sglang.protocol import generate_body, lora_tensors_body
from tests.fakes.fake_sglang import FakeSGLang

CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4.0, "target_modules": ["q_proj"]}


def _adapter(fake: FakeSGLang, scale: float) -> list[tuple[str, torch.Tensor]]:
    q = fake.engine.model.model.layers[0].self_attn.q_proj.weight
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    return [(f"{prefix}.lora_A.weight", torch.full((2, q.shape[1]), scale)),
            (f"{prefix}.lora_B.weight", torch.full((q.shape[0], 2), scale))]  # fmt: skip


def test_a_named_adapter_is_served_to_the_requests_that_name_it(ckpts: tuple[Path, Path]) -> None:
    fake = FakeSGLang(ckpts[0], max_lora_rank=4).start()
    try:
        client = SGLangEngine(fake.url, [fake.url])
        base_q = fake.engine.model.model.layers[0].self_attn.q_proj.weight.clone()
        client.load_lora_adapter("mine", _adapter(fake, 0.1), CONFIG)
        served_q = fake.adapters["mine"].model.model.layers[0].self_attn.q_proj.weight
        assert torch.allclose(served_q, base_q + 2.0 * 0.1 * 0.1 * 2)  # alpha/r x (B A) = 2 x 0.02
        params = SamplingParams(max_new_tokens=3, temperature=0.0, lora_name="mine")
        client.generate([[1, 2, 3]], params)
        assert fake.requests[-1][1]["lora_path"] == "mine"
        with pytest.raises(SGLangError, match="not loaded"):
            client.generate([[1, 2, 3]], SamplingParams(max_new_tokens=3, lora_name="other"))
        client.load_lora_adapter("mine", _adapter(fake, 0.2), CONFIG)  # unloaded, then loaded again
        assert [p for p in fake.paths() if "lora" in p][-2:] == [
            "/unload_lora_adapter",
            "/load_lora_adapter_from_tensors",
        ]
        names = sorted(fake.received_adapters[-1][1])
        assert names == [
            "model.layers.0.self_attn.q_proj.lora_A.weight",
            "model.layers.0.self_attn.q_proj.lora_B.weight",
        ]
    finally:
        fake.stop()


def test_the_server_s_lora_refusals_surface(ckpts: tuple[Path, Path], fake: FakeSGLang) -> None:
    with pytest.raises(SGLangError, match="--enable-lora"):
        SGLangEngine(fake.url, [fake.url]).load_lora_adapter("x", _adapter(fake, 0.1), CONFIG)
    small = FakeSGLang(ckpts[0], max_lora_rank=1).start()
    try:
        with pytest.raises(SGLangError, match="exceeds --max-lora-rank 1"):
            SGLangEngine(small.url, [small.url]).load_lora_adapter("x", _adapter(small, 0.1), CONFIG)
    finally:
        small.stop()


def test_lora_bodies_follow_the_release() -> None:
    named = [("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", torch.zeros(2, 4))]
    new = lora_tensors_body("a", CONFIG, named, tp_size=2, version="0.5.23")
    assert set(new) == {"lora_name", "config_dict", "serialized_named_tensors"}
    assert len(new["serialized_named_tensors"]) == 2  # one payload per TP rank, as 0.5.17+ reads them
    old = lora_tensors_body("a", CONFIG, named, tp_size=2, version="0.5.16")
    assert set(old) == {"lora_name", "config_dict", "serialized_tensors"} and isinstance(old["serialized_tensors"], str)
    assert "lora_path" not in generate_body([1], SamplingParams(max_new_tokens=1))
