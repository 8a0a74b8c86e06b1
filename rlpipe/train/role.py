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
from rlpipe.train.dist_ckpt import is_torch_dist
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
        """(next rollout, loop state) from the latest full checkpoint under ckpt.load; else (0, {}) after
        loading the initial weights: a weights-only torch_dist checkpoint in ckpt.load, else ckpt.ref_load (an
        empty `load` warm-starts from the reference), else the HF checkpoint. HF folders and torch_dist
        checkpoints are both accepted."""
        cfg = self.cfg
        load = Path(cfg.ckpt.load) if cfg.ckpt.load else None
        if load is not None:
            loaded = self.trainer.load_checkpoint(load)
            if loaded is not None:
                return loaded
        if load is not None and is_torch_dist(load):
            init = load
        else:
            assert cfg.ckpt.hf_checkpoint is not None  # resolved
            init = Path(cfg.ckpt.ref_load or cfg.ckpt.hf_checkpoint)
        if is_torch_dist(init):
            self.trainer.load_torch_dist(init)
        else:
            self.trainer.load_hf(init)
        return 0, {}

    def rl_update(self, samples: list[Sample]) -> dict[str, float]:
        return rl_update(self.trainer, self.cfg, samples)

    def sft_update(self, pairs: list[tuple[list[int], list[int]]], lr: float) -> dict[str, float]:
        """One supervised step on (prompt ids, response ids) pairs at a fixed learning rate."""
        samples = [Sample(prompt="", prompt_tokens=p, response_tokens=r) for p, r in pairs]
        return sft_update(self.trainer, TrainBatch.of(samples), lr, self.cfg.algo.calculate_per_token_loss)

    def offload(self) -> None:
        self.trainer.offload()

    def onload(self) -> None:
        self.trainer.onload()

    def hf_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        return self.trainer.hf_named_tensors()

    def save(self, next_rollout: int, loop_state: dict[str, Any]) -> None:
        assert self.cfg.ckpt.save is not None
        self.trainer.save_checkpoint(Path(self.cfg.ckpt.save), next_rollout, extra_state=loop_state)
