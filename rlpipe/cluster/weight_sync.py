"""Weight sync by broadcast: a process group of its own between trainer rank 0 and the rollout side.

Disaggregated layouts keep trainer and engines in different processes (and on different GPUs), so the new
weights go over a collective instead of through the object store: NCCL on GPUs, gloo on CPU. The group is
separate from the trainer's torch.distributed world (rank 0 of it is trainer rank 0, the receivers follow),
built directly on a TCPStore, the way SGLang's `init_weights_update_group` builds its side.

Both sides cut the same list of (name, shape, dtype) into the same buckets, so each bucket is one broadcast
of a flat buffer per dtype rather than one per tensor.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

GROUP_PREFIX = "rlpipe-weight-sync"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return int(torch.Size(self.shape).numel()) * torch.empty((), dtype=self.dtype).element_size()


def specs_of(named: list[tuple[str, torch.Tensor]]) -> list[TensorSpec]:
    return [TensorSpec(name, tuple(t.shape), t.dtype) for name, t in named]


def buckets(specs: list[TensorSpec], bucket_bytes: int) -> list[list[int]]:
    """Consecutive spec indices grouped so each bucket stays under `bucket_bytes` (a larger tensor goes alone)."""
    out: list[list[int]] = []
    size = 0
    for i, spec in enumerate(specs):
        if out and size + spec.nbytes <= bucket_bytes:
            out[-1].append(i)
            size += spec.nbytes
        else:
            out.append([i])
            size = spec.nbytes
    return out


def open_group(backend: str, address: str, port: int, world_size: int, rank: int, timeout_s: float = 300.0):
    """Join the weight-sync group; rank 0 (trainer rank 0) hosts the store. Blocks until all members join."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(address, port, world_size, rank == 0, timeout=timeout)
    prefixed = dist.PrefixStore(GROUP_PREFIX, store)
    if backend == "gloo":  # the timeout makes a stuck peer an error, not a hang
        return dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
    options = dist.ProcessGroupNCCL.Options()
    options._timeout = timeout
    return dist.ProcessGroupNCCL(prefixed, rank, world_size, options)


def _broadcast(group, buffer: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([buffer], options).wait()


def send(group, named: list[tuple[str, torch.Tensor]], bucket_bytes: int, flat: bool = True) -> None:
    """Trainer rank 0: broadcast every tensor, bucket by bucket: one flat buffer per dtype in a bucket, or
    (flat=False) one broadcast per tensor, the order SGLang's update_weights_from_distributed receives in."""
    specs = specs_of(named)
    for bucket in buckets(specs, bucket_bytes):
        if not flat:
            for i in bucket:
                _broadcast(group, named[i][1].detach().contiguous())
            continue
        for dtype in dict.fromkeys(specs[i].dtype for i in bucket):
            members = [named[i][1] for i in bucket if specs[i].dtype == dtype]
            _broadcast(group, torch.cat([t.detach().contiguous().view(-1) for t in members]))


def receive(group, specs: list[TensorSpec], bucket_bytes: int, device: str = "cpu"):
    """Receivers: yield each bucket as a list of (name, tensor), in the sender's order."""
    for bucket in buckets(specs, bucket_bytes):
        received: dict[int, torch.Tensor] = {}
        for dtype in dict.fromkeys(specs[i].dtype for i in bucket):
            members = [i for i in bucket if specs[i].dtype == dtype]
            flat = torch.empty(sum(torch.Size(specs[i].shape).numel() for i in members), dtype=dtype, device=device)
            _broadcast(group, flat)
            for i, part in zip(members, flat.split([torch.Size(specs[i].shape).numel() for i in members]), strict=True):
                received[i] = part.view(specs[i].shape)
        yield [(specs[i].name, received[i]) for i in bucket]
