"""LoRA adapters on the Megatron model's tensor-parallel linear layers: y = W x + alpha/r · B (A x).

One adapter (A [r, in], B [out, r]) per HF projection, so adapters round-trip through peft and SGLang unchanged;
Megatron's fused layers carry several: linear_qkv the q/k/v adapters (their outputs interleaved into its
per-query-group layout), linear_fc1 the gate/up ones. Sharding follows the base layer, so no adapter needs a
communication the base layer does not already imply:

    column-parallel base (linear_qkv, linear_fc1; weight [out/T, in])   A whole on every rank, B [out/T, r]
        the r-wide A x is marked for an all-reduce of its gradient in backward (copy_to_tensor_model_parallel_region;
        with sequence parallelism it is gathered over the sequence instead, and A's gradient summed over TP)
    row-parallel base (linear_proj, linear_fc2; weight [out, in/T])     A [r, in/T], B whole on every rank
        the r-wide partial A x is all-reduced in forward (with sequence parallelism: reduce-scattered over the
        sequence, and B's gradient summed over TP)

The adapters of one layer live beside it as `<linear>_lora` (e.g. `self_attention.linear_qkv_lora.q_proj.lora_A`), a
module with its own `sharded_state_dict`, so torch_dist checkpoints store them by global shape and reshard across
TP/PP like the base weights. A forward hook on the base layer adds the adapter's output. The base weights are frozen
before DDP and the optimizer are built, so only adapters get gradients and optimizer state.

A's initial values come from a generator seeded by (seed, global layer, projection) over the whole matrix, then cut
to the rank's shard: the same model at any layout. B starts at zero (peft's default), so training starts from the
base model exactly.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_sequence_parallel_region,
    reduce_from_tensor_model_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
)
from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

from rlpipe.train.spec import LoraSpec
from rlpipe.train.weights import Dims

ADAPTER_SUFFIX = "_lora"  # <linear>_lora: the module holding a linear layer's adapters


@dataclass(frozen=True)
class Site:
    """One Megatron linear layer of a transformer layer and the HF projections it fuses, in its output order."""

    parent: str  # the TransformerLayer attribute holding it: self_attention | mlp
    linear: str
    row_parallel: bool
    projections: tuple[str, ...]
    hf_parent: str  # where HF keeps the projections: self_attn | mlp


SITES = (
    Site("self_attention", "linear_qkv", False, ("q_proj", "k_proj", "v_proj"), "self_attn"),
    Site("self_attention", "linear_proj", True, ("o_proj",), "self_attn"),
    Site("mlp", "linear_fc1", False, ("gate_proj", "up_proj"), "mlp"),
    Site("mlp", "linear_fc2", True, ("down_proj",), "mlp"),
)


def is_adapter(name: str) -> bool:
    """Whether a parameter (or state) name is an adapter's."""
    return f"{ADAPTER_SUFFIX}." in name


def peft_name(layer: int, site: Site, projection: str, matrix: str) -> str:
    """peft's on-disk name of one adapter matrix (A or B) of global layer `layer`."""
    return f"base_model.model.model.layers.{layer}.{site.hf_parent}.{projection}.lora_{matrix}.weight"


class LoraPair(torch.nn.Module):
    """One projection's adapter: this rank's shards of A and B."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.lora_A = torch.nn.Parameter(a)
        self.lora_B = torch.nn.Parameter(b)


class SiteAdapters(torch.nn.Module):
    """The adapters of one linear layer (a `Site` of one transformer layer): its forward hook and merged delta."""

    def __init__(
        self, site: Site, spec: LoraSpec, shapes: dict[str, tuple[int, int]], layer: int, seed: int, qkv: Dims,
        dtype: torch.dtype, sequence_parallel: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.site, self.spec, self.layer, self.qkv = site, spec, layer, qkv
        self.sequence_parallel = sequence_parallel
        self.tp_rank = parallel_state.get_tensor_model_parallel_rank()
        self.tp_size = parallel_state.get_tensor_model_parallel_world_size()
        self.out_sizes = {p: out for p, (out, _) in shapes.items()}  # whole, per projection
        self.enabled = True
        self.pairs = torch.nn.ModuleDict()
        for projection in site.projections:
            if projection not in spec.projections:
                continue
            out, inp = shapes[projection]
            a = _initial_a(spec.rank, inp, seed, layer, projection)
            b = torch.zeros(out, spec.rank)
            pair = LoraPair(*self.shard(a, b))
            pair.to(dtype)
            self._mark(pair)
            self.pairs[projection] = pair

    # ---- layout
    def shard(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (A, B) of whole ones: column-parallel sites split B's rows, row-parallel sites A's columns."""
        if self.site.row_parallel:
            return a.chunk(self.tp_size, dim=1)[self.tp_rank].clone(), b.clone()
        return a.clone(), b.chunk(self.tp_size, dim=0)[self.tp_rank].clone()

    def _mark(self, pair: LoraPair) -> None:
        """Tell Megatron how each matrix is split (grad-norm clipping counts a TP-replicated one once) and which
        gradients are partial sums over the TP group under sequence parallelism (finalize_model_grads sums them)."""
        sharded, replicated = (pair.lora_A, pair.lora_B) if self.site.row_parallel else (pair.lora_B, pair.lora_A)
        tensor_parallel.set_tensor_model_parallel_attributes(sharded, True, 1 if self.site.row_parallel else 0, 1)
        replicated.sequence_parallel = self.sequence_parallel

    def _fuse(self, pieces: dict[str, torch.Tensor], dim: int, like: torch.Tensor) -> torch.Tensor:
        """Per-projection local outputs (along `dim`) in the base layer's local layout; untargeted ones are zeros."""
        parts = []
        for projection in self.site.projections:
            size = self.out_sizes[projection] // (1 if self.site.row_parallel else self.tp_size)
            piece = pieces.get(projection)
            if piece is None:
                shape = list(like.shape)
                shape[dim] = size
                piece = like.new_zeros(shape)
            parts.append(piece.movedim(dim, -1))
        if self.site.linear == "linear_qkv":  # per query group: [q heads | k | v]
            groups = self.qkv.groups // self.tp_size
            parts = [p.unflatten(-1, (groups, -1)) for p in parts]
            return torch.cat(parts, dim=-1).flatten(-2).movedim(-1, dim)
        return torch.cat(parts, dim=-1).movedim(-1, dim)

    # ---- forward
    def hook(self, _module: torch.nn.Module, args: tuple[Any, ...], output: tuple[torch.Tensor, Any]) -> Any:
        """Forward hook of the base layer: add alpha/r · B (A x) to its output."""
        if not self.enabled or not self.pairs:
            return output
        out, bias = output
        return out + self.delta_output(args[0]), bias

    def delta_output(self, x: torch.Tensor) -> torch.Tensor:
        """alpha/r · B (A x) in the base layer's (local) output layout; `x` is the base layer's input [s, b, in]."""
        x = torch.nn.functional.dropout(x, self.spec.dropout, self.training) if self.spec.dropout else x
        pieces = {}
        for projection, pair in self.pairs.items():
            h = x @ pair.lora_A.t()  # [s, b, r]: whole (column) or this rank's partial sum (row)
            if self.site.row_parallel:
                h = (reduce_scatter_to_sequence_parallel_region if self.sequence_parallel
                     else reduce_from_tensor_model_parallel_region)(h)  # fmt: skip
            else:
                h = (gather_from_sequence_parallel_region if self.sequence_parallel
                     else copy_to_tensor_model_parallel_region)(h)  # fmt: skip
            pieces[projection] = h @ pair.lora_B.t()
        return self._fuse(pieces, -1, next(iter(pieces.values()))) * self.spec.scaling

    @torch.no_grad()
    def delta_weight(self, like: torch.Tensor) -> torch.Tensor:
        """alpha/r · B A in the layout of the base layer's local weight `like`: what merging adds to it."""
        pieces = {p: (pair.lora_B.float() @ pair.lora_A.float()) for p, pair in self.pairs.items()}
        if not pieces:
            return torch.zeros_like(like)
        return (self._fuse(pieces, 0, next(iter(pieces.values()))) * self.spec.scaling).to(like.dtype)

    # ---- whole matrices (peft)
    def whole(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(peft name, whole matrix) of every adapter, gathered over the TP group (every rank of it calls this)."""
        group = parallel_state.get_tensor_model_parallel_group()
        for projection, pair in self.pairs.items():
            for matrix, local, dim in (("A", pair.lora_A, 1), ("B", pair.lora_B, 0)):
                split = (matrix == "A") == self.site.row_parallel
                if split and self.tp_size > 1:
                    parts = [torch.empty_like(local) for _ in range(self.tp_size)]
                    torch.distributed.all_gather(parts, local.detach().contiguous(), group=group)
                    tensor = torch.cat(parts, dim=dim)
                else:
                    tensor = local.detach().clone()
                yield peft_name(self.layer, self.site, projection, matrix), tensor.cpu()

    @torch.no_grad()
    def load_whole(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set every adapter from whole matrices by peft name (a peft adapter folder's)."""
        for projection, pair in self.pairs.items():
            names = [peft_name(self.layer, self.site, projection, m) for m in "AB"]
            missing = [n for n in names if n not in tensors]
            if missing:
                raise KeyError(f"the adapter has no {missing[0]} (trained on other projections?)")
            a, b = self.shard(tensors[names[0]], tensors[names[1]])
            for param, value in ((pair.lora_A, a), (pair.lora_B, b)):
                if param.shape != value.shape:
                    where = names[0].rsplit(".lora_", 1)[0]
                    raise ValueError(
                        f"{where}: adapter shape {tuple(value.shape)} does not fit this model's "
                        f"{tuple(param.shape)} (another base model or rank?)"
                    )
                param.copy_(value)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        """torch_dist entries by whole shape: B split on rows (column sites) or A on columns (row sites)."""
        state = self.state_dict(prefix="", keep_vars=True)
        split = "lora_A" if self.site.row_parallel else "lora_B"
        axes = {name: (1 if self.site.row_parallel else 0) for name in state if name.endswith(split)}
        return make_sharded_tensors_for_checkpoint(state, prefix, axes, sharded_offsets)


def _initial_a(rank: int, fan_in: int, seed: int, layer: int, projection: str) -> torch.Tensor:
    """peft's A initialisation (kaiming-uniform with a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) from a generator seeded
    by (seed, layer, projection), whole: every layout cuts the same matrix."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{layer}/{projection}".encode()))
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(rank, fan_in, generator=generator) * 2 - 1) * bound


def _shapes(hf_config: Any) -> dict[str, tuple[int, int]]:
    """(out, in) of every HF projection, whole."""
    dims = Dims.of(hf_config)
    h, f, d = hf_config.hidden_size, hf_config.intermediate_size, dims.head_dim
    return {
        "q_proj": (dims.heads * d, h), "k_proj": (dims.groups * d, h), "v_proj": (dims.groups * d, h),
        "o_proj": (h, dims.heads * d), "gate_proj": (f, h), "up_proj": (f, h), "down_proj": (h, f),
    }  # fmt: skip


def add_adapters(
    module: torch.nn.Module, spec: LoraSpec, hf_config: Any, layer_offset: int, seed: int, sequence_parallel: bool
) -> list[SiteAdapters]:
    """Freeze `module` (this stage's GPTModel) and give its targeted linear layers adapters; returns them all.
    Call before DDP and the optimizer are built."""
    for param in module.parameters():
        param.requires_grad_(False)
    shapes, dims = _shapes(hf_config), Dims.of(hf_config)
    dtype = next(module.parameters()).dtype
    adapters = []
    for i, layer in enumerate(module.decoder.layers):
        for site in SITES:
            if not any(p in spec.projections for p in site.projections):
                continue
            parent = getattr(layer, site.parent)
            linear = getattr(parent, site.linear, None)
            if linear is None:  # an MoE layer's mlp has experts, not linear_fc1/2 (refused at config time)
                raise ValueError(f"layer {layer_offset + i} has no {site.parent}.{site.linear} for LoRA on "
                                 f"{','.join(site.projections)}")  # fmt: skip
            adapter = SiteAdapters(site, spec, shapes, layer_offset + i, seed, dims, dtype, sequence_parallel)
            device = linear.weight.device
            adapter.to(device)
            parent.add_module(site.linear + ADAPTER_SUFFIX, adapter)
            linear.register_forward_hook(adapter.hook)
            adapters.append(adapter)
    return adapters


@contextmanager
def disabled(adapters: list[SiteAdapters]) -> Iterator[None]:
    """The base model alone while inside (KL reference and teacher log-probs: the base is what LoRA froze)."""
    for adapter in adapters:
        adapter.enabled = False
    try:
        yield
    finally:
        for adapter in adapters:
            adapter.enabled = True
