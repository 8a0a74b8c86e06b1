"""Let megatron-core 0.16.1 train on CPU (gloo): one small patch per place it assumes CUDA.

Megatron-core runs its local layer spec, DDP and optimizer on CPU once a handful of hard-coded CUDA calls
are redirected. Every patch here is scoped to the megatron module that makes the assumption, so nothing
else in the process (transformers, the rollout engine) sees a changed `torch`. `apply_cpu_patches()` is
idempotent and does nothing when CUDA is available: on GPU megatron runs unpatched.

The mechanism for most patches is `_CpuTorch`, a stand-in for the name `torch` inside one megatron module
that maps `device="cuda"` / `torch.cuda.current_device()` to the CPU and forwards everything else to torch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable
from typing import Any

import torch

_APPLIED = False


class _Stream:
    """Stand-in for a CUDA stream (and its events): CPU ops run in order, so there is nothing to wait for."""

    def wait_stream(self, other: object) -> None:
        """Already ordered."""

    def record_event(self) -> _Stream:
        return self  # an "event" whose synchronize() returns at once

    def synchronize(self) -> None:
        """Already done."""


_THE_STREAM = _Stream()


class _CpuCuda:
    """Stand-in for `torch.cuda`: the "current device" is the CPU, its generator is the CPU generator, and every
    stream is the one in-order host stream."""

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def synchronize(device: Any = None) -> None:
        """CPU ops are synchronous: nothing to wait for."""

    @staticmethod
    def Stream(*args: Any, **kwargs: Any) -> _Stream:
        return _THE_STREAM

    @staticmethod
    def current_stream(device: Any = None) -> _Stream:
        return _THE_STREAM

    @staticmethod
    def stream(stream: Any) -> contextlib.nullcontext:
        return contextlib.nullcontext()

    # The CPU generator plays the role of the per-device CUDA generator.
    manual_seed = staticmethod(torch.manual_seed)
    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cuda, name)


def _on_cpu(factory: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a tensor factory so a `device="cuda"` (or a cuda torch.device) argument lands on the CPU."""

    def make(*args: Any, **kwargs: Any) -> torch.Tensor:
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        return factory(*args, **kwargs)

    return make


class _CpuTorch:
    """Stand-in for the name `torch` inside one megatron module (see the module docstring)."""

    cuda = _CpuCuda()
    tensor = staticmethod(_on_cpu(torch.tensor))
    zeros = staticmethod(_on_cpu(torch.zeros))
    ones = staticmethod(_on_cpu(torch.ones))
    empty = staticmethod(_on_cpu(torch.empty))
    full = staticmethod(_on_cpu(torch.full))
    arange = staticmethod(_on_cpu(torch.arange))

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _redirect_cuda(module_name: str) -> None:
    """Replace the global `torch` of one megatron module by `_CpuTorch`."""
    module = importlib.import_module(module_name)
    module.torch = _CpuTorch()


def _patch_rng_tracker() -> None:
    """RNG tracker: `model_parallel_cuda_manual_seed`, `CudaRNGStatesTracker.add/fork` and activation
    recompute save/restore the CUDA generator; on CPU they save/restore the CPU generator instead."""
    from megatron.core.tensor_parallel import random

    _redirect_cuda(random.__name__)  # torch.cuda.manual_seed / get_rng_state in seed() and add()

    def get_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
        return torch.get_rng_state()  # already a copy

    def set_state(new_state: torch.Tensor, device: int = -1, graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    random._get_cuda_rng_state = get_state
    random._set_cuda_rng_state = set_state


def _patch_rotary_device() -> None:
    """Rotary embedding: `get_emb` moves `inv_freq` to `torch.cuda.current_device()` on first use."""
    _redirect_cuda("megatron.core.models.common.embeddings.rotary_pos_embedding")


def _patch_context_parallel_rope() -> None:
    """Context parallelism: `get_pos_emb_on_this_cp_rank` builds its chunk index in pinned host memory and
    moves it with `.cuda()`; the CPU version indexes on the embedding's own device (same chunks: this rank's
    r and 2·CP-1-r of 2·CP)."""
    from megatron.core.models.common.embeddings import rope_utils, rotary_pos_embedding

    def on_this_cp_rank(pos_emb: torch.Tensor, seq_dim: int, cp_group: Any) -> torch.Tensor:
        size, rank = cp_group.size(), cp_group.rank()
        chunks = pos_emb.view(*pos_emb.shape[:seq_dim], 2 * size, -1, *pos_emb.shape[seq_dim + 1 :])
        mine = chunks.index_select(seq_dim, torch.tensor([rank, 2 * size - rank - 1], device=pos_emb.device))
        return mine.view(*pos_emb.shape[:seq_dim], -1, *pos_emb.shape[seq_dim + 1 :])

    rope_utils.get_pos_emb_on_this_cp_rank = on_this_cp_rank
    rotary_pos_embedding.get_pos_emb_on_this_cp_rank = on_this_cp_rank  # imported there by name


def _patch_causal_mask() -> None:
    """Attention: the default causal mask (used when no mask is passed) is built with `device="cuda"`."""
    _redirect_cuda("megatron.core.transformer.utils")


def _patch_global_memory_buffer() -> None:
    """Core attention borrows its score buffer from `GlobalMemoryBuffer`, allocated on the current CUDA device."""
    _redirect_cuda("megatron.core.utils")


def _patch_schedule_token_counter() -> None:
    """Pipeline schedules: `total_num_tokens` is a `device="cuda"` tensor; p2p calls `torch.cuda.synchronize`."""
    _redirect_cuda("megatron.core.pipeline_parallel.schedules")
    _redirect_cuda("megatron.core.pipeline_parallel.p2p_communication")


def _patch_tp_buffers() -> None:
    """Tensor-parallel layers and mappings allocate gather / grad buffers on `torch.cuda.current_device()`."""
    _redirect_cuda("megatron.core.tensor_parallel.layers")
    _redirect_cuda("megatron.core.tensor_parallel.mappings")


def _patch_ddp_buffers() -> None:
    """Megatron DDP allocates its contiguous param/grad buffers on `torch.cuda.current_device()`."""
    _redirect_cuda("megatron.core.distributed.param_and_grad_buffer")
    _redirect_cuda("megatron.core.distributed.distributed_data_parallel")


def _patch_optimizer() -> None:
    """Optimizer and grad clipping: scalar buffers (found_inf, norms, overflow flags) live on "cuda", and
    `clip_grad_by_total_norm_fp32` asserts every grad is a `torch.cuda.FloatTensor`; the CPU version keeps
    the fp32 check, minus the device."""
    from megatron.core.optimizer import clip_grads, optimizer

    for name in (clip_grads.__name__, optimizer.__name__, "megatron.core.optimizer.distrib_optimizer"):
        _redirect_cuda(name)

    def clip_grad_by_total_norm_fp32(
        parameters: list[torch.Tensor], max_norm: float, total_norm: float, use_decoupled_grad: bool = False
    ) -> None:
        attr = "decoupled_grad" if use_decoupled_grad else "grad"
        grads = [getattr(p, attr).detach() for p in parameters if getattr(p, attr, None) is not None]
        assert all(g.dtype == torch.float32 for g in grads), "grad clipping expects fp32 (main) grads"
        clip_coeff = max_norm / (total_norm + 1.0e-6)
        if clip_coeff < 1.0:
            torch._foreach_mul_(grads, clip_coeff)

    clip_grads.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32
    optimizer.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32  # imported there by name


def _patch_optimizer_type_checks() -> None:
    """Optimizer construction: the bf16 and distributed optimizers sort parameters by `param.type()` against
    'torch.cuda.{Float,Half,BFloat16}Tensor' and reject anything else. While those constructors run, a CPU
    tensor's `type()` reports the matching CUDA name; nothing else reads it and the original is restored."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params

    def reporting_cuda_types(init: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(init)
        def wrapped(*args: Any, **kwargs: Any) -> None:
            original = torch.Tensor.type

            def cuda_type(tensor: torch.Tensor, *type_args: Any, **type_kwargs: Any) -> Any:
                if type_args or type_kwargs or tensor.device.type != "cpu":
                    return original(tensor, *type_args, **type_kwargs)  # a cast, or a real device: untouched
                return original(tensor).replace("torch.", "torch.cuda.", 1)

            torch.Tensor.type = cuda_type
            try:
                init(*args, **kwargs)
            finally:
                torch.Tensor.type = original

        return wrapped

    for cls in (DistributedOptimizer, Float16OptimizerWithFloat16Params):
        cls.__init__ = reporting_cuda_types(cls.__init__)


def _patch_moe() -> None:
    """MoE: the router moves its weight to `torch.cuda.current_device()` on every call and keeps aux-loss
    scalars there; SequentialMLP / experts and the MoE metrics tracker allocate on "cuda" too; the all-to-all
    token dispatcher copies its split sizes to the host on a side CUDA stream and waits on its event."""
    for name in ("router", "experts", "moe_utils", "token_dispatcher"):
        _redirect_cuda(f"megatron.core.transformer.moe.{name}")
    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    # The dispatcher asks for its split sizes "on the host, as numpy"; megatron converts only CUDA tensors, so
    # on CPU the sizes would stay tensors, which all_to_all_single refuses as split sizes.
    def to_host(tensor: Any, as_numpy: bool = False, record_stream: bool = False) -> Any:
        return tensor.numpy() if as_numpy and torch.is_tensor(tensor) else tensor

    moe_utils.maybe_move_tensor_to_cpu = to_host
    token_dispatcher.maybe_move_tensor_to_cpu = to_host  # imported there by name


def _patch_tied_embedding_sync() -> None:
    """Pipeline parallel with tied embeddings: the last stage's copy of the embedding is synchronised with
    `weight.data = weight.data.cuda()` then an all-reduce. While that method runs, `Tensor.cuda` on a CPU
    tensor returns the tensor itself; the original method is restored afterwards."""
    from megatron.core.models.common.language_module.language_module import LanguageModule

    setup = LanguageModule.setup_embeddings_and_output_layer

    @functools.wraps(setup)
    def setup_on_cpu(self: Any) -> None:
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda tensor, *args, **kwargs: tensor
        try:
            setup(self)
        finally:
            torch.Tensor.cuda = original

    LanguageModule.setup_embeddings_and_output_layer = setup_on_cpu


def _patch_dist_checkpointing() -> None:
    """torch_dist checkpoints: the async filesystem writer calls `torch.cuda.synchronize()` before copying
    tensors to the host, and the torch strategy builds its exchange buffers on the current CUDA device."""
    for name in ("filesystem_async", "torch", "state_dict_saver"):
        _redirect_cuda(f"megatron.core.dist_checkpointing.strategies.{name}")


def _patch_distributed_optimizer_gather() -> None:
    """torch_dist checkpoints of the distributed optimizer ("fully_reshardable" format): gathering the optimizer
    shards over the data-parallel group moves each send buffer to the GPU with `tensor.cuda()` (NCCL needs it).
    While `get_parameter_state_dp_zero` runs, `Tensor.cuda` on a CPU tensor returns the tensor itself (gloo
    gathers host tensors); the original method is restored afterwards."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    gather = DistributedOptimizer.get_parameter_state_dp_zero

    @functools.wraps(gather)
    def gather_on_cpu(self: Any, *args: Any, **kwargs: Any) -> Any:
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda tensor, *cuda_args, **cuda_kwargs: tensor
        try:
            return gather(self, *args, **kwargs)
        finally:
            torch.Tensor.cuda = original

    DistributedOptimizer.get_parameter_state_dp_zero = gather_on_cpu


PATCHES: tuple[Callable[[], None], ...] = (
    _patch_rng_tracker,
    _patch_rotary_device,
    _patch_context_parallel_rope,
    _patch_causal_mask,
    _patch_global_memory_buffer,
    _patch_schedule_token_counter,
    _patch_tp_buffers,
    _patch_ddp_buffers,
    _patch_optimizer,
    _patch_optimizer_type_checks,
    _patch_moe,
    _patch_tied_embedding_sync,
    _patch_dist_checkpointing,
    _patch_distributed_optimizer_gather,
)


def apply_cpu_patches() -> bool:
    """Apply every CPU patch once; returns True when patches are (now) in place, False on a CUDA machine."""
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if not _APPLIED:
        for patch in PATCHES:
            patch()
        _APPLIED = True
    return True
