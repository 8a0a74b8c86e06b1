"""A digest of named weights, to check that what the engine serves is exactly what the trainer holds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def named_tensor_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) in name order: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
