"""GPU models the plan knows: memory, bf16 peak and HBM bandwidth from the vendors' spec sheets, and the efficiency
factors that turn peaks into seconds, with where each comes from."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: int  # bytes CUDA reports as total (nvidia-smi memory.total)
    bf16_flops: float  # dense bf16 tensor-core peak, FLOP/s (spec sheet, no sparsity)
    hbm_bandwidth: float  # bytes/s (spec sheet)


MIB = 1 << 20
GPUS: dict[str, Gpu] = {
    "a100-40g": Gpu("A100 40GB SXM", 40_960 * MIB, 312e12, 1.555e12),
    "a100-80g": Gpu("A100 80GB SXM", 81_920 * MIB, 312e12, 2.039e12),
    "l40s": Gpu("L40S 48GB", 46_068 * MIB, 362e12, 0.864e12),
    "h100": Gpu("H100 80GB SXM", 81_559 * MIB, 989e12, 3.35e12),
    "h200": Gpu("H200 141GB SXM", 143_771 * MIB, 989e12, 4.8e12),
    "b200": Gpu("B200 180GB", 183_359 * MIB, 2250e12, 8.0e12),
}

# Fraction of the bf16 peak the trainer reaches on a forward+backward: rlpipe's Megatron local spec with SDPA
# attention measured 425 TFLOP/s on an H200 (Qwen2.5-1.5B shape, 4 x 2048 tokens; ../shared/DESIGN.md), 43 % of
# its 989 TFLOP/s; HF+SDPA reached 407 (41 %). Applied to every GPU: other cards are not measured.
TRAIN_EFFICIENCY = 0.43
# Fraction of HBM bandwidth a decode step reaches while it reads the weights and the KV cache once: NOT measured here
# (no SGLang on the machines lent so far); an assumption to be replaced by a measurement.
DECODE_EFFICIENCY = 0.6
# What CUDA itself takes on every GPU before any tensor: context, cuBLAS/NCCL workspaces (an assumption, per GPU).
RUNTIME_OVERHEAD = 2 * GIB


def gpu_by_name(product: str) -> str | None:
    """The table key of an nvidia-smi product name ("NVIDIA H100 80GB HBM3" -> "h100"), None when not in the table."""
    p = product.lower()
    for key, needles in (
        ("h200", ("h200",)),
        ("h100", ("h100",)),
        ("b200", ("b200",)),
        ("l40s", ("l40s",)),
        ("a100-80g", ("a100-sxm4-80gb", "a100 80gb", "a100-80gb", "a100-pcie-80gb")),
        ("a100-40g", ("a100",)),
    ):
        if any(n in p for n in needles):
            return key
    return None


@functools.cache
def detect_gpu() -> str | None:
    """The table key of GPU 0 on this machine, from nvidia-smi (no torch, no CUDA init); None without one. Asked
    once per process: a launch plans in the config phase, the start-of-run table and the run folder."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.strip().splitlines()[:1]
    return gpu_by_name(first[0]) if first else None
