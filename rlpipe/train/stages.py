"""Pipeline- and expert-parallel bookkeeping: layer and expert numbering per rank, moving results between stages.

Megatron numbers a stage's decoder layers from 0, and an expert-parallel rank's experts from 0; HF and
`weights.py` use the model's global numbers. A stage holding layers 4..7 calls its first layer
`decoder.layers.0`, an EP rank holding experts 8..15 its first expert `local_experts.0`; `to_global` shifts both.
Log-probs and loss metrics exist only on the last stage, and each stage holds only its own weights; the helpers
below hand those to every rank of the pipeline group (objects pickled over gloo / nccl: small per call, and the
weight gather runs once per weight sync).
"""

from __future__ import annotations

import re
from typing import Any

import torch.distributed as dist
from megatron.core import parallel_state

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.")
_EXPERT = re.compile(r"\.local_experts\.(\d+)\.")


def to_global(local_name: str, offset: int, expert_offset: int = 0) -> str:
    """`decoder.layers.{i}.x` of a stage whose first layer is global layer `offset` -> `decoder.layers.{i+offset}.x`,
    and `local_experts.{j}` of an EP rank whose first expert is global expert `expert_offset` -> `{j+expert_offset}`."""
    name = _LAYER.sub(lambda m: f"decoder.layers.{int(m.group(1)) + offset}.", local_name, count=1)
    return _EXPERT.sub(lambda m: f".local_experts.{int(m.group(1)) + expert_offset}.", name, count=1)


def broadcast_from_last_stage(obj: Any) -> Any:
    """The last pipeline stage's `obj`, returned on every stage (a no-op without pipeline parallelism)."""
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(
        box,
        src=parallel_state.get_pipeline_model_parallel_last_rank(),
        group=parallel_state.get_pipeline_model_parallel_group(),
    )
    return box[0]


def gather_over_stages(items: list[Any]) -> list[Any]:
    """Every stage's `items`, concatenated in stage order, on every stage."""
    return gather_over_group(items, parallel_state.get_pipeline_model_parallel_group())


def gather_over_group(items: list[Any], group: dist.ProcessGroup) -> list[Any]:
    """Every rank's `items` of `group`, concatenated in rank order, on every rank of it."""
    if dist.get_world_size(group) == 1:
        return items
    per_rank: list[list[Any]] = [[] for _ in range(dist.get_world_size(group))]
    dist.all_gather_object(per_rank, items, group=group)
    return [item for rank in per_rank for item in rank]
