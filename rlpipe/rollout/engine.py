"""The rollout-engine interface, shaped like SGLang's Engine/HTTP API.

Two implementations: `HFEngine` (in-process transformers model; the CPU default and the tests) and the
SGLang engine client (production, GPU). The loop and the rollout manager only ever see this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings (SGLang's names)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    n: int = 1  # samples per prompt
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    return_routed_experts: bool = False  # MoE: each response's experts per token and layer (routing replay)
    lora_name: str | None = None  # generate with this loaded LoRA adapter (lora.sync=adapter; SGLang's lora_path)


@dataclass
class GenerateOutput:
    """One generated response: ids, text, per-token log-probs, why it stopped, and (when asked) the experts an
    MoE model routed each token it ran to."""

    output_ids: list[int]
    text: str
    output_log_probs: list[float]
    finish_reason: str  # "stop" (EOS / stop token) | "length" (max_new_tokens) | "abort"
    routed_experts: np.ndarray | None = None  # [prompt + output - 1, layers, k] int32, SGLang's routed_experts


OnOutput = Callable[[int, list[GenerateOutput]], None]  # (prompt position, its responses)


@runtime_checkable
class RolloutEngine(Protocol):
    """What the rollout side needs from an inference engine."""

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, on_output: OnOutput | None = None
    ) -> list[list[GenerateOutput]]:
        """For each prompt (token ids), `params.n` responses. `on_output(i, responses)` is called once per prompt, as
        soon as prompt i's responses are in (engines that answer one prompt at a time call it as each arrives), so
        the caller can act on a sample before the slowest one ends."""

    def begin_weight_update(self) -> None: ...

    def update_weights_from_tensor(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors; only legal between begin_weight_update and end_weight_update."""

    def end_weight_update(self) -> None: ...

    def load_lora_adapter(self, name: str, named_tensors: list[tuple[str, torch.Tensor]], config: dict) -> None:
        """Serve LoRA adapter `name` (peft-named A/B matrices, peft's adapter config) from now on, replacing an
        adapter of that name; requests naming it (`SamplingParams.lora_name`) use it. A new weight version."""
        ...

    def flush_cache(self) -> None: ...

    def release_memory_occupation(self) -> None: ...

    def resume_memory_occupation(self) -> None: ...

    def abort(self) -> None: ...

    def sampling_state(self) -> bytes | None:
        """The engine's own sampling RNG state, for a checkpoint to restore (None: not capturable, as with
        SGLang, whose sampling state lives in the server)."""

    def load_sampling_state(self, state: bytes | None) -> None:
        """Restore what `sampling_state` returned (None: nothing to restore)."""

    @property
    def weight_version(self) -> int: ...
