"""Forward + backward speed of the Megatron trainer's model against HF + SDPA, with the matmul ceiling.

    python bench/gpu_train.py            Qwen2.5-1.5B shape, random weights, bf16, 4 x 2048 tokens (GPU)
    python bench/gpu_train.py --tiny     a 2-layer toy in fp32 on whatever device exists (smoke test)

First, the packed-attention kernels alone (the varlen flash kernel where it applies, and one SDPA call per
sequence) on a row of uneven sequences: their largest errors against an fp64 reference and their times.
Then, per model: ms per forward+backward (median of timed iterations after warm-up), TFLOP/s, that as a fraction
of a dense bf16 (fp32 with --tiny) matmul ceiling measured in the same process, and the speed-up over HF + SDPA.
The Megatron model runs over the same tokens as b rows of s (the padded layout); as the b sequences packed in one
row of b*s tokens, attended per sequence by the trainer's packed path ("packed"), by one SDPA call per sequence
("packed-loop") or under one [b*s, b*s] block-diagonal mask ("packed-mask", the generic path); and as rows with
megatron's fused SwiGLU (perf.bias_swiglu_fusion). Model FLOPs count the matmuls only: 6 * tokens * (parameters
in linear layers, lm_head included) for weights, plus 6 * b * s^2 * layers * heads * head_dim for causal
attention (QK^T and PV, half the square, x3 for backward).
Record the card with the numbers (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import Qwen2Config, Qwen2ForCausalLM

QWEN25_15B = {
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
TINY = {**QWEN25_15B, "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
TINY.update(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_ms(step: Callable[[], None], warmup: int, iters: int) -> float:
    """Median wall time of `step` in ms; the device is synchronised around every timed call."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        _sync()
        start = time.perf_counter()
        step()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def matmul_ceiling_tflops(dtype: torch.dtype, device: str, n: int) -> float:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    ms = time_ms(lambda: torch.matmul(a, b), warmup=3, iters=10)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def model_flops(cfg: dict, batch: int, seq: int) -> float:
    h, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    d = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * d
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * f  # q,k,v, o, gate/up/down
    linear_params = layers * per_layer + cfg["vocab_size"] * h
    attention = 6 * batch * seq * seq * layers * cfg["num_attention_heads"] * d  # causal: half of 12
    return 6 * batch * seq * linear_params + attention


def hf_step(cfg: dict, dtype: torch.dtype, device: str, tokens: torch.Tensor) -> Callable[[], None]:
    model = Qwen2ForCausalLM(Qwen2Config(**cfg, attn_implementation="sdpa")).to(device=device, dtype=dtype)

    def step() -> None:
        logits = model(tokens).logits  # [b, s, V]
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def megatron_step(
    cfg: dict, dtype_name: str, tokens: torch.Tensor, layout: str, fused_swiglu: bool = False
) -> Callable[[], None]:
    """The trainer's own model build (local spec) and log-prob head (`token_stats`), as in training.

    layout: "rows" ([b, s], causal), "packed" (one row, per-sequence attention through PackedSeqParams, as the
    trainer's dynamic batching runs: the varlen kernel on a flash-capable GPU), "packed-loop" (the same, one SDPA
    call per sequence) or "packed-mask" (one row under an explicit block-diagonal mask).
    fused_swiglu: perf.bias_swiglu_fusion (megatron's torch.compile'd SwiGLU).
    """
    from megatron.core import parallel_state, tensor_parallel

    from rlpipe.train import attention
    from rlpipe.train.batching import model_input, packed_micro_batch
    from rlpipe.train.cpu_shim import apply_cpu_patches
    from rlpipe.train.distributed import init_single_process
    from rlpipe.train.logprobs import token_stats
    from rlpipe.train.model import build_gpt_model, transformer_config_from_hf
    from rlpipe.train.spec import single_process_spec

    apply_cpu_patches()
    if not parallel_state.model_parallel_is_initialized():
        init_single_process()
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    hf_config = Qwen2Config(**cfg)
    spec = single_process_spec(Path("."), params_dtype=dtype_name, bias_swiglu_fusion=fused_swiglu)
    model = build_gpt_model(hf_config, transformer_config_from_hf(hf_config, spec))
    device = tokens.device
    mask, packed = None, None
    if layout == "rows":
        positions = torch.arange(tokens.shape[1], device=device).expand_as(tokens)
        labels = torch.roll(tokens, -1, dims=1)
    else:
        mb = packed_micro_batch(tokens.tolist(), [1] * tokens.shape[0], list(range(tokens.shape[0])))
        inp = model_input(mb)
        tokens, positions, labels = mb.tokens.to(device), mb.position_ids.to(device), mb.labels.to(device)
        if layout == "packed-mask":
            mask = mb.attention_mask.to(device)
        else:
            packed = inp.packed_seq_params

    def kernels() -> AbstractContextManager:
        """packed-loop: the packed path with its per-sequence fallback forced, for the whole step."""
        if layout != "packed-loop":
            return nullcontext()
        return patch.object(attention, "packed_causal_attention", attention.per_sequence_causal_attention)

    def step() -> None:
        with kernels():
            logits = model(tokens, positions, mask, packed_seq_params=packed)  # [b, s, V]
            log_probs, _ = token_stats(logits, labels, cfg["vocab_size"], 1.0, with_entropy=False)  # trainer's head
            (-log_probs.mean()).backward()
        model.zero_grad(set_to_none=True)

    return step


def check_packed_kernels(device: str, dtype: torch.dtype, heads: int, groups: int, dim: int, total: int) -> None:
    """Varlen (where it applies) and per-sequence attention on a packed row of uneven sequences: their largest
    output and gradient differences from an fp64 per-sequence reference, and their forward+backward times."""
    from rlpipe.train import attention

    torch.manual_seed(1)
    cuts = sorted(torch.randperm(total - 1)[: max(1, total // 512)].add(1).tolist())
    cu_seqlens = torch.tensor([0, *cuts, total], dtype=torch.int32)
    q, k, v = (
        torch.randn(total, n, dim, device=device, dtype=dtype, requires_grad=True) for n in (heads, groups, groups)
    )
    upstream = torch.randn(total, heads, dim, device=device, dtype=dtype)
    scale = dim**-0.5

    def run(kernel: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> list[torch.Tensor]:
        out = kernel(*tensors, cu_seqlens, scale)
        return [out, *torch.autograd.grad(out, tensors, upstream.to(out.dtype))]

    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    reference = run(attention.per_sequence_causal_attention, *exact)
    kernels = {"per-sequence": attention.per_sequence_causal_attention}
    if attention.varlen_kernel_applies(q, dropout=0.0):
        kernels["varlen"] = attention.varlen_causal_attention
    print(f"packed attention: {len(cuts) + 1} sequences in {total} tokens, {heads}/{groups} heads x {dim}")
    for name, kernel in kernels.items():
        errors = [
            (got.double() - want).abs().max().item() for got, want in zip(run(kernel, q, k, v), reference, strict=True)
        ]
        ms = time_ms(lambda kernel=kernel: run(kernel, q, k, v), warmup=3, iters=10)
        print(f"  {name:14s} {ms:8.2f} ms  max |error| out {errors[0]:.2e}, dq/dk/dv {max(errors[1:]):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer toy, fp32, 2 x 64 tokens: a smoke test")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument(
        "--profile",
        nargs="*",
        default=["megatron rows"],
        metavar="NAME",
        help="variants to profile after timing (default: 'megatron rows'; none: --profile)",
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, batch, seq = (TINY, 2, 64) if args.tiny else (QWEN25_15B, 4, 2048)
    dtype_name = "fp32" if args.tiny else "bf16"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    torch.manual_seed(0)
    tokens = torch.randint(0, cfg["vocab_size"], (batch, seq), device=device)
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    ceiling = matmul_ceiling_tflops(dtype, device, n=512 if args.tiny else 8192)
    flops = model_flops(cfg, batch, seq)
    print(f"device {card}; torch {torch.__version__}; {batch} x {seq} tokens, {dtype_name}")
    print(f"matmul ceiling {ceiling:.3g} TFLOP/s")
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    heads, groups = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    check_packed_kernels(device, dtype, heads, groups, head_dim, total=batch * seq)
    warmup = 2 if args.tiny else 3
    steps = {"hf+sdpa": lambda: hf_step(cfg, dtype, device, tokens)}
    for layout in ("rows", "packed", "packed-loop", "packed-mask"):
        steps[f"megatron {layout}"] = lambda layout=layout: megatron_step(cfg, dtype_name, tokens, layout)
    steps["megatron rows+swiglu"] = lambda: megatron_step(cfg, dtype_name, tokens, "rows", fused_swiglu=True)
    baseline = None
    for name, build in steps.items():
        try:
            step = build()
            ms = time_ms(step, warmup=warmup, iters=args.iters)
        except Exception as error:  # one variant failing (a compiler missing, memory) must not hide the others
            print(f"{name:22s} failed: {type(error).__name__}: {str(error)[:300]}")
            continue
        baseline = baseline or ms
        tflops = flops / (ms * 1e-3) / 1e12
        print(
            f"{name:22s} {ms:9.2f} ms  {tflops:8.3g} TFLOP/s  {tflops / ceiling:6.1%} of ceiling"
            f"  {baseline / ms:5.2f}x hf+sdpa"
        )
        if name in args.profile:
            print_profile(step, device)
        del step
        if device == "cuda":
            torch.cuda.empty_cache()


def print_profile(step: Callable[[], None], device: str, rows: int = 20) -> None:
    """The operators that took the most device (CPU: host) time over three steps: where the next speed-up is."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        _sync()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
