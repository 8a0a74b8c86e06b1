"""Trainer log-probs / entropies equal the HF model's, at TP=1 in-process and TP=2 over two gloo processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import (
    SEQS,
    STARTS,
    hf_response_stats,
    make_spec,
    make_tiny_llama,
    make_tiny_qwen2,
    spawn_world,
    sum_log_prob_loss,
)

from rlpipe.train.trainer import MegatronTrainer


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("tied", "dynamic", "temperature"), [(False, False, 1.0), (False, True, 0.7), (True, False, 0.7)]
)
def test_log_probs_match_hf_tp1(world_of_one, tmp_path: Path, tied: bool, dynamic: bool, temperature: float) -> None:
    folder = make_tiny_qwen2(tmp_path, tied=tied)
    spec = make_spec(
        folder, use_dynamic_batch_size=dynamic, max_tokens_per_gpu=12 if dynamic else None, temperature=temperature
    )
    trainer = MegatronTrainer(spec)
    trainer.load_hf(folder)
    log_probs, entropies = trainer.compute_log_probs(SEQS, STARTS, with_entropy=True)
    ref_lp, ref_ent = hf_response_stats(folder, SEQS, STARTS, temperature)
    assert _max_diff(log_probs, ref_lp) < 1e-5
    assert _max_diff(entropies, ref_ent) < 1e-5
    assert _max_diff(trainer.compute_log_probs(SEQS, STARTS), ref_lp) < 1e-5


def test_log_probs_match_hf_llama(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny_llama(tmp_path)
    trainer = MegatronTrainer(make_spec(folder))
    trainer.load_hf(folder)
    ref_lp, _ = hf_response_stats(folder, SEQS, STARTS)
    assert _max_diff(trainer.compute_log_probs(SEQS, STARTS), ref_lp) < 1e-5


def _tp2_worker(rank: int, init_file: str, folder: str, out_dir: str) -> None:
    from rlpipe.train.distributed import init_distributed, teardown

    torch.set_num_threads(1)
    init_distributed(rank, 2, f"file://{init_file}", tensor_parallel=2)
    try:
        trainer = MegatronTrainer(make_spec(Path(folder), tensor_parallel=2, optimizer="sgd", lr=0.1))
        trainer.load_hf(Path(folder))
        log_probs, entropies = trainer.compute_log_probs(SEQS, STARTS, with_entropy=True)
        before = dict(trainer.hf_named_tensors())
        trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=10.0))
        after = dict(trainer.hf_named_tensors())
        torch.save(
            {"log_probs": log_probs, "entropy": entropies, "before": before, "after": after},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        teardown()


def test_tp2_matches_hf_and_tp1(world_of_one, tmp_path: Path) -> None:
    """Two TP ranks: log-probs/entropies equal HF's, gathered weights equal the checkpoint, and one SGD step
    updates the weights as the same step at TP=1 does (checks the vocab-parallel loss and gradients)."""
    folder = make_tiny_qwen2(tmp_path / "ckpt")
    spawn_world(_tp2_worker, 2, tmp_path, str(folder), str(tmp_path))

    tp1 = MegatronTrainer(make_spec(folder, optimizer="sgd", lr=0.1))
    tp1.load_hf(folder)
    tp1.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=10.0))
    tp1_after = dict(tp1.hf_named_tensors())

    ref_lp, ref_ent = hf_response_stats(folder, SEQS, STARTS)
    hf = load_file(folder / "model.safetensors")
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert _max_diff(out["log_probs"], ref_lp) < 1e-5
        assert _max_diff(out["entropy"], ref_ent) < 1e-5
        assert out["before"].keys() == hf.keys()
        assert [k for k in hf if not torch.equal(out["before"][k], hf[k])] == []
        assert out["after"].keys() == tp1_after.keys()
        assert max((out["after"][k] - tp1_after[k]).abs().max().item() for k in hf) < 1e-5
        assert any(not torch.equal(out["after"][k], hf[k]) for k in hf)  # the step did move the weights
