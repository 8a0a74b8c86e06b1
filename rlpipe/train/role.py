"""One trainer rank in rollout terms: what the loop asks of the trainer, identical in-process and on Ray.

The loop only calls these methods; in-process it holds a `TrainerRole` directly, on Ray a group of actors
that each wrap one (rlpipe.cluster.groups) and answer with rank 0's result. torch.distributed and Megatron's
parallel state must be initialised before construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlpipe.config.schema import RunConfig
from rlpipe.data.sample import Sample
from rlpipe.data.tokenizer import SftExample
from rlpipe.loading import loading
from rlpipe.train.critic import MegatronCritic
from rlpipe.train.dist_ckpt import is_torch_dist, prune_iterations
from rlpipe.train.hf_export import export_hf
from rlpipe.train.peft_adapter import load_adapter, save_adapter
from rlpipe.train.setup import critic_spec, trainer_spec
from rlpipe.train.trainer import MegatronTrainer
from rlpipe.train.update import TrainBatch, eval_loss, rl_update, sft_update

CRITIC_PART = "critic"  # the critic's sub-folder inside each checkpoint iteration folder
ADAPTER_FOLDER = "adapter"  # LoRA: the peft adapter folder inside each ckpt.save_hf export


class TrainerRole:
    """The policy trainer of one rank: resume or warm start, RL and SFT steps, weights out, checkpoints.

    With advantage_estimator=ppo it also owns the critic (built, loaded, trained, offloaded and checkpointed
    with the policy); with on_policy_distillation the teacher's weights, held on the host like the reference.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.trainer = MegatronTrainer(trainer_spec(cfg))
        self.lora = cfg.lora.rank > 0  # the base is frozen: it is the KL reference too (adapters switched off)
        if (cfg.algo.use_kl_loss or cfg.algo.kl_coef > 0) and not self.lora:
            assert cfg.ckpt.ref_load is not None  # the resolver requires it
            with loading("the reference weights (ckpt.ref_load)", cfg.ckpt.ref_load):
                self.trainer.load_reference(Path(cfg.ckpt.ref_load))
        if cfg.algo.advantage_estimator == "on_policy_distillation":
            assert cfg.algo.opd_teacher_load is not None  # the resolver requires it
            with loading("the teacher's weights (algo.opd_teacher_load)", cfg.algo.opd_teacher_load):
                self.trainer.load_teacher(Path(cfg.algo.opd_teacher_load))
        self.critic = MegatronCritic(critic_spec(cfg)) if cfg.algo.advantage_estimator == "ppo" else None
        self.rollouts_trained = 0  # rollouts this run has trained on (resumed from checkpoints): critic-only phase

    def init_weights(self) -> tuple[int, dict[str, Any]]:
        """(next rollout, loop state) from the latest full checkpoint under ckpt.load; else (0, {}) after
        loading the initial weights: a weights-only torch_dist checkpoint in ckpt.load, else ckpt.ref_load (an
        empty `load` warm-starts from the reference), else the HF checkpoint. HF folders and torch_dist
        checkpoints are both accepted. With LoRA, `_init_lora` instead."""
        if self.lora:
            return self._init_lora()
        cfg = self.cfg
        load = Path(cfg.ckpt.load) if cfg.ckpt.load else None
        if load is not None:
            with loading("the checkpoint to resume (ckpt.load)", load):
                loaded = self.trainer.load_checkpoint(load)
                if loaded is not None:
                    self.rollouts_trained = loaded[0]
                    if self.critic is not None and self.critic.load_checkpoint(load, part=CRITIC_PART) is None:
                        self._init_critic()  # a checkpoint from a run without a critic: start a fresh one
            if loaded is not None:
                return loaded
        if self.critic is not None:
            self._init_critic()
        if load is not None and is_torch_dist(load):
            init = load
        else:
            assert cfg.ckpt.hf_checkpoint is not None  # resolved
            init = Path(cfg.ckpt.ref_load or cfg.ckpt.hf_checkpoint)
        self._load_weights(init, "the initial weights")
        return 0, {}

    def _load_weights(self, folder: Path, what: str) -> None:
        """Model weights from an HF folder or a torch_dist checkpoint, with a progress line naming `what`."""
        with loading(what, folder):
            if is_torch_dist(folder):
                self.trainer.load_torch_dist(folder)
            else:
                self.trainer.load_hf(folder)

    def _init_lora(self) -> tuple[int, dict[str, Any]]:
        """LoRA: the frozen base from ckpt.ref_load, else the HF checkpoint (HF folder or torch_dist); then the
        latest checkpoint under ckpt.load, which holds the adapters, their optimizer state and the loop state; else
        lora.adapter_path's adapters, or fresh ones (B = 0: the base model exactly)."""
        cfg = self.cfg
        assert cfg.ckpt.hf_checkpoint is not None  # resolved
        self._load_weights(Path(cfg.ckpt.ref_load or cfg.ckpt.hf_checkpoint), "the base weights LoRA trains on")
        if cfg.ckpt.load:
            with loading("the LoRA checkpoint to resume (ckpt.load)", cfg.ckpt.load):
                loaded = self.trainer.load_checkpoint(Path(cfg.ckpt.load))
            if loaded is not None:
                return loaded
        if cfg.lora.adapter_path:
            with loading("the adapters to start from (lora.adapter_path)", cfg.lora.adapter_path):
                self.trainer.load_adapters(load_adapter(Path(cfg.lora.adapter_path)))
        return 0, {}

    def _init_critic(self) -> None:
        """The critic's initial weights: ckpt.critic_load, else the policy's HF checkpoint (head zero)."""
        assert self.critic is not None and self.cfg.ckpt.hf_checkpoint is not None
        folder = Path(self.cfg.ckpt.critic_load or self.cfg.ckpt.hf_checkpoint)
        with loading("the critic's initial weights", folder):
            self.critic.load_hf(folder)

    def rl_update(self, samples: list[Sample]) -> dict[str, float]:
        """One rollout's training; under ppo the first algo.num_critic_only_steps rollouts train the critic only.
        The SFT job (algo.loss_type=sft_loss) takes num_steps_per_rollout supervised steps on the schedule."""
        if self.cfg.sft_job:
            steps = self.cfg.rollout.num_steps_per_rollout
            assert steps is not None  # resolved
            per_token = self.cfg.algo.calculate_per_token_loss
            return sft_update(self.trainer, TrainBatch.of(samples), None, per_token, steps)
        train_actor = self.critic is None or self.rollouts_trained >= self.cfg.algo.num_critic_only_steps
        metrics = rl_update(self.trainer, self.cfg, samples, critic=self.critic, train_actor=train_actor)
        self.rollouts_trained += 1
        return metrics

    def sft_update(self, examples: list[SftExample], lr: float) -> dict[str, float]:
        """One supervised step on (prompt ids, response ids, loss mask) examples at a fixed learning rate."""
        samples = [Sample(prompt="", prompt_tokens=p, response_tokens=r, loss_mask=m) for p, r, m in examples]
        return sft_update(self.trainer, TrainBatch.of(samples), lr, self.cfg.algo.calculate_per_token_loss)

    def eval_loss(self, samples: list[Sample]) -> dict[str, float]:
        """Per-token negative log-likelihood (and perplexity) of held-out supervised samples (the SFT job's eval)."""
        return eval_loss(self.trainer, TrainBatch.of(samples))

    def offload(self) -> None:
        self.trainer.offload()
        if self.critic is not None:
            self.critic.offload()

    def onload(self) -> None:
        self.trainer.onload()
        if self.critic is not None:
            self.critic.onload()

    def hf_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        return self.trainer.hf_named_tensors()

    def adapter_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        return self.trainer.adapter_named_tensors()

    def save(self, next_rollout: int, loop_state: dict[str, Any]) -> None:
        assert self.cfg.ckpt.save is not None
        parts = {CRITIC_PART: self.critic} if self.critic is not None else {}
        self.trainer.save_checkpoint(Path(self.cfg.ckpt.save), next_rollout, extra_state=loop_state, parts=parts)
        if self.cfg.ckpt.keep_last and torch.distributed.get_rank() == 0:
            prune_iterations(Path(self.cfg.ckpt.save), self.cfg.ckpt.keep_last)
        if self.cfg.ckpt.save_hf:  # every rank helps gather the weights; rank 0 writes them
            named = self.trainer.hf_named_tensors()  # with LoRA: merged
            adapters = self.trainer.adapter_named_tensors() if self.lora else []
            if torch.distributed.get_rank() == 0:
                assert self.cfg.ckpt.hf_checkpoint is not None  # resolved
                out = Path(self.cfg.ckpt.save_hf.format(rollout_id=next_rollout))
                export_hf(named, Path(self.cfg.ckpt.hf_checkpoint), out)
                if self.lora:  # and the adapters alone, as peft loads them: out/adapter
                    spec = self.trainer.spec.lora
                    assert spec is not None
                    save_adapter(adapters, spec, self.cfg.ckpt.hf_checkpoint, out / ADAPTER_FOLDER)
