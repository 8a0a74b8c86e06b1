"""Multi-turn episodes through the SGLang client: token in, token out over the strict fake server. Every turn is
sent as input_ids (the observation tokens included, never text), and the episodes equal the in-process HF
engine's, token for token (greedy, one token per turn)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint
from rlpipe.data.tokenizer import load_tokenizer
from rlpipe.rollout.hf_engine import HFEngine
from rlpipe.rollout.sglang.client import SGLangEngine
from tests.fakes.fake_sglang import FakeSGLang
from tests.rollout.multi_turn_helpers import ScriptedEnv, conversation, fresh, make_source, one_token_turns


@pytest.fixture(scope="module")
def tool_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tool") / "hf", TinyModelSpec(tool_vocab=True, seed=4))


def test_episodes_through_sglang_are_the_in_process_engines_token_for_token(tool_ckpt: Path) -> None:
    tok = load_tokenizer(tool_ckpt)
    params = one_token_turns(tok, temperature=0.0)
    want = fresh(tok)
    make_source(HFEngine(tool_ckpt), tok, lambda: ScriptedEnv(turns=3)).continue_samples(want, params, 0)
    fake = FakeSGLang(tool_ckpt).start()
    try:
        got = fresh(tok)
        make_source(SGLangEngine(fake.url, [fake.url]), tok, lambda: ScriptedEnv(turns=3)).continue_samples(
            got, params, 0
        )
        bodies = [body for path, body in fake.requests if path == "/generate"]
    finally:
        fake.stop()
    assert len(bodies) == 3 * len(got)  # one request per sample and turn
    assert all("input_ids" in body and "text" not in body for body in bodies)
    sent = {tuple(body["input_ids"]) for body in bodies}
    for g, w in zip(got, want, strict=True):
        assert (g.response_tokens, g.loss_mask, g.status) == (w.response_tokens, w.loss_mask, w.status)
        assert g.prompt_tokens + g.response_tokens == conversation(tok, g, ["1", "2"])
        assert tuple(g.tokens[:-1]) in sent  # the last turn's request: prompt, both turns and both observations
