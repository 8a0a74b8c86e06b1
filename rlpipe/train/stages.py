"""Pipeline-parallel bookkeeping: layer numbering per stage, and moving results between stages.

Megatron numbers a stage's decoder layers from 0; HF and `weights.py` use the model's global numbers. A stage
holding layers 4..7 calls its first layer `decoder.layers.0`; `to_global` / `to_local` shift by the stage's offset.
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


def _shift(name: str, by: int) -> str:
    return _LAYER.sub(lambda m: f"decoder.layers.{int(m.group(1)) + by}.", name, count=1)


def to_global(local_name: str, offset: int) -> str:
    """`decoder.layers.{i}.x` of a stage whose first layer is global layer `offset` -> `decoder.layers.{i+offset}.x`."""
    return _shift(local_name, offset)


def to_local(global_name: str, offset: int) -> str:
    return _shift(global_name, -offset)


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
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return items
    group = parallel_state.get_pipeline_model_parallel_group()
    per_stage: list[list[Any]] = [[] for _ in range(dist.get_world_size(group))]
    dist.all_gather_object(per_stage, items, group=group)
    return [item for stage in per_stage for item in stage]
