"""The SFT job's rollout: the next conversations of the data, as supervised samples; nothing is generated.

This is Miles' and slime's `sft_rollout.generate_rollout`: with `algo.loss_type=sft_loss` the loop runs unchanged
(data cursor, epochs, dynamic batching, checkpoints and resume are the RL run's), and each "rollout" is the next
`rollout.batch_size` conversations, trained on their assistant turns only (rlpipe.data.conversation). The resolver
makes it the rollout function of an SFT job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlpipe.config.schema import RunConfig
from rlpipe.data.sample import Sample

if TYPE_CHECKING:  # a light module: the config phase imports it to check its signature when a config names it
    from rlpipe.rollout.generate import RolloutSource


def generate_rollout(cfg: RunConfig, rollout_id: int, source: RolloutSource) -> list[list[Sample]]:
    """The next `rollout.batch_size` conversations, one group each, reward 0 (the SFT loss does not read it)."""
    assert cfg.rollout.batch_size is not None  # resolved
    groups = []
    for sample in source.dataset.next_batch(cfg.rollout.batch_size):
        trained = source.dataset.training_sample(sample)
        trained.reward, trained.rollout_id = 0.0, rollout_id
        trained.index = trained.group_index = len(groups)  # rollout positions, as generated samples have
        groups.append([trained])
    source.metrics["sft_trained_tokens"] = float(sum(sum(s.loss_mask or []) for g in groups for s in g))
    return groups
