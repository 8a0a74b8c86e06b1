"""The broadcast weight sync between two processes over gloo: exact bytes, any bucket size, both layouts."""

from __future__ import annotations

import multiprocessing as mp
import socket

import pytest
import torch

from rlpipe.cluster.weight_sync import TensorSpec, buckets, open_group, receive, send, specs_of


def _named() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("embed.weight", torch.randn(7, 5, generator=g)),
        ("layer.bias", torch.randn(5, generator=g).to(torch.bfloat16)),
        ("layer.weight", torch.randn(3, 5, generator=g)),
        ("norm.weight", torch.randn(5, generator=g).to(torch.bfloat16)),
        ("head.weight", torch.randn(11, 5, generator=g)),
    ]


def test_buckets_respect_the_size_and_keep_order() -> None:
    specs = specs_of(_named())  # 140, 10, 60, 10, 220 bytes
    assert buckets(specs, 150) == [[0, 1], [2, 3], [4]]
    assert buckets(specs, 10_000) == [[0, 1, 2, 3, 4]]
    assert buckets(specs, 1) == [[0], [1], [2], [3], [4]]  # a tensor larger than a bucket goes alone
    assert TensorSpec("x", (2, 3), torch.bfloat16).nbytes == 12


def _receiver(port: int, bucket_bytes: int, queue: mp.Queue) -> None:
    group = open_group("gloo", "127.0.0.1", port, 2, rank=1, timeout_s=60)
    got = [pair for bucket in receive(group, specs_of(_named()), bucket_bytes) for pair in bucket]
    queue.put([(name, t.clone()) for name, t in got])


@pytest.mark.parametrize("bucket_bytes", [1, 150, 1 << 20])
def test_broadcast_delivers_exact_tensors(bucket_bytes: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_receiver, args=(port, bucket_bytes, queue))
    child.start()
    group = open_group("gloo", "127.0.0.1", port, 2, rank=0, timeout_s=60)
    send(group, _named(), bucket_bytes)
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert [name for name, _ in got] == [name for name, _ in _named()]
    for (_, want), (_, have) in zip(_named(), got, strict=True):
        assert have.dtype == want.dtype and torch.equal(have, want)
