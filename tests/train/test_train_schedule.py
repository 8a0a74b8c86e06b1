"""Activation recompute leaves the step unchanged; LR schedules follow hand-computed values; padding waste."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import SEQS, STARTS, make_spec, make_tiny, sum_log_prob_loss

from rlpipe.train.trainer import MegatronTrainer


def _step(folder: Path, **overrides: object) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    trainer = MegatronTrainer(make_spec(folder, optimizer="sgd", lr=0.5, **overrides))
    trainer.load_hf(folder)
    metrics = trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=25.0))
    return metrics, dict(trainer.hf_named_tensors())


@pytest.mark.parametrize(
    "recompute",
    [
        {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
        {"recompute_granularity": "full", "recompute_method": "block", "recompute_num_layers": 1},
        {"recompute_granularity": "selective"},
    ],
)
def test_recompute_gives_the_same_step(world_of_one, tmp_path: Path, recompute: dict) -> None:
    folder = make_tiny(tmp_path, "qwen3")
    plain_metrics, plain = _step(folder)
    trainer = MegatronTrainer(make_spec(folder, **recompute))
    assert trainer.config.recompute_granularity == recompute["recompute_granularity"]  # reached megatron
    assert trainer.config.recompute_method == recompute.get("recompute_method")
    metrics, weights = _step(folder, **recompute)
    assert metrics["loss"] == pytest.approx(plain_metrics["loss"], abs=1e-6)
    assert metrics["grad_norm"] == pytest.approx(plain_metrics["grad_norm"], rel=1e-6)
    assert max((weights[k] - plain[k]).abs().max().item() for k in plain) < 1e-6


# Megatron's schedule (OptimizerParamScheduler), lr 1e-2 -> min_lr 1e-3, 2 warm-up steps, decay over 6 steps.
# Step n uses the lr at scheduler step n: warm-up lr * n / 2 (so step 0 runs at 0, as in Megatron-LM), then
# with r = (n - 2) / 4:  linear  1e-3 + 9e-3 * (1 - r);  cosine  1e-3 + 9e-3 * (1 + cos(pi r)) / 2;  min_lr past 6.
EXPECTED_LRS = {
    "constant": [0.0, 5e-3, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2],
    "linear": [0.0, 5e-3, 1e-2, 7.75e-3, 5.5e-3, 3.25e-3, 1e-3, 1e-3],
    "cosine": [0.0, 5e-3, 1e-2, 8.681981e-3, 5.5e-3, 2.318019e-3, 1e-3, 1e-3],
}


@pytest.mark.parametrize("style", ["constant", "linear", "cosine"])
def test_lr_schedule_matches_hand_values(world_of_one, tmp_path: Path, style: str) -> None:
    folder = make_tiny(tmp_path, "qwen2")
    spec = make_spec(
        folder,
        optimizer="sgd",
        lr=1e-2,
        min_lr=1e-3,
        lr_decay_style=style,
        lr_warmup_iters=2,
        lr_decay_iters=None if style == "constant" else 6,
    )
    trainer = MegatronTrainer(spec)
    lrs = [trainer.train_step(SEQS[:2], STARTS[:2], sum_log_prob_loss(denominator=5.0))["lr"] for _ in range(8)]
    assert lrs == pytest.approx(EXPECTED_LRS[style], abs=1e-9)


def test_padding_waste_is_reported(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny(tmp_path, "qwen2")
    loss = sum_log_prob_loss(denominator=25.0)
    padded = MegatronTrainer(make_spec(folder, micro_batch_size=2)).train_step(SEQS, STARTS, loss)
    # Micro-batches [7, 4] -> 2 x 7, [11, 3] -> 2 x 11, [5] -> 1 x 5: 41 positions for 30 tokens.
    assert padded["padding_waste"] == pytest.approx(11 / 41)
    packed = MegatronTrainer(make_spec(folder, use_dynamic_batch_size=True, max_tokens_per_gpu=12))
    assert packed.train_step(SEQS, STARTS, loss)["padding_waste"] == 0.0
