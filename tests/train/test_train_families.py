"""Every supported family: HF <-> Megatron round trip exact at TP 1 and 2, and log-probs equal to HF's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import SEQS, STARTS, assert_round_trip_exact, hf_response_stats, make_spec, make_tiny
from transformers import AutoConfig

from rlpipe.train.families import supported_model_types
from rlpipe.train.model import transformer_config_from_hf
from rlpipe.train.trainer import MegatronTrainer

FAMILIES = ["qwen2", "llama", "qwen3", "glm4", "qwen3_moe"]


def test_every_registered_family_is_tested() -> None:
    assert sorted(supported_model_types()) == sorted(FAMILIES)


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_round_trip_is_exact(tmp_path: Path, model_type: str, tp: int) -> None:
    folder = make_tiny(tmp_path, model_type)
    assert_round_trip_exact(folder, tp)


def test_config_reads_each_family(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    glm = transformer_config_from_hf(AutoConfig.from_pretrained(make_tiny(tmp_path / "g", "glm4")), spec)
    assert glm.rotary_interleaved and glm.add_qkv_bias and not glm.qk_layernorm
    qwen3 = transformer_config_from_hf(AutoConfig.from_pretrained(make_tiny(tmp_path / "q", "qwen3")), spec)
    assert qwen3.qk_layernorm and not qwen3.add_qkv_bias and qwen3.num_moe_experts is None
    moe = transformer_config_from_hf(AutoConfig.from_pretrained(make_tiny(tmp_path / "m", "qwen3_moe")), spec)
    assert (moe.num_moe_experts, moe.moe_router_topk, moe.moe_ffn_hidden_size) == (4, 2, 32)
    assert not moe.moe_router_pre_softmax  # norm_topk_prob: softmax over the chosen top-k


def test_unsupported_variants_are_refused(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    biased = AutoConfig.from_pretrained(make_tiny(tmp_path / "l", "llama", attention_bias=True))
    with pytest.raises(ValueError, match="o_proj"):
        transformer_config_from_hf(biased, spec)
    dense_layer = AutoConfig.from_pretrained(make_tiny(tmp_path / "m", "qwen3_moe", mlp_only_layers=[0]))
    with pytest.raises(ValueError, match="mlp_only_layers"):
        transformer_config_from_hf(dense_layer, spec)


@pytest.mark.parametrize(
    ("model_type", "overrides"),
    [
        ("llama", {}),
        ("qwen3", {}),
        ("qwen3", {"tie_word_embeddings": True}),
        ("glm4", {}),
        ("qwen3_moe", {}),
        ("qwen3_moe", {"norm_topk_prob": False}),
    ],
)
def test_log_probs_match_hf(world_of_one, tmp_path: Path, model_type: str, overrides: dict) -> None:
    folder = make_tiny(tmp_path, model_type, **overrides)
    trainer = MegatronTrainer(make_spec(folder))
    trainer.load_hf(folder)
    log_probs, entropies = trainer.compute_log_probs(SEQS, STARTS, with_entropy=True)
    ref_lp, ref_ent = hf_response_stats(folder, SEQS, STARTS)
    for got, want in zip([*log_probs, *entropies], [*ref_lp, *ref_ent], strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert dict(trainer.hf_named_tensors()).keys() == load_file(folder / "model.safetensors").keys()
