"""Process-group setup for the Megatron trainer: torch.distributed + Megatron's model-parallel groups.

gloo on CPU, nccl on GPU. `init_single_process` gives tests and the in-process mode a world of one;
`teardown` undoes everything so several trainers can be built one after another in one process.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def init_distributed(
    rank: int,
    world_size: int,
    init_method: str,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    expert_parallel: int = 1,
    expert_tensor_parallel: int = 1,
) -> None:
    """Join the default process group and build Megatron's TP/PP/CP/DP (and MoE EP/ETP) groups over it."""
    if torch.cuda.is_available():
        backend = "nccl"
        torch.cuda.set_device(rank % torch.cuda.device_count())
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend, init_method=init_method, rank=rank, world_size=world_size, timeout=timedelta(minutes=10)
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_parallel,
        pipeline_model_parallel_size=pipeline_parallel,
        context_parallel_size=context_parallel,
        expert_model_parallel_size=expert_parallel,
        expert_tensor_parallel_size=expert_tensor_parallel,
    )


def free_tcp_init_method() -> str:
    """A tcp://127.0.0.1:PORT init method on a port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def init_single_process() -> None:
    """World size 1, every parallel size 1: the in-process trainer and most tests."""
    init_distributed(rank=0, world_size=1, init_method=free_tcp_init_method())


def teardown() -> None:
    """Destroy Megatron's groups, then the default process group (safe to call when not initialized)."""
    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
