"""The PPO critic against HF, its value-loss gradient by hand, GAE through rl_update by hand, checkpoints with the
critic, and the distillation teacher's weights swapped in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import SEQS, STARTS, TINY_SHAPE, hf_response_stats, make_spec, make_tiny_qwen2
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

from rlpipe.algo import LossReduction
from rlpipe.config import load
from rlpipe.data.sample import Sample
from rlpipe.train.critic import VALUE_HEAD, MegatronCritic
from rlpipe.train.trainer import MegatronTrainer
from rlpipe.train.update import rl_update, value_loss_fn


def make_value_model(folder: Path, seed: int = 1) -> Path:
    """A random tiny Qwen2 value model (HF *ForSequenceClassification, num_labels=1: backbone + score [1, h])."""
    torch.manual_seed(seed)
    config = Qwen2Config(**TINY_SHAPE, num_labels=1, pad_token_id=0)
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return folder


def hf_values(folder: Path, seqs: list[list[int]], starts: list[int]) -> list[torch.Tensor]:
    """Independent V_t: the HF backbone's final hidden state at the position before token t, @ score.weight."""
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return [
            (model.model(torch.tensor([seq])).last_hidden_state[0] @ model.score.weight.T)[start - 1 : len(seq) - 1, 0]
            for seq, start in zip(seqs, starts, strict=True)
        ]


@pytest.mark.parametrize("packed", [False, True])
def test_critic_values_match_hf_backbone_times_head(world_of_one, tmp_path: Path, packed: bool) -> None:
    folder = make_value_model(tmp_path / "critic")
    spec = make_spec(folder, use_dynamic_batch_size=packed, max_tokens_per_gpu=16 if packed else None)
    critic = MegatronCritic(spec)
    critic.load_hf(folder)
    values = critic.compute_values(SEQS, STARTS)
    expected = hf_values(folder, SEQS, STARTS)
    for got, want in zip(values, expected, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_critic_from_policy_has_its_backbone_and_a_zero_head(world_of_one, tmp_path: Path) -> None:
    policy = make_tiny_qwen2(tmp_path / "policy")
    actor, critic = MegatronTrainer(make_spec(policy)), MegatronCritic(make_spec(policy))
    actor.load_hf(policy)
    critic.load_hf(policy)
    assert all(v.abs().max() == 0 for v in critic.compute_values(SEQS, STARTS))
    actor_params = dict(actor._module.named_parameters())
    for name, param in critic._module.named_parameters():
        if name == VALUE_HEAD:
            assert param.shape == (1, 64)
        else:
            torch.testing.assert_close(param, actor_params[name], rtol=0, atol=0)
    with pytest.raises(TypeError, match="never pushed"):
        critic.hf_named_tensors()


def test_value_loss_gradient_on_the_head_is_the_hand_formula(world_of_one, tmp_path: Path) -> None:
    """With V = V_old = 0 (zero head) the clipped value loss (1/T) sum_t (V_t - R_t)^2 has head gradient
    -(2/T) sum_t R_t h_t, so one SGD step at lr eta moves the head to (2 eta / T) sum_t R_t h_t."""
    policy = make_tiny_qwen2(tmp_path / "policy")
    eta = 0.1
    critic = MegatronCritic(make_spec(policy, optimizer="sgd", lr=eta))
    critic.load_hf(policy)
    torch.manual_seed(0)
    returns = [torch.randn(len(s) - st) for s, st in zip(SEQS, STARTS, strict=True)]
    masks = [torch.ones_like(r) for r in returns]
    zeros = [torch.zeros_like(r) for r in returns]
    reduce = LossReduction.for_global_batch(masks, per_token=True)
    rows = list(range(len(SEQS)))
    metrics = critic.train_step(SEQS, STARTS, value_loss_fn(rows, zeros, returns, masks, reduce, value_clip=0.2))

    backbone = AutoModel.from_pretrained(policy, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = torch.cat(
            [
                backbone(torch.tensor([s])).last_hidden_state[0, st - 1 : len(s) - 1]
                for s, st in zip(SEQS, STARTS, strict=True)
            ]
        )  # [T, h]
    flat_returns = torch.cat(returns)  # [T]
    expected_head = 2 * eta / flat_returns.numel() * (flat_returns[:, None] * hidden).sum(0)
    head = dict(critic._module.named_parameters())[VALUE_HEAD][0]
    torch.testing.assert_close(head, expected_head, atol=1e-6, rtol=1e-4)
    assert metrics["value_loss"] == pytest.approx(float(flat_returns.square().mean()), rel=1e-5)
    assert metrics["value_clipfrac"] == 0.0


def _gae_by_hand(reward: float, values: list[float], gamma: float, lambd: float) -> list[float]:
    advantages, running = [0.0] * len(values), 0.0
    for t in reversed(range(len(values))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = (reward if t == len(values) - 1 else 0.0) + gamma * next_value - values[t]
        running = delta + gamma * lambd * running
        advantages[t] = running
    return advantages


def test_rl_update_with_ppo_trains_critic_on_gae_returns_and_actor_on_gae_advantages(
    world_of_one, tmp_path: Path
) -> None:
    critic_folder = make_value_model(tmp_path / "critic")
    cfg = load(
        [
            "algo.advantage_estimator=ppo",
            "algo.gamma=0.9",
            "algo.lambd=0.8",
            "rollout.batch_size=1",
            "rollout.n_samples=2",
            "rollout.num_steps_per_rollout=1",
            "rollout.global_batch_size=null",
        ],
        check_paths=False,
    ).cfg
    actor = MegatronTrainer(make_spec(critic_folder))
    actor.load_hf(make_tiny_qwen2(tmp_path / "policy"))
    critic = MegatronCritic(make_spec(critic_folder))
    critic.load_hf(critic_folder)
    seqs, starts, rewards = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]], [2, 1], [1.0, 0.0]
    samples = [
        Sample(prompt="", prompt_tokens=s[:st], response_tokens=s[st:], reward=r)
        for s, st, r in zip(seqs, starts, rewards, strict=True)
    ]
    values = [v.tolist() for v in critic.compute_values(seqs, starts)]
    advantages = [_gae_by_hand(r, v, 0.9, 0.8) for r, v in zip(rewards, values, strict=True)]
    returns = [a + v for adv, vals in zip(advantages, values, strict=True) for a, v in zip(adv, vals, strict=True)]

    metrics = rl_update(actor, cfg, samples, critic=critic)
    # First step: V = V_old, so the value loss is the per-sample mean of (V - R)^2 = A^2; the ratio is 1, so the
    # policy loss is minus the per-sample mean advantage.
    assert metrics["value_loss"] == pytest.approx(sum(sum(a * a for a in adv) / len(adv) for adv in advantages) / 2)
    assert metrics["pg_loss"] == pytest.approx(-sum(sum(adv) / len(adv) for adv in advantages) / 2, abs=1e-6)
    assert metrics["returns_mean"] == pytest.approx(sum(returns) / len(returns))
    trained = critic.compute_values(seqs, starts)[0]
    assert all(v != pytest.approx(w) for v, w in zip(trained.tolist(), values[0], strict=True))

    frozen = {n: p.detach().clone() for n, p in actor._module.named_parameters()}
    critic_only = rl_update(actor, cfg, samples, critic=critic, train_actor=False)
    assert "pg_loss" not in critic_only and critic_only["value_loss"] > 0
    assert all(torch.equal(p, frozen[n]) for n, p in actor._module.named_parameters())


def test_checkpoint_round_trip_with_critic(world_of_one, tmp_path: Path) -> None:
    policy = make_tiny_qwen2(tmp_path / "policy")
    actor, critic = MegatronTrainer(make_spec(policy)), MegatronCritic(make_spec(policy))
    actor.load_hf(policy)
    critic.load_hf(make_value_model(tmp_path / "critic"))
    returns = [torch.ones(len(s) - st) for s, st in zip(SEQS, STARTS, strict=True)]
    masks = [torch.ones_like(r) for r in returns]
    rows = list(range(len(SEQS)))
    reduce = LossReduction.for_global_batch(masks, per_token=False)

    def critic_step() -> None:
        old = critic.compute_values(SEQS, STARTS)
        critic.train_step(SEQS, STARTS, value_loss_fn(rows, old, returns, masks, reduce, value_clip=0.2))

    critic_step()  # Adam state to save
    ckpt = tmp_path / "ckpt"
    actor.save_checkpoint(ckpt, 3, extra_state={"cursor": 7}, parts={"critic": critic})
    assert (ckpt / "iter_0000003" / "critic" / "metadata.json").is_file()  # a torch_dist checkpoint of its own
    assert not list(ckpt.glob("*.tmp"))
    saved_values = critic.compute_values(SEQS, STARTS)
    critic_step()
    expected_next = critic.compute_values(SEQS, STARTS)  # what the step after the checkpoint gives

    restored = MegatronCritic(make_spec(policy))
    assert restored.load_checkpoint(ckpt, part="critic") == (3, {})
    assert actor.load_checkpoint(ckpt) == (3, {"cursor": 7})
    assert MegatronCritic(make_spec(policy)).load_checkpoint(ckpt, part="no-such-part") is None
    for got, want in zip(restored.compute_values(SEQS, STARTS), saved_values, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    critic = restored
    critic_step()  # the optimizer state came back too: the same step gives the same values
    for got, want in zip(restored.compute_values(SEQS, STARTS), expected_next, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_teacher_log_probs_from_hf_folder_and_from_a_trainer_checkpoint(world_of_one, tmp_path: Path) -> None:
    student_folder = make_tiny_qwen2(tmp_path / "student", seed=0)
    teacher_folder = make_tiny_qwen2(tmp_path / "teacher", seed=5)
    student = MegatronTrainer(make_spec(student_folder))
    student.load_hf(student_folder)
    own = student.compute_log_probs(SEQS, STARTS)
    student.load_teacher(teacher_folder)
    expected, _ = hf_response_stats(teacher_folder, SEQS, STARTS)
    for got, want in zip(student.compute_teacher_log_probs(SEQS, STARTS), expected, strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    for got, want in zip(student.compute_log_probs(SEQS, STARTS), own, strict=True):  # own weights back
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    # A checkpoint the trainer saved (ckpt.save of an earlier run) works as a teacher too.
    teacher = MegatronTrainer(make_spec(teacher_folder))
    teacher.load_hf(teacher_folder)
    teacher.save_checkpoint(tmp_path / "run", 10)
    student.load_teacher(tmp_path / "run")
    for got, want in zip(student.compute_teacher_log_probs(SEQS, STARTS), expected, strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_teacher_of_another_architecture_is_refused(world_of_one, tmp_path: Path) -> None:
    student_folder = make_tiny_qwen2(tmp_path / "student")
    config = Qwen2Config.from_pretrained(student_folder).to_dict()
    Qwen2ForCausalLM(Qwen2Config(**{**config, "intermediate_size": 96})).save_pretrained(tmp_path / "narrower")
    student = MegatronTrainer(make_spec(student_folder))
    with pytest.raises(ValueError, match="does not have this model's architecture"):
        student.load_teacher(tmp_path / "narrower")
