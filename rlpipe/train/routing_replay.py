"""MoE rollout routing replay (R3): the trainer uses the experts the engine chose for each token.

The engine returns, per sample, the top-k experts of every layer for every token it ran through the model:
`routes [len(tokens) - 1, L, k]` int (SGLang's `routed_experts`; the last token is sampled, never fed). The
trainer hands them to megatron-core's `RouterReplay` (TransformerConfig.moe_enable_routing_replay): in
`REPLAY_FORWARD` a router takes the given indices instead of its own top-k and gathers its scores there, so the
mixture weights still come from (and train) the trainer's router, while the choice of experts is the engine's.

Megatron's routers see a micro-batch's tokens as the flattened [s, b] activations of their rank, so the routes
follow the same path as the tokens: laid out like the micro-batch (padded rows or one packed row), cut to this
context-parallel rank's positions, transposed to sequence-major, cut to this tensor-parallel rank's sequence
chunk under sequence parallelism, then split per MoE layer of this pipeline stage. Positions no sample's route
covers (padding, each sample's last token) get experts 0..k-1: they are computed but never scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from megatron.core import parallel_state
from megatron.core.transformer.moe.router_replay import RouterReplay, RouterReplayAction

from rlpipe.train.batching import MicroBatch
from rlpipe.train.context_parallel import cp_size, my_positions


class RouteError(ValueError):
    """A sample's routes do not fit the model or the sample."""


def micro_batch_routes(mb: MicroBatch, routes: Sequence[np.ndarray], num_layers: int, topk: int) -> torch.Tensor:
    """Every position's experts in `mb`'s layout: [b, S, L, k] int64. `routes` is indexed like the caller's
    batch (`mb.indices` point into it)."""
    b, width = mb.tokens.shape
    out = torch.arange(topk).expand(b, width, num_layers, topk).clone()
    for i, span in zip(mb.indices, mb.spans, strict=True):
        sample = routes[i]
        if sample.shape != (span.length - 1, num_layers, topk):
            raise RouteError(
                f"sample {i}: routed experts of shape {tuple(sample.shape)}, expected "
                f"({span.length - 1}, {num_layers}, {topk}) = (tokens - 1, MoE layers, top-k)"
            )
        out[span.row, span.offset : span.offset + span.length - 1] = torch.from_numpy(np.asarray(sample, np.int64))
    return out


def local_targets(
    routes: torch.Tensor, first_layer: int, num_local_layers: int, sequence_parallel: bool
) -> list[torch.Tensor]:
    """This rank's per-layer replay targets from a micro-batch's [b, S, L, k] routes: one [tokens, k] tensor per
    MoE layer of this pipeline stage, tokens in the order its routers see them."""
    if cp_size() > 1:
        routes = routes[:, my_positions(routes.shape[1])]
    routes = routes.transpose(0, 1)  # [s, b, L, k]: Megatron's activations are sequence-major
    if sequence_parallel:
        tp, rank = (
            parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_tensor_model_parallel_rank(),
        )
        chunk = routes.shape[0] // tp
        routes = routes[rank * chunk : (rank + 1) * chunk]
    tokens = routes.reshape(-1, *routes.shape[2:])  # [s * b, L, k]
    return [tokens[:, layer].contiguous() for layer in range(first_layer, first_layer + num_local_layers)]


class Replayer:
    """The routers of one model and the replay targets of its next forward passes.

    `load(targets)` before a micro-batch's forward makes every router replay them; `after_forward()` switches to
    replaying backward, so an activation-recompute forward during the backward pops the same targets in the
    same order (megatron's FIFO); `clear()` ends replay and forgets every target.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.routers: list[RouterReplay] = [
            m.router_replay for m in model.modules() if getattr(m, "router_replay", None) is not None
        ]

    def load(self, targets: list[torch.Tensor]) -> None:
        if len(targets) != len(self.routers):
            raise RouteError(f"{len(targets)} layers of routes for {len(self.routers)} MoE layers on this rank")
        for router, target in zip(self.routers, targets, strict=True):
            router.set_target_indices(target)
            router.set_router_replay_action(RouterReplayAction.REPLAY_FORWARD)

    def after_forward(self) -> None:
        for router in self.routers:
            router.set_router_replay_action(RouterReplayAction.REPLAY_BACKWARD)

    def clear(self) -> None:
        for router in self.routers:
            router.clear_indices()
            router.clear_router_replay_action()
