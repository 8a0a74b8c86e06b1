"""HF <-> Megatron weight conversion: exact round trips, TP layouts, vocab padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import assert_round_trip_exact, make_tiny_qwen2
from transformers import AutoConfig

from rlpipe.plan.params import padded_vocab_size
from rlpipe.train.weights import hf_to_megatron


def test_padded_vocab_size() -> None:
    assert padded_vocab_size(32, 1) == 128
    assert padded_vocab_size(32, 2) == 256
    assert padded_vocab_size(151936, 1) == 151936  # Qwen2.5: already a multiple of 128
    assert padded_vocab_size(151936, 2) == 152064  # 1187 * 128 rounded up to a multiple of 256
    assert padded_vocab_size(129, 1, divisible_by=1) == 129


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("tp", [1, 2])
def test_round_trip_is_exact(tmp_path: Path, tied: bool, tp: int) -> None:
    folder = make_tiny_qwen2(tmp_path, tied=tied)
    assert_round_trip_exact(folder, tp)


def test_megatron_layout_at_tp2(tmp_path: Path) -> None:
    """Hand-checked layout: per query group [2 q heads | k | v]; fc1 = [gate rows | up rows] of the rank."""
    folder = make_tiny_qwen2(tmp_path)
    config = AutoConfig.from_pretrained(folder)
    hf = load_file(folder / "model.safetensors")
    d = 16  # head dim = 64 / 4
    rank1 = dict(hf_to_megatron(hf, config, tp_rank=1, tp_size=2))
    attn = "model.layers.0.self_attn."
    qkv = rank1["decoder.layers.0.self_attention.linear_qkv.weight"]  # group 1 only: [2d + d + d, 64]
    assert torch.equal(qkv[: 2 * d], hf[attn + "q_proj.weight"][2 * d : 4 * d])  # heads 2, 3
    assert torch.equal(qkv[2 * d : 3 * d], hf[attn + "k_proj.weight"][d : 2 * d])  # kv head 1
    assert torch.equal(qkv[3 * d :], hf[attn + "v_proj.weight"][d : 2 * d])
    qkv_bias = rank1["decoder.layers.0.self_attention.linear_qkv.bias"]
    assert torch.equal(qkv_bias[2 * d : 3 * d], hf[attn + "k_proj.bias"][d:])
    fc1 = rank1["decoder.layers.0.mlp.linear_fc1.weight"]  # [2 * 64, 64]
    assert torch.equal(fc1[:64], hf["model.layers.0.mlp.gate_proj.weight"][64:])
    assert torch.equal(fc1[64:], hf["model.layers.0.mlp.up_proj.weight"][64:])
    proj = rank1["decoder.layers.0.self_attention.linear_proj.weight"]
    assert torch.equal(proj, hf[attn + "o_proj.weight"][:, 32:])
    # Vocab 32 padded to 256: rank 1 holds rows 128..255, all padding.
    assert rank1["output_layer.weight"].shape == (128, 64)
    assert not rank1["output_layer.weight"].any()
