"""train_step: micro-batch split invariance, learning, checkpoint save/load continuity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import SEQS, STARTS, hf_response_stats, make_spec, make_tiny_qwen2, sum_log_prob_loss

from rlpipe.train.dist_ckpt import TRACKER_FILE
from rlpipe.train.trainer import MegatronTrainer


def _weights(trainer: MegatronTrainer) -> dict[str, torch.Tensor]:
    return dict(trainer.hf_named_tensors())


def _step_with(folder: Path, **overrides: object) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    trainer = MegatronTrainer(make_spec(folder, optimizer="sgd", lr=0.5, **overrides))
    trainer.load_hf(folder)
    metrics = trainer.train_step(SEQS[:4], STARTS[:4], sum_log_prob_loss(denominator=12.0))
    return metrics, _weights(trainer)


def test_micro_batch_split_invariance(world_of_one, tmp_path: Path) -> None:
    """One SGD step over the same batch: 4 micro-batches of 1, one of 4, or token-packed, same update."""
    folder = make_tiny_qwen2(tmp_path)
    m1, w1 = _step_with(folder, micro_batch_size=1)
    m4, w4 = _step_with(folder, micro_batch_size=4)
    mp, wp = _step_with(folder, use_dynamic_batch_size=True, max_tokens_per_gpu=11)  # [7], [4], [11], [3]... greedy
    original = _weights_of_checkpoint(folder)
    assert max((w1[k] - original[k]).abs().max().item() for k in w1) > 1e-3  # the step moved the weights
    for other in (w4, wp):
        assert max((w1[k] - other[k]).abs().max().item() for k in w1) < 1e-6
    assert m1["samples"] == m4["samples"] == mp["samples"] == 4.0
    assert abs(m1["loss"] - m4["loss"]) < 1e-6
    assert abs(m1["grad_norm"] - m4["grad_norm"]) < 1e-5


def test_fused_swiglu_gives_the_unfused_step(world_of_one, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """perf.bias_swiglu_fusion (megatron's torch.compile'd SwiGLU, its own backward): same loss and update."""
    from megatron.core.transformer import mlp

    calls = []
    fused_swiglu = mlp.bias_swiglu_impl
    monkeypatch.setattr(mlp, "bias_swiglu_impl", lambda *args: calls.append(1) or fused_swiglu(*args))
    folder = make_tiny_qwen2(tmp_path)
    plain_metrics, plain = _step_with(folder)
    assert not calls
    fused_metrics, fused = _step_with(folder, bias_swiglu_fusion=True)
    assert calls  # the fused kernel ran
    assert abs(plain_metrics["loss"] - fused_metrics["loss"]) < 1e-6
    assert max((plain[k] - fused[k]).abs().max().item() for k in plain) < 1e-6
    assert max((plain[k] - _weights_of_checkpoint(folder)[k]).abs().max().item() for k in plain) > 1e-3


def _weights_of_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_sft_loss_goes_down(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny_qwen2(tmp_path)
    trainer = MegatronTrainer(make_spec(folder, lr=3e-3, clip_grad=1.0))
    trainer.load_hf(folder)
    losses = [trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=25.0))["loss"] for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0], losses
    log_probs = trainer.compute_log_probs(SEQS, STARTS)
    assert abs(-sum(lp.sum().item() for lp in log_probs) / 25.0 - losses[-1]) < losses[0] - losses[-1]


@pytest.mark.parametrize("distributed_optimizer", [False, True])
def test_checkpoint_resume_gives_identical_next_step(world_of_one, tmp_path: Path, distributed_optimizer: bool) -> None:
    folder = make_tiny_qwen2(tmp_path / "hf")
    spec = make_spec(
        folder, lr=1e-2, lr_decay_style="linear", lr_decay_iters=10, use_distributed_optimizer=distributed_optimizer
    )
    loss_fn = sum_log_prob_loss(denominator=25.0)
    first = MegatronTrainer(spec)
    first.load_hf(folder)
    assert first.load_checkpoint(tmp_path / "ckpt") is None
    for _ in range(2):
        first.train_step(SEQS, STARTS, loss_fn)
    first.save_checkpoint(tmp_path / "ckpt", iteration=2, extra_state={"dataset": {"epoch": 1}})
    expected = first.train_step(SEQS, STARTS, loss_fn)
    expected_weights = _weights(first)

    assert (tmp_path / "ckpt" / TRACKER_FILE).read_text() == "2"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["iter_0000002", TRACKER_FILE]

    fresh = MegatronTrainer(spec)  # random init: everything must come from the checkpoint
    assert fresh.load_checkpoint(tmp_path / "ckpt") == (2, {"dataset": {"epoch": 1}})
    got = fresh.train_step(SEQS, STARTS, loss_fn)
    assert got == expected  # same loss, grad norm and (decayed) lr, bit for bit
    assert all(torch.equal(expected_weights[k], w) for k, w in _weights(fresh).items())


@pytest.mark.parametrize("distributed_optimizer", [False, True])
def test_bf16_scores_close_to_hf_and_learns(world_of_one, tmp_path: Path, distributed_optimizer: bool) -> None:
    """bf16 params with fp32 main params (Megatron's mixed-precision optimizer), plain and distributed."""
    folder = make_tiny_qwen2(tmp_path)
    spec = make_spec(folder, params_dtype="bf16", lr=3e-3, use_distributed_optimizer=distributed_optimizer)
    trainer = MegatronTrainer(spec)
    trainer.load_hf(folder)
    ref, _ = hf_response_stats(folder, SEQS, STARTS)
    got = trainer.compute_log_probs(SEQS, STARTS)
    assert max((a - b).abs().max().item() for a, b in zip(got, ref, strict=True)) < 2e-2  # bf16 rounding
    losses = [trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=25.0))["loss"] for _ in range(5)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_response_must_have_a_preceding_token(world_of_one, tmp_path: Path) -> None:
    trainer = MegatronTrainer(make_spec(make_tiny_qwen2(tmp_path)))
    with pytest.raises(ValueError, match=r"samples \[1\]"):
        trainer.compute_log_probs([[1, 2, 3], [4, 5]], [1, 0])


def test_reference_log_probs_come_from_the_reference_and_leave_the_actor_untouched(
    world_of_one, tmp_path: Path
) -> None:
    actor_folder = make_tiny_qwen2(tmp_path / "actor", seed=0)
    ref_folder = make_tiny_qwen2(tmp_path / "ref", seed=1)
    trainer = MegatronTrainer(make_spec(actor_folder))
    trainer.load_hf(actor_folder)
    with pytest.raises(RuntimeError, match="load_reference"):
        trainer.compute_ref_log_probs(SEQS, STARTS)
    trainer.load_reference(ref_folder)
    before = _weights(trainer)
    ref_lps = trainer.compute_ref_log_probs(SEQS, STARTS)
    expected, _ = hf_response_stats(ref_folder, SEQS, STARTS)
    for got, want in zip(ref_lps, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    after = _weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    actor_lps = trainer.compute_log_probs(SEQS, STARTS)
    assert max((a - r).abs().max().item() for a, r in zip(actor_lps, ref_lps, strict=True)) > 1e-2


def test_fixed_lr_step_leaves_the_schedule_alone(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny_qwen2(tmp_path)
    trainer = MegatronTrainer(make_spec(folder, lr=1e-2, lr_decay_style="linear", lr_decay_iters=10))
    trainer.load_hf(folder)
    warm = trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=25.0), lr=3e-3)
    assert warm["lr"] == pytest.approx(3e-3)
    first_scheduled = trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=25.0))
    second = trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=25.0))
    assert first_scheduled["lr"] == pytest.approx(1e-2)  # schedule step 0: the warm-up step did not count
    assert second["lr"] < first_scheduled["lr"]
