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
from rlpipe.train.setup import trainer_spec
from rlpipe.train.trainer import MegatronTrainer
from rlpipe.train.update import TrainBatch, rl_update, sft_update


class TrainerRole:
    """The policy trainer of one rank: resume or warm start, RL and SFT steps, weights out, checkpoints."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.trainer = MegatronTrainer(trainer_spec(cfg))
        if cfg.algo.use_kl_loss or cfg.algo.kl_coef > 0:
            assert cfg.ckpt.ref_load is not None  # the resolver requires it
            self.trainer.load_reference(Path(cfg.ckpt.ref_load))

    def init_weights(self) -> tuple[int, dict[str, Any]]:
        """(next rollout, loop state) from the latest checkpoint under ckpt.load; else (0, {}) after loading
        the initial weights: ckpt.ref_load when set (an empty `load` warm-starts from the reference), else the
        HF checkpoint."""
        cfg = self.cfg
        if cfg.ckpt.load:
            loaded = self.trainer.load_checkpoint(Path(cfg.ckpt.load))
            if loaded is not None:
                return loaded
        init = cfg.ckpt.ref_load or cfg.ckpt.hf_checkpoint
        assert init is not None  # resolved
        self.trainer.load_hf(Path(init))
        return 0, {}

    def rl_update(self, samples: list[Sample]) -> dict[str, float]:
        return rl_update(self.trainer, self.cfg, samples)

    def sft_update(self, pairs: list[tuple[list[int], list[int]]], lr: float) -> dict[str, float]:
        """One supervised step on (prompt ids, response ids) pairs at a fixed learning rate."""
        samples = [Sample(prompt="", prompt_tokens=p, response_tokens=r) for p, r in pairs]
        return sft_update(self.trainer, TrainBatch.of(samples), lr, self.cfg.algo.calculate_per_token_loss)

    def hf_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        return self.trainer.hf_named_tensors()

    def save(self, next_rollout: int, loop_state: dict[str, Any]) -> None:
        assert self.cfg.ckpt.save is not None
        self.trainer.save_checkpoint(Path(self.cfg.ckpt.save), next_rollout, extra_state=loop_state)
