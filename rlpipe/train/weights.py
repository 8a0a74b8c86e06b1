"""HF <-> Megatron (local layer spec) weight conversion for every family in `families.py`.

Megatron's layout, per tensor-parallel rank r of T (names as in `GPTModel` built from the local spec):

    embedding.word_embeddings.weight       [P/T, h]   rows r*P/T.. of embed_tokens padded to P (P % T == 0)
    decoder.layers.{i}.input_layernorm.weight          replicated
    decoder.layers.{i}.self_attention.linear_qkv.weight [G/T*(q+2)*d, h]  per query group: [q heads | k | v]
    decoder.layers.{i}.self_attention.linear_qkv.bias   same interleave (Qwen2)
    decoder.layers.{i}.self_attention.linear_proj.weight [h, H*d/T]   o_proj, split on the input dim
    decoder.layers.{i}.pre_mlp_layernorm.weight         replicated (HF post_attention_layernorm)
    decoder.layers.{i}.mlp.linear_fc1.weight  [2F/T, h]  cat(gate rows of rank r, up rows of rank r)
    decoder.layers.{i}.mlp.linear_fc2.weight  [h, F/T]   down_proj, split on the input dim
    decoder.final_layernorm.weight                      replicated (HF model.norm)
    output_layer.weight                     [P/T, h]    lm_head padded to P; absent when embeddings are tied

Family additions (all replicated across TP except the experts):

    decoder.layers.{i}.self_attention.{q,k}_layernorm.weight  [d]   Qwen3 q_norm / k_norm
    decoder.layers.{i}.self_attn_bda.post_layernorm.weight    [h]   GLM4 post_self_attn_layernorm
    decoder.layers.{i}.mlp_bda.post_layernorm.weight          [h]   GLM4 post_mlp_layernorm
    decoder.layers.{i}.mlp.linear_fc1.weight  from GLM4's fused gate_up_proj = cat(gate, up), split per rank
    decoder.layers.{i}.mlp.router.weight                      [E, h] Qwen3-MoE mlp.gate
    decoder.layers.{i}.mlp.experts.local_experts.{j}.linear_fc{1,2}.weight   expert j's gate|up / down,
        split like the dense MLP over the expert-tensor-parallel (ETP) ranks instead of the TP ranks

Expert numbers here are global (0..E-1); under expert parallelism an EP rank holds E/EP of them and calls them
0..E/EP-1 (`stages.to_global` shifts them, as it shifts layer numbers).

H heads, G query groups (kv heads), q = H/G, d head dim, F intermediate size, V vocab, P padded vocab.
Padded vocab rows are zeros; the trainer masks their logits, and export drops them. This module is torch
only (no Megatron import) so conversions are testable without process groups. Names carry global layer
numbers; the trainer maps them to a pipeline stage's local numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open

from rlpipe.plan.params import padded_vocab_size
from rlpipe.train.families import Family, family_of

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


class HFState(Mapping[str, torch.Tensor]):
    """Every tensor of an HF checkpoint folder's *.safetensors files, by HF name, read when looked up.

    Each lookup maps the tensor from its file (safetensors; only the pages it touches become resident, and they go
    when the tensor does), so a conversion that drops each input once used holds a few tensors, not the model.
    """

    def __init__(self, folder: Path) -> None:
        self._files: dict[str, Path] = {}
        for file in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(file, framework="pt") as f:
                self._files.update(dict.fromkeys(f.keys(), file))
        if not self._files:
            raise FileNotFoundError(f"no *.safetensors weights in {folder}")

    def __getitem__(self, name: str) -> torch.Tensor:
        with safe_open(self._files[name], framework="pt") as f:
            return f.get_tensor(name)

    def __contains__(self, name: object) -> bool:
        return name in self._files  # without reading the tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def read_hf_state(folder: Path) -> HFState:
    """An HF checkpoint folder's tensors by HF name, each read when looked up (`HFState`)."""
    return HFState(folder)


@dataclass(frozen=True)
class Dims:
    heads: int
    groups: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def of(cls, hf_config: Any) -> Dims:
        heads = hf_config.num_attention_heads
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
        return cls(
            heads=heads,
            groups=hf_config.num_key_value_heads,
            head_dim=head_dim,
            vocab=hf_config.vocab_size,
            tied=bool(hf_config.tie_word_embeddings),
        )


def _qkv_shard(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dims: Dims, rank: int, size: int, out: torch.Tensor | None
) -> torch.Tensor:
    """Interleave HF q/k/v (weights [out, h] or biases [out]) into Megatron's per-group layout: rank `rank` of
    `size`'s G/size query groups, each [q heads | k | v], as [G/size*(q+2)*d, ...] (written into `out` if given)."""
    g = dims.groups
    rest = q.shape[1:]
    parts = [x.reshape(g, -1, *rest).chunk(size, dim=0)[rank] for x in (q, k, v)]  # [G/size, q*d | d | d, ...]
    if out is None:
        return torch.cat(parts, dim=1).flatten(0, 1)
    torch.cat(parts, dim=1, out=out.view(g // size, -1, *rest))
    return out


def _qkv_split(full: torch.Tensor, dims: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `_qkv_shard` over all groups, applied to the gathered [G*(q+2)*d, ...] tensor."""
    g, d = dims.groups, dims.head_dim
    rest = full.shape[1:]
    grouped = full.reshape(g, -1, *rest)  # [G, (q+2)d, ...]
    q, k, v = torch.split(grouped, [grouped.shape[1] - 2 * d, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def _vocab_shard(
    weight: torch.Tensor, padded: int, tp_rank: int, tp_size: int, out: torch.Tensor | None
) -> torch.Tensor:
    """Rows tp_rank*P/T.. of `weight` padded with zero rows to P, built at the shard's size (or in `out`)."""
    rows = padded // tp_size
    shard = torch.empty(rows, *weight.shape[1:], dtype=weight.dtype) if out is None else out
    real = weight[tp_rank * rows : (tp_rank + 1) * rows]  # shorter (or empty) where the padding starts
    shard[: real.shape[0]] = real
    shard[real.shape[0] :] = 0
    return shard


def _shard(t: torch.Tensor, dim: int, rank: int, size: int, out: torch.Tensor | None) -> torch.Tensor:
    """Rank `rank` of `size`'s part of `t` along `dim`, written into `out` if given; else `t` itself when whole, or
    a copy (a view would keep all of `t` alive for as long as the shard lives)."""
    part = t.chunk(size, dim=dim)[rank]
    if out is not None:
        return out.copy_(part)
    return t if size == 1 else part.clone()


def _mlp_to_megatron(
    hf_state_dict: Mapping[str, torch.Tensor],
    hf: str,
    mg: str,
    fused_gate_up: bool,
    rank: int,
    size: int,
    into: Mapping[str, torch.Tensor],
) -> Iterator[tuple[str, torch.Tensor]]:
    """One SwiGLU MLP (dense, or one expert) at HF prefix `hf` -> Megatron linear_fc1 / linear_fc2 at `mg`, split
    over `size` ranks (see `hf_to_megatron` for `into`)."""
    if fused_gate_up:
        gate, up = hf_state_dict[hf + "gate_up_proj.weight"].chunk(2, dim=0)
    else:
        gate, up = hf_state_dict[hf + "gate_proj.weight"], hf_state_dict[hf + "up_proj.weight"]
    parts = [gate.chunk(size, dim=0)[rank], up.chunk(size, dim=0)[rank]]  # per rank: [gate | up]
    del gate, up  # a lazily read source goes as soon as it is used
    out = into.get(mg + "linear_fc1.weight")
    fc1 = torch.cat(parts, dim=0) if out is None else torch.cat(parts, dim=0, out=out)
    del parts
    yield mg + "linear_fc1.weight", fc1
    down = hf_state_dict[hf + "down_proj.weight"]
    yield mg + "linear_fc2.weight", _shard(down, 1, rank, size, into.get(mg + "linear_fc2.weight"))


def hf_to_megatron(
    hf_state_dict: Mapping[str, torch.Tensor],
    hf_config: Any,
    tp_rank: int,
    tp_size: int,
    vocab_divisible_by: int = 128,
    etp: tuple[int, int] | None = None,
    into: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """This TP rank's Megatron parameters (whole model, global layer and expert numbers, no `module.` prefix) from
    HF's, one (name, tensor) at a time; experts are split over `etp` = (expert-tensor-parallel rank, size), by
    default the TP ones.

    Streamed so the caller holds one converted tensor at a time, and each source tensor is looked up when needed
    and dropped once used (with `read_hf_state`'s lazy mapping, the checkpoint is never resident whole). A tensor
    that needs no conversion (a norm; any whole weight at TP=1) is yielded as the mapping gave it, not copied.

    `into`: host tensors by Megatron name (the parameters being loaded) that a converted tensor of that name is
    written into, and yielded as: each byte is then written once, straight from the source, with no tensor
    allocated in between (a conversion on the host runs at copy speed).
    """
    into = into or {}
    dims = Dims.of(hf_config)
    family = family_of(hf_config)
    padded = padded_vocab_size(dims.vocab, tp_size, vocab_divisible_by)
    if dims.groups % tp_size:
        raise ValueError(f"num_key_value_heads={dims.groups} is not divisible by tensor_parallel={tp_size}")
    etp_rank, etp_size = etp or (tp_rank, tp_size)

    def whole(name: str, t: torch.Tensor) -> tuple[str, torch.Tensor]:
        """A tensor every rank holds as it is: passed through, or written into its `into` tensor."""
        return name, into[name].copy_(t) if name in into else t

    vocab = [("embedding.word_embeddings.weight", "model.embed_tokens.weight")]
    if not dims.tied:
        vocab.append(("output_layer.weight", "lm_head.weight"))
    for name, hf_name in vocab:
        yield name, _vocab_shard(hf_state_dict[hf_name], padded, tp_rank, tp_size, into.get(name))
    yield whole("decoder.final_layernorm.weight", hf_state_dict["model.norm.weight"])
    for i in range(hf_config.num_hidden_layers):
        hf, mg = f"model.layers.{i}.", f"decoder.layers.{i}."
        attn = hf + "self_attn."
        for hf_name, mg_name in _replicated_layer_names(family):
            yield whole(mg + mg_name, hf_state_dict[hf + hf_name])
        for kind in ("weight", "bias"):
            name = mg + f"self_attention.linear_qkv.{kind}"
            if attn + f"q_proj.{kind}" in hf_state_dict:
                qkv = [hf_state_dict[attn + f"{p}_proj.{kind}"] for p in "qkv"]
                yield name, _qkv_shard(*qkv, dims, tp_rank, tp_size, into.get(name))
                del qkv
        name = mg + "self_attention.linear_proj.weight"
        yield name, _shard(hf_state_dict[attn + "o_proj.weight"], 1, tp_rank, tp_size, into.get(name))
        if family.moe:
            yield whole(mg + "mlp.router.weight", hf_state_dict[hf + "mlp.gate.weight"])
            for j in range(hf_config.num_experts):
                expert = f"mlp.experts.local_experts.{j}."
                yield from _mlp_to_megatron(
                    hf_state_dict, hf + f"mlp.experts.{j}.", mg + expert, False, etp_rank, etp_size, into
                )
        else:
            yield from _mlp_to_megatron(
                hf_state_dict, hf + "mlp.", mg + "mlp.", family.fused_gate_up, tp_rank, tp_size, into
            )


def _replicated_layer_names(family: Family) -> list[tuple[str, str]]:
    """(HF, Megatron) names, relative to the layer, of the norms every TP rank holds whole."""
    names = [
        ("input_layernorm.weight", "input_layernorm.weight"),
        ("post_attention_layernorm.weight", "pre_mlp_layernorm.weight"),
    ]
    if family.qk_norm:
        names += [
            ("self_attn.q_norm.weight", "self_attention.q_layernorm.weight"),
            ("self_attn.k_norm.weight", "self_attention.k_layernorm.weight"),
        ]
    if family.post_norms:  # see layer_spec.PostNormBiasDropoutAdd
        names += [
            ("post_self_attn_layernorm.weight", "self_attn_bda.post_layernorm.weight"),
            ("post_mlp_layernorm.weight", "mlp_bda.post_layernorm.weight"),
        ]
    return names


def is_tp_replicated(megatron_name: str) -> bool:
    """Norm weights and the MoE router are whole on every TP rank; every other parameter is a TP shard."""
    return "layernorm" in megatron_name or megatron_name.endswith("mlp.router.weight")


def is_expert(name: str) -> bool:
    """An expert's weight, by Megatron or HF name: split over the expert-tensor-parallel group, and held by one
    expert-parallel rank."""
    return ".mlp.experts." in name


def _cat(shards: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """The shards joined along `dim`; a single shard is returned as it is, not copied."""
    return shards[0] if len(shards) == 1 else torch.cat(shards, dim=dim)


def _mlp_to_hf(hf: str, rest: str, shards: list[torch.Tensor], fused_gate_up: bool) -> list[tuple[str, torch.Tensor]]:
    """HF tensors of one MLP (dense or an expert) from linear_fc1 / linear_fc2 shards; `rest` is fc1 or fc2."""
    if rest == "linear_fc2.weight":
        return [(hf + "down_proj.weight", _cat(shards, dim=1))]
    if fused_gate_up and len(shards) == 1:  # one rank's [gate | up] is HF's gate_up_proj already
        return [(hf + "gate_up_proj.weight", shards[0])]
    halves = [s.chunk(2, dim=0) for s in shards]  # per rank: (gate rows, up rows)
    gate = _cat([h[0] for h in halves])
    up = _cat([h[1] for h in halves])
    if fused_gate_up:
        return [(hf + "gate_up_proj.weight", torch.cat([gate, up]))]
    return [(hf + "gate_proj.weight", gate), (hf + "up_proj.weight", up)]


_EXPERT = re.compile(r"mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12]\.weight)")


def shards_to_hf(megatron_name: str, shards: list[torch.Tensor], hf_config: Any) -> list[tuple[str, torch.Tensor]]:
    """HF (name, full tensor) pairs from one Megatron parameter's TP shards (global layer number), rank order. The
    results may be views of the shards (a single shard is not copied again)."""
    dims = Dims.of(hf_config)
    family = family_of(hf_config)
    if megatron_name == "embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", _cat(shards)[: dims.vocab])]
    if megatron_name == "output_layer.weight":
        return [("lm_head.weight", _cat(shards)[: dims.vocab])]
    if megatron_name == "decoder.final_layernorm.weight":
        return [("model.norm.weight", shards[0])]
    match = _LAYER.fullmatch(megatron_name)
    if match is None:
        raise KeyError(f"no HF name for Megatron parameter {megatron_name!r}")
    hf, rest = f"model.layers.{match.group(1)}.", match.group(2)
    replicated = {mg: hf_name for hf_name, mg in _replicated_layer_names(family)}
    if rest in replicated:
        return [(hf + replicated[rest], shards[0])]
    if rest.startswith("self_attention.linear_qkv."):
        kind = rest.rsplit(".", 1)[1]
        q, k, v = _qkv_split(_cat(shards), dims)
        return [(hf + f"self_attn.{p}_proj.{kind}", t) for p, t in zip("qkv", (q, k, v), strict=True)]
    if rest == "self_attention.linear_proj.weight":
        return [(hf + "self_attn.o_proj.weight", _cat(shards, dim=1))]
    if rest in ("mlp.linear_fc1.weight", "mlp.linear_fc2.weight"):
        return _mlp_to_hf(hf + "mlp.", rest.removeprefix("mlp."), shards, family.fused_gate_up)
    if rest == "mlp.router.weight":
        return [(hf + "mlp.gate.weight", shards[0])]
    expert = _EXPERT.fullmatch(rest)
    if expert is not None:
        return _mlp_to_hf(hf + f"mlp.experts.{expert.group(1)}.", expert.group(2), shards, False)
    raise KeyError(f"no HF name for Megatron parameter {megatron_name!r}")


def megatron_to_hf(
    named_params: Iterable[tuple[str, torch.Tensor]],
    hf_config: Any,
    tp_group: dist.ProcessGroup | None = None,
    etp_group: dist.ProcessGroup | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Gather each parameter's shards (all_gather over tp_group, or etp_group for experts; default: tp_group)
    and yield full HF tensors on every rank.

    Every yielded tensor is a copy, never a view of a live parameter. One collective per sharded parameter:
    every rank of the group must iterate the same names in the same order.
    """
    for name, local in named_params:
        local = local.detach()
        group = (etp_group or tp_group) if is_expert(name) else tp_group
        size = dist.get_world_size(group) if group is not None else 1
        if size == 1 or is_tp_replicated(name):
            shards = [local.clone()]  # a snapshot: the caller may keep it across an optimizer step
        else:
            shards = [torch.empty_like(local) for _ in range(size)]
            dist.all_gather(shards, local.contiguous(), group=group)
        yield from shards_to_hf(name, shards, hf_config)
