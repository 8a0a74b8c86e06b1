"""The typed record that travels from rollout to trainer.

One `Sample` is one response to one prompt. Samples that answer the same prompt share `group_index`
(the GRPO group, `rollout.n_samples` of them). Token lists are plain Python ints so samples pickle
cheaply across Ray and into rollout dumps.

    prompt_tokens     [P]   token ids of the (templated) prompt
    response_tokens   [R]   generated ids, EOS included when the engine stopped on it
    rollout_log_probs [R]   per-token log-probs the engine reported for response_tokens
    loss_mask         [R]   1 where the token is trained on (all ones for plain single-turn rollouts; 0 on the
                            observation tokens an environment added between the turns of a multi-turn one)
    rollout_routed_experts [P + R - 1, L, k]  MoE: the experts the engine routed each token it ran to, per
                            layer (the last token is sampled, never run); only with routing replay
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TURN_START = "turn_start"  # metadata: response index where the model's last turn began (multi-turn episodes)


class Status(enum.StrEnum):
    """Why generation of a sample stopped."""

    PENDING = "pending"  # not generated yet (or resumed from the partial-rollout buffer)
    COMPLETED = "completed"  # stopped on EOS or a stop string/token
    TRUNCATED = "truncated"  # hit max_response_len
    ABORTED = "aborted"  # cut short by the rollout (dynamic sampling had enough groups)


@dataclass
class Sample:
    """One prompt/response pair with everything the reward, filters and trainer need."""

    prompt: str | list[dict[str, str]]
    label: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    group_index: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    response_tokens: list[int] = field(default_factory=list)
    response_text: str = ""
    rollout_log_probs: list[float] = field(default_factory=list)
    loss_mask: list[int] | None = None
    rollout_routed_experts: np.ndarray | None = None
    reward: float | None = None
    status: Status = Status.PENDING
    weight_version: int = 0
    rollout_id: int = -1

    @property
    def response_length(self) -> int:
        return len(self.response_tokens)

    @property
    def last_turn_tokens(self) -> list[int]:
        """The model's last turn: the response after the last observation (the whole response when single-turn).
        Rewards that judge the final answer read this, not the tool calls and results before it."""
        return self.response_tokens[self.metadata.get(TURN_START, 0) :]

    @property
    def tokens(self) -> list[int]:
        """Prompt followed by response: the sequence the trainer scores."""
        return self.prompt_tokens + self.response_tokens
