"""The plan's parameter counts (rlpipe.plan.params, from the config alone) equal the Megatron models the trainer
builds, for every family, tied and untied, at TP 1 and per rank at TP 2 (counted on rank 0 of two gloo processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import make_spec, make_tiny, spawn_world

from rlpipe.config.hf import hf_architecture
from rlpipe.config.schema import ModelConfig
from rlpipe.plan.params import count_params

FAMILIES = [
    ("qwen2", {}),
    ("qwen2", {"tie_word_embeddings": True}),
    ("llama", {}),
    ("qwen3", {}),
    ("glm4", {}),
    ("qwen3_moe", {}),
]


def _model_fields(folder: Path) -> dict:
    """The resolved `model` group of an HF folder, as `model=auto` fills it."""
    hf = json.loads((folder / "config.json").read_text())
    fields = {**ModelConfig().model_dump(), **hf_architecture(hf)}
    fields["untie_embeddings_and_output_weights"] = not hf.get("tie_word_embeddings", False)
    return fields


def _built_params(folder: Path, **spec: object) -> int:
    from rlpipe.train.trainer import MegatronTrainer

    trainer = MegatronTrainer(make_spec(folder, **spec))
    return sum(p.numel() for p in trainer._module.parameters())


@pytest.mark.parametrize(("family", "overrides"), FAMILIES, ids=[f"{f}{'-tied' if o else ''}" for f, o in FAMILIES])
def test_plan_counts_the_built_model(world_of_one, tmp_path: Path, family: str, overrides: dict) -> None:
    folder = make_tiny(tmp_path / family, family, **overrides)
    assert count_params(_model_fields(folder)).total == _built_params(folder)


def _tp2_worker(rank: int, init_file: str, folder: str, out: str) -> None:
    from rlpipe.train.distributed import init_distributed, teardown

    torch.set_num_threads(1)
    init_distributed(rank, 2, f"file://{init_file}", 2, expert_tensor_parallel=2)
    try:
        n = _built_params(Path(folder), tensor_parallel=2, sequence_parallel=True, expert_tensor_parallel=2)
        Path(out, f"rank{rank}.txt").write_text(str(n))
    finally:
        teardown()


@pytest.mark.parametrize("family", ["qwen3", "qwen3_moe"])
def test_plan_counts_one_tp_rank(tmp_path: Path, family: str) -> None:
    """At TP 2 a rank holds half of every sharded weight (vocab padded to 256) and every norm and router whole."""
    folder = make_tiny(tmp_path / family, family)
    spawn_world(_tp2_worker, 2, tmp_path, str(folder), str(tmp_path))
    count = count_params(_model_fields(folder), tensor_parallel=2)
    per_rank = (
        (count.embedding + count.output) // 2
        + count.num_layers * (count.layer_dense // 2 + count.layer_replicated + count.layer_experts // 2)
        + count.final_norm
    )
    assert [int((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)] == [per_rank, per_rank]
