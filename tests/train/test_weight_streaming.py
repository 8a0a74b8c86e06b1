"""Streaming weight conversion: HF files read tensor by tensor give exactly what the whole-dict read gave, round
trips stay bit-identical in bf16 (HF -> Megatron -> HF, HF -> torch_dist -> HF), and the HF export written a file
at a time reads back whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import assert_round_trip_exact, make_tiny, make_tiny_qwen2
from transformers import AutoConfig

from rlpipe.tools.convert import main as convert
from rlpipe.train.hf_export import export_hf
from rlpipe.train.weights import hf_to_megatron, read_hf_state


def as_bf16(folder: Path, split: bool = True) -> Path:
    """Rewrite a tiny HF folder's weights in bf16; `split`: over two files with an index, as large checkpoints are."""
    weights = {name: t.to(torch.bfloat16) for name, t in load_file(folder / "model.safetensors").items()}
    if not split:
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    files = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in files.items():
        save_file({n: weights[n] for n in part}, str(folder / file), metadata={"format": "pt"})
    index = {"weight_map": {n: file for file, part in files.items() for n in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF folder, read whole (the eager read the converters used to do)."""
    return {name: t for file in sorted(folder.glob("*.safetensors")) for name, t in load_file(file).items()}


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("tp", [1, 2])
def test_lazy_read_converts_like_the_whole_dict(tmp_path: Path, tp: int, bf16: bool) -> None:
    folder = make_tiny_qwen2(tmp_path, tied=True)
    if bf16:
        as_bf16(folder)
    config = AutoConfig.from_pretrained(folder)
    assert dict(read_hf_state(folder)).keys() == hf_weights(folder).keys()
    for rank in range(tp):
        lazy = list(hf_to_megatron(read_hf_state(folder), config, rank, tp))
        whole = dict(hf_to_megatron(hf_weights(folder), config, rank, tp))
        assert [name for name, _ in lazy] == list(whole)
        for name, tensor in lazy:
            assert tensor.dtype == whole[name].dtype and torch.equal(tensor, whole[name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tp", [1, 2])
def test_conversion_into_parameters_writes_what_it_returns(tmp_path: Path, tp: int, dtype: torch.dtype) -> None:
    """`into` (the parameters being loaded, bf16 or fp32) gets every element, vocab padding included, of what the
    conversion returns without it; the bf16 source in an fp32 parameter is exact."""
    folder = as_bf16(make_tiny_qwen2(tmp_path, tied=False))
    config = AutoConfig.from_pretrained(folder)
    for rank in range(tp):
        expected = dict(hf_to_megatron(read_hf_state(folder), config, rank, tp))
        into = {name: torch.full(t.shape, float("nan"), dtype=dtype) for name, t in expected.items()}
        written = dict(hf_to_megatron(read_hf_state(folder), config, rank, tp, into=into))
        assert written.keys() == expected.keys()
        for name, tensor in expected.items():
            assert written[name] is into[name] and torch.equal(into[name], tensor.to(dtype)), name


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("tp", [1, 2])
def test_bf16_round_trip_is_bit_identical(tmp_path: Path, tp: int, tied: bool) -> None:
    assert_round_trip_exact(as_bf16(make_tiny_qwen2(tmp_path, tied=tied), split=False), tp)


def test_torch_dist_round_trip_keeps_bf16_bit_identical(tmp_path: Path) -> None:
    hf_dir = as_bf16(make_tiny(tmp_path / "hf", "qwen2", tie_word_embeddings=True))
    convert(["hf-to-torch-dist", "--hf", str(hf_dir), "--out", str(tmp_path / "dist")])
    convert(
        [
            "torch-dist-to-hf",
            "--ckpt",
            str(tmp_path / "dist"),
            "--hf-config",
            str(hf_dir),
            "--out",
            str(tmp_path / "back"),
        ]
    )
    original, back = hf_weights(hf_dir), load_file(tmp_path / "back" / "model.safetensors")
    assert back.keys() == original.keys()
    assert [k for k, t in original.items() if back[k].dtype != torch.bfloat16 or not torch.equal(back[k], t)] == []


def test_export_writes_a_file_at_a_time_with_an_index(tmp_path: Path) -> None:
    folder = make_tiny_qwen2(tmp_path / "hf")
    weights = hf_weights(folder)
    largest = max(t.numel() * t.element_size() for t in weights.values())
    export_hf(iter(weights.items()), folder, tmp_path / "out", shard_bytes=largest)
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert len(files) > 1 and files[-1] == f"model-{len(files):05d}-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in weights.values())
    back = dict(read_hf_state(tmp_path / "out"))
    assert back.keys() == weights.keys()
    assert all(torch.equal(back[name], t) for name, t in weights.items())
    assert (tmp_path / "out" / "config.json").exists()
