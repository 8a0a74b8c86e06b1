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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from rlpipe.plan.params import padded_vocab_size
from rlpipe.train.families import Family, family_of

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


def read_hf_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF checkpoint folder's *.safetensors files, by HF name."""
    state: dict[str, torch.Tensor] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(file))
    if not state:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    return state


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


def _qkv_full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dims: Dims) -> torch.Tensor:
    """Interleave HF q/k/v (weights [out, h] or biases [out]) into Megatron's per-group layout, [G, (q+2)d, ...]."""
    g, d = dims.groups, dims.head_dim
    rest = q.shape[1:]
    return torch.cat([q.reshape(g, -1, *rest), k.reshape(g, d, *rest), v.reshape(g, d, *rest)], dim=1)


def _qkv_split(full: torch.Tensor, dims: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `_qkv_full` applied to the gathered [G*(q+2)*d, ...] tensor."""
    g, d = dims.groups, dims.head_dim
    rest = full.shape[1:]
    grouped = full.reshape(g, -1, *rest)  # [G, (q+2)d, ...]
    q, k, v = torch.split(grouped, [grouped.shape[1] - 2 * d, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def _vocab_shard(weight: torch.Tensor, padded: int, tp_rank: int, tp_size: int) -> torch.Tensor:
    padded_weight = torch.zeros(padded, *weight.shape[1:], dtype=weight.dtype)
    padded_weight[: weight.shape[0]] = weight
    return padded_weight.chunk(tp_size, dim=0)[tp_rank]


def _mlp_to_megatron(
    hf_state_dict: dict[str, torch.Tensor], hf: str, mg: str, fused_gate_up: bool, split: Callable
) -> dict[str, torch.Tensor]:
    """One SwiGLU MLP (dense, or one expert) at HF prefix `hf` -> Megatron linear_fc1 / linear_fc2 at `mg`."""
    if fused_gate_up:
        gate, up = hf_state_dict[hf + "gate_up_proj.weight"].chunk(2, dim=0)
    else:
        gate, up = hf_state_dict[hf + "gate_proj.weight"], hf_state_dict[hf + "up_proj.weight"]
    return {
        mg + "linear_fc1.weight": torch.cat([split(gate, 0), split(up, 0)], dim=0),  # per rank: [gate | up]
        mg + "linear_fc2.weight": split(hf_state_dict[hf + "down_proj.weight"], 1),
    }


def hf_to_megatron(
    hf_state_dict: dict[str, torch.Tensor],
    hf_config: Any,
    tp_rank: int,
    tp_size: int,
    vocab_divisible_by: int = 128,
    etp: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """This TP rank's Megatron state dict (whole model, global layer and expert numbers, no `module.` prefix)
    from HF's; experts are split over `etp` = (expert-tensor-parallel rank, size), by default the TP ones."""
    dims = Dims.of(hf_config)
    family = family_of(hf_config)
    padded = padded_vocab_size(dims.vocab, tp_size, vocab_divisible_by)
    if dims.groups % tp_size:
        raise ValueError(f"num_key_value_heads={dims.groups} is not divisible by tensor_parallel={tp_size}")

    def split(t: torch.Tensor, dim: int) -> torch.Tensor:
        return t.chunk(tp_size, dim=dim)[tp_rank].clone()

    etp_rank, etp_size = etp or (tp_rank, tp_size)

    def split_expert(t: torch.Tensor, dim: int) -> torch.Tensor:
        return t.chunk(etp_size, dim=dim)[etp_rank].clone()

    out = {
        "embedding.word_embeddings.weight": _vocab_shard(
            hf_state_dict["model.embed_tokens.weight"], padded, tp_rank, tp_size
        )
    }
    if not dims.tied:
        out["output_layer.weight"] = _vocab_shard(hf_state_dict["lm_head.weight"], padded, tp_rank, tp_size)
    out["decoder.final_layernorm.weight"] = hf_state_dict["model.norm.weight"].clone()
    for i in range(hf_config.num_hidden_layers):
        hf, mg = f"model.layers.{i}.", f"decoder.layers.{i}."
        attn = hf + "self_attn."
        for hf_name, mg_name in _replicated_layer_names(family):
            out[mg + mg_name] = hf_state_dict[hf + hf_name].clone()
        for kind in ("weight", "bias"):
            if attn + f"q_proj.{kind}" in hf_state_dict:
                qkv = _qkv_full(*(hf_state_dict[attn + f"{p}_proj.{kind}"] for p in "qkv"), dims)  # [G, (q+2)d, ...]
                out[mg + f"self_attention.linear_qkv.{kind}"] = split(qkv, 0).flatten(0, 1)
        out[mg + "self_attention.linear_proj.weight"] = split(hf_state_dict[attn + "o_proj.weight"], 1)
        if family.moe:
            out[mg + "mlp.router.weight"] = hf_state_dict[hf + "mlp.gate.weight"].clone()
            for j in range(hf_config.num_experts):
                expert = f"mlp.experts.local_experts.{j}."
                out.update(_mlp_to_megatron(hf_state_dict, hf + f"mlp.experts.{j}.", mg + expert, False, split_expert))
        else:
            out.update(_mlp_to_megatron(hf_state_dict, hf + "mlp.", mg + "mlp.", family.fused_gate_up, split))
    return out


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


def _mlp_to_hf(hf: str, rest: str, shards: list[torch.Tensor], fused_gate_up: bool) -> list[tuple[str, torch.Tensor]]:
    """HF tensors of one MLP (dense or an expert) from linear_fc1 / linear_fc2 shards; `rest` is fc1 or fc2."""
    if rest == "linear_fc2.weight":
        return [(hf + "down_proj.weight", torch.cat(shards, dim=1))]
    halves = [s.chunk(2, dim=0) for s in shards]  # per rank: (gate rows, up rows)
    gate = torch.cat([h[0] for h in halves])
    up = torch.cat([h[1] for h in halves])
    if fused_gate_up:
        return [(hf + "gate_up_proj.weight", torch.cat([gate, up]))]
    return [(hf + "gate_proj.weight", gate), (hf + "up_proj.weight", up)]


_EXPERT = re.compile(r"mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12]\.weight)")


def shards_to_hf(megatron_name: str, shards: list[torch.Tensor], hf_config: Any) -> list[tuple[str, torch.Tensor]]:
    """HF (name, full tensor) pairs from one Megatron parameter's TP shards (global layer number), rank order."""
    dims = Dims.of(hf_config)
    family = family_of(hf_config)
    if megatron_name == "embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", torch.cat(shards)[: dims.vocab])]
    if megatron_name == "output_layer.weight":
        return [("lm_head.weight", torch.cat(shards)[: dims.vocab])]
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
        q, k, v = _qkv_split(torch.cat(shards), dims)
        return [(hf + f"self_attn.{p}_proj.{kind}", t) for p, t in zip("qkv", (q, k, v), strict=True)]
    if rest == "self_attention.linear_proj.weight":
        return [(hf + "self_attn.o_proj.weight", torch.cat(shards, dim=1))]
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
