"""Full training checkpoints in torch_dist: bit-identical resume for every optimizer, weights-only readers accept
them, a checkpoint saved by two processes (DP=2 distributed optimizer, TP=2) resumes in one, and a crashed save
leaves the previous checkpoint in charge."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import SEQS, STARTS, make_spec, make_tiny_qwen2, spawn_world, sum_log_prob_loss

from rlpipe.train import dist_ckpt
from rlpipe.train.dist_ckpt import TRACKER_FILE
from rlpipe.train.trainer import MegatronTrainer

LOSS = sum_log_prob_loss(denominator=25.0)
DECAY = {"lr": 1e-2, "lr_decay_style": "linear", "lr_decay_iters": 10}  # the resumed step's lr is the schedule's
OPTIMIZERS = {
    "adam": {"optimizer": "adam"},
    "adam-distributed": {"optimizer": "adam", "use_distributed_optimizer": True},
    "adam-bf16": {"optimizer": "adam", "params_dtype": "bf16"},
    "adam-bf16-distributed": {"optimizer": "adam", "params_dtype": "bf16", "use_distributed_optimizer": True},
    "sgd-momentum": {"optimizer": "sgd", "sgd_momentum": 0.9},
}


def _weights(trainer: MegatronTrainer) -> dict[str, torch.Tensor]:
    return dict(trainer.hf_named_tensors())


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_same_layout_resume_is_bit_identical(world_of_one, tmp_path: Path, name: str) -> None:
    folder = make_tiny_qwen2(tmp_path / "hf")
    spec = make_spec(folder, **DECAY, **OPTIMIZERS[name])
    first = MegatronTrainer(spec)
    first.load_hf(folder)
    for _ in range(2):
        first.train_step(SEQS, STARTS, LOSS)
    first.save_checkpoint(tmp_path / "ckpt", iteration=2, extra_state={"cursor": 10})
    saved_rng = torch.get_rng_state()
    expected = [first.train_step(SEQS, STARTS, LOSS) for _ in range(2)]
    expected_weights = _weights(first)

    torch.rand(100)  # move the generator on: the checkpoint must bring it back
    fresh = MegatronTrainer(spec)  # random init: everything must come from the checkpoint
    assert fresh.load_checkpoint(tmp_path / "ckpt") == (2, {"cursor": 10})
    assert torch.equal(torch.get_rng_state(), saved_rng)
    got = [fresh.train_step(SEQS, STARTS, LOSS) for _ in range(2)]
    assert got == expected  # loss, grad norm and decayed lr, bit for bit (two steps: Adam's step count carries on)
    assert _max_diff(_weights(fresh), expected_weights) == 0.0


def test_full_checkpoint_is_a_torch_dist_weights_checkpoint(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny_qwen2(tmp_path / "hf")
    trainer = MegatronTrainer(make_spec(folder, **DECAY))
    trainer.load_hf(folder)
    trainer.train_step(SEQS, STARTS, LOSS)
    trainer.save_checkpoint(tmp_path / "ckpt", iteration=1)
    trained = _weights(trainer)
    assert dist_ckpt.is_torch_dist(tmp_path / "ckpt")
    assert dist_ckpt.is_torch_dist(tmp_path / "ckpt" / "iter_0000001")

    reader = MegatronTrainer(make_spec(folder))  # weights-only readers: ckpt.ref_load / the teacher, ckpt.load
    reader.load_hf(folder)
    untrained = _weights(reader)
    reader.load_reference(tmp_path / "ckpt")
    assert _max_diff(_weights(reader), untrained) == 0.0  # the live weights are not the reference's buffers
    ref_log_probs = reader.compute_ref_log_probs(SEQS, STARTS)
    for got, want in zip(ref_log_probs, trainer.compute_log_probs(SEQS, STARTS), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    reader.load_torch_dist(tmp_path / "ckpt")
    assert _max_diff(_weights(reader), trained) == 0.0

    trainer.save_torch_dist(tmp_path / "weights", iteration=5)  # weights only: nothing to resume
    assert reader.load_checkpoint(tmp_path / "weights") is None


def test_crash_mid_save_keeps_the_previous_checkpoint(world_of_one, tmp_path: Path) -> None:
    folder = make_tiny_qwen2(tmp_path / "hf")
    trainer = MegatronTrainer(make_spec(folder, **DECAY))
    trainer.load_hf(folder)
    trainer.train_step(SEQS, STARTS, LOSS)
    ckpt = tmp_path / "ckpt"
    trainer.save_checkpoint(ckpt, iteration=2, extra_state={"cursor": 2})
    at_two = _weights(trainer)
    trainer.train_step(SEQS, STARTS, LOSS)
    # A save of iteration 4 that died before metadata.json was written and the folder renamed.
    shutil.copytree(ckpt / "iter_0000002", ckpt / "iter_0000004.tmp")
    (ckpt / "iter_0000004.tmp" / "metadata.json").unlink()

    resumed = MegatronTrainer(make_spec(folder, **DECAY))
    assert resumed.load_checkpoint(ckpt) == (2, {"cursor": 2})
    assert _max_diff(_weights(resumed), at_two) == 0.0

    trainer.save_checkpoint(ckpt, iteration=4, extra_state={"cursor": 4})  # the next save clears the leftover
    assert sorted(p.name for p in ckpt.iterdir()) == ["iter_0000002", "iter_0000004", TRACKER_FILE]
    assert resumed.load_checkpoint(ckpt) == (4, {"cursor": 4})

    (ckpt / TRACKER_FILE).write_text("9")  # a tracker naming no torch_dist folder is an error, not a fresh start
    with pytest.raises(ValueError, match="not a torch_dist checkpoint"):
        resumed.load_checkpoint(ckpt)


# ----- resharding: saved by two processes, resumed by one -----

# A large eps keeps Adam's update a smooth function of the gradient, so fp32 summation-order noise between the
# layouts (the data-parallel all-reduce, the TP split of each matmul) cannot flip the sign of a tiny component.
ADAM = {"optimizer": "adam", "adam_eps": 1e-3, **DECAY}
LAYOUTS = {  # name -> (spec overrides of the two-process run, of the one-process resume)
    "dp2-distributed": ({**ADAM, "use_distributed_optimizer": True}, {**ADAM, "use_distributed_optimizer": True}),
    "tp2": ({**ADAM, "tensor_parallel": 2}, ADAM),
}
DP_SHARES = [[0, 1, 2], [3, 4]]  # sample indices each data-parallel rank trains on


def _two_process_worker(rank: int, init_file: str, layout: str, hf_dir: str, out_dir: str) -> None:
    from rlpipe.train.distributed import init_distributed, teardown

    torch.set_num_threads(1)
    overrides = LAYOUTS[layout][0]
    init_distributed(rank, 2, f"file://{init_file}", tensor_parallel=overrides.get("tensor_parallel", 1))
    try:
        trainer = MegatronTrainer(make_spec(Path(hf_dir), **overrides))
        trainer.load_hf(Path(hf_dir))
        share = DP_SHARES[rank] if layout.startswith("dp2") else list(range(len(SEQS)))
        seqs, starts = [SEQS[i] for i in share], [STARTS[i] for i in share]
        for _ in range(2):
            trainer.train_step(seqs, starts, LOSS)
        trainer.save_checkpoint(Path(out_dir) / "ckpt", iteration=2, extra_state={"cursor": 2})
        metrics = trainer.train_step(seqs, starts, LOSS)
        torch.save({"metrics": metrics, "weights": _weights(trainer)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_checkpoint_of_two_processes_resumes_in_one(world_of_one, tmp_path: Path, layout: str) -> None:
    """The resumed step matches the uninterrupted two-process step to fp32 summation-order noise (1e-5): the
    layouts add the same gradients in another order (DP all-reduce; TP row-parallel partial sums), so bit equality
    is not expected. The optimizer state and LR schedule must have come along: weights alone step elsewhere."""
    hf_dir = make_tiny_qwen2(tmp_path / "hf")
    spawn_world(_two_process_worker, 2, tmp_path, layout, str(hf_dir), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    expected_weights = ranks[0]["weights"]
    assert _max_diff(ranks[1]["weights"], expected_weights) == 0.0  # both ranks hold the same model
    shares = len(DP_SHARES) if layout.startswith("dp2") else 1
    expected_loss = sum(r["metrics"]["loss"] for r in ranks[:shares])  # DP ranks report their own share

    spec = make_spec(hf_dir, **LAYOUTS[layout][1])
    resumed = MegatronTrainer(spec)
    torch.manual_seed(7)
    rng_before = torch.get_rng_state()
    assert resumed.load_checkpoint(tmp_path / "ckpt") == (2, {"cursor": 2})
    assert torch.equal(torch.get_rng_state(), rng_before)  # another layout: RNG stays as seeded here
    metrics = resumed.train_step(SEQS, STARTS, LOSS)
    assert metrics["lr"] == ranks[0]["metrics"]["lr"]
    assert metrics["loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert metrics["grad_norm"] == pytest.approx(ranks[0]["metrics"]["grad_norm"], rel=1e-5)
    assert _max_diff(_weights(resumed), expected_weights) < 1e-5

    weights_only = MegatronTrainer(spec)
    weights_only.load_torch_dist(tmp_path / "ckpt")
    weights_only.train_step(SEQS, STARTS, LOSS)
    assert _max_diff(_weights(weights_only), expected_weights) > 1e-4
