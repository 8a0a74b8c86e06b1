"""A step whose loss or gradient is NaN/inf is skipped, not applied: weights, optimizer state and LR schedule stay
as they were, the step is reported, and the loop stops once there are more than optim.max_nonfinite_steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from train_helpers import SEQS, STARTS, make_spec, make_tiny, sum_log_prob_loss

from rlpipe.loop import Loop, NonFiniteTraining
from rlpipe.train.trainer import MegatronTrainer


def nan_loss(indices, log_probs, entropies):
    loss = torch.stack([lp.sum() for lp in log_probs]).sum() * float("nan")
    return loss, {"loss": loss.detach()}


def inf_gradient(indices, log_probs, entropies):
    total = torch.stack([lp.sum() for lp in log_probs]).sum()
    loss = torch.sqrt(total - total.detach())  # 0, with an infinite derivative
    return loss, {"loss": loss.detach()}


@pytest.mark.parametrize("bad_loss", [nan_loss, inf_gradient], ids=["nan-loss", "inf-gradient"])
def test_a_nonfinite_step_is_skipped(world_of_one, tmp_path, bad_loss) -> None:
    folder = make_tiny(tmp_path / "hf", "qwen2")
    trainer = MegatronTrainer(make_spec(folder, lr_decay_style="linear", lr_decay_iters=10))
    trainer.load_hf(folder)
    before = {name: t.clone() for name, t in trainer.hf_named_tensors()}
    steps = trainer.scheduler.num_steps
    metrics = trainer.train_step(SEQS, STARTS, bad_loss)
    assert metrics["nonfinite_step"] == 1.0
    assert trainer.scheduler.num_steps == steps
    for name, tensor in trainer.hf_named_tensors():
        assert torch.equal(tensor, before[name]), name
    good = trainer.train_step(SEQS, STARTS, sum_log_prob_loss(denominator=10.0))
    assert good["nonfinite_step"] == 0.0 and trainer.scheduler.num_steps == steps + 1
    assert any(not torch.equal(t, before[n]) for n, t in trainer.hf_named_tensors())


def test_the_loop_stops_after_the_allowed_number() -> None:
    loop = SimpleNamespace(nonfinite_steps=0, cfg=SimpleNamespace(optim=SimpleNamespace(max_nonfinite_steps=2)))
    Loop.count_nonfinite(loop, 0.0, "rollout 0")
    Loop.count_nonfinite(loop, 2.0, "rollout 1")
    assert loop.nonfinite_steps == 2
    with pytest.raises(NonFiniteTraining, match=r"rollout 2: .*3 such step\(s\) so far, optim.max_nonfinite_steps=2"):
        Loop.count_nonfinite(loop, 1.0, "rollout 2")
