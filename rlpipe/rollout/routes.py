"""The experts an HF mixture-of-experts model routed each token to, recorded while it generates.

For rollout routing replay (R3, `algo.use_rollout_routing_replay`): the trainer replays these instead of
routing afresh, so engine and trainer mix the same experts. The record has SGLang's `routed_experts` shape per
sample, [prompt + response - 1, layers, top-k]: every token the model ran, the last sampled one excepted.

Routers are found by class: transformers' MoE families name theirs `*TopKRouter` and return
(router_logits, router_scores, router_indices [tokens, k]) over the batch's tokens flattened row-major.
"""

from __future__ import annotations

import numpy as np
import torch


class RouteRecorder:
    """Forward hooks on every MoE router of `model`, recording each forward call's top-k indices per layer.

    Use as a context manager around one batched decode: call 0 is the prefill over the left-padded prompts
    [B, P], each later call one decode step [B, 1]; `routes(...)` assembles a row's record afterwards."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.routers = [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]
        if not self.routers:
            raise ValueError(
                f"{type(model).__name__} has no MoE router (a *TopKRouter module): routed experts are for MoE "
                "models only"
            )
        self.calls: list[list[torch.Tensor]] = [[] for _ in self.routers]  # per layer, per forward: [B * s, k]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> RouteRecorder:
        for layer, router in enumerate(self.routers):
            self._handles.append(router.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: int):
        def record(_module: torch.nn.Module, _inputs: object, output: tuple[torch.Tensor, ...]) -> None:
            self.calls[layer].append(output[2].detach().to("cpu", torch.int32))

        return record

    def routes(self, row: int, batch: int, prompt_len: int, response_len: int) -> np.ndarray:
        """Row `row`'s record: [prompt_len + response_len - 1, layers, k] int32. The prefill covered the last
        `prompt_len` of its left-padded positions; decode call c ran response token c - 1."""
        per_layer = []
        for calls in self.calls:
            prefill = calls[0].view(batch, -1, calls[0].shape[-1])[row, -prompt_len:]  # [prompt_len, k]
            steps = [calls[c].view(batch, -1)[row] for c in range(1, response_len)]  # each [k]
            per_layer.append(torch.cat([prefill, *(s[None] for s in steps)]))
        ran = prompt_len + response_len - 1  # with no response at all, the prompt's last token was run too
        return torch.stack(per_layer, dim=1)[:ran].numpy()
