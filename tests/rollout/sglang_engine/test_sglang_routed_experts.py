"""SGLang's routed experts (0.5.23: --enable-return-routed-experts, /generate return_routed_experts) through the
SGLangEngine client, against a fake server that encodes them as SGLang does (base64 int32, [tokens - 1, L, k]) from
an HF engine over a tiny Qwen3-MoE; the in-process HF engine's own record is the reference."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from rlpipe.data.tiny_model import build_char_tokenizer
from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.rollout.sglang.client import SGLangEngine
from rlpipe.rollout.sglang.protocol import decode_routed_experts
from tests.fakes.fake_sglang import FakeSGLang
from tests.train.train_helpers import make_tiny

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8]]
PARAMS = SamplingParams(max_new_tokens=6, temperature=0.0, n=2, return_routed_experts=True)


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_tiny(tmp_path_factory.mktemp("moe") / "hf", "qwen3_moe", num_experts=8, num_experts_per_tok=2)
    build_char_tokenizer().save_pretrained(folder)
    return folder


def test_routed_experts_arrive_as_the_engine_recorded_them(moe: Path) -> None:
    want = [o for g in HFEngine(moe).generate(PROMPTS, PARAMS) for o in g]
    fake = FakeSGLang(moe, return_routed_experts=True).start()
    try:
        got = [o for g in SGLangEngine(fake.url, [fake.url], routes_shape=(2, 2)).generate(PROMPTS, PARAMS) for o in g]
        assert fake.requests[0][1]["return_routed_experts"] is True
    finally:
        fake.stop()
    for g, w, prompt in zip(got, want, [p for p in PROMPTS for _ in range(2)], strict=True):
        assert g.output_ids == w.output_ids
        assert g.routed_experts.shape == (len(prompt) + len(g.output_ids) - 1, 2, 2)
        assert np.array_equal(g.routed_experts, w.routed_experts)


def test_a_server_without_the_flag_is_named(moe: Path) -> None:
    fake = FakeSGLang(moe).start()  # started without --enable-return-routed-experts: no routes in the replies
    try:
        with pytest.raises(ValueError, match="--enable-return-routed-experts"):
            SGLangEngine(fake.url, [fake.url], routes_shape=(2, 2)).generate(PROMPTS, PARAMS)
    finally:
        fake.stop()


def test_routes_of_the_wrong_size_are_refused(moe: Path) -> None:
    fake = FakeSGLang(moe, return_routed_experts=True).start()
    try:
        with pytest.raises(ValueError, match=r"routed_experts holds \d+ ints, expected"):
            SGLangEngine(fake.url, [fake.url], routes_shape=(3, 2)).generate(PROMPTS, PARAMS)
    finally:
        fake.stop()


def test_a_compressed_wire_dtype_is_decoded() -> None:
    routes = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    payload = base64.b64encode(routes.tobytes()).decode("ascii")
    decoded = decode_routed_experts(payload, 3, (2, 2), "uint8")
    assert decoded.dtype == np.int32 and np.array_equal(decoded, routes)
