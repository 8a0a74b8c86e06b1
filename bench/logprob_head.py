"""The trainer's log-prob + entropy head: chunked `token_stats` against the straightforward version it replaced.

    python bench/logprob_head.py                    1024 tokens x 151936 vocab (Qwen2.5's), 3 rounds
    python bench/logprob_head.py --tokens 64 --vocab 1024 --rounds 1     smoke size

Both compute log p(label) and the entropy of softmax(logits / T) for every token, then back-propagate an
arbitrary upstream gradient, from the same logits (bf16 on GPU, fp32 on CPU). The straightforward version is the
one rlpipe used before (fp32 cast, temperature, megatron's vocab-parallel cross entropy on a copy, entropy from
exp and products). Each variant runs in a fresh process, taking turns, and reports the median ms of forward +
backward and its peak memory above the logits themselves (device memory on GPU, resident set on CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("straightforward", "token_stats")


def straightforward(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    """rlpipe's head before token_stats: every step materialises fp32 [n, V] tensors."""
    from megatron.core import tensor_parallel

    z = logits.float() / temperature
    log_probs = -tensor_parallel.vocab_parallel_cross_entropy(z.clone(), labels)
    shifted = z - z.detach().amax(dim=-1, keepdim=True)
    exp = shifted.exp()
    sum_exp = exp.sum(dim=-1)
    return log_probs, sum_exp.log() - (exp * shifted).sum(dim=-1) / sum_exp


def _peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_variant(name: str, tokens: int, vocab: int, iters: int) -> dict:
    from rlpipe.train.cpu_shim import apply_cpu_patches
    from rlpipe.train.distributed import init_single_process
    from rlpipe.train.logprobs import token_stats

    apply_cpu_patches()
    init_single_process()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    logits = torch.randn(1, tokens, vocab, device=device, dtype=dtype).requires_grad_()
    labels = torch.randint(0, vocab, (1, tokens), device=device)
    upstream = torch.randn(2, 1, tokens, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _peak_bytes(device) if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(iters + 1):  # the first is a warm-up
        start = time.perf_counter()
        if name == "token_stats":
            log_probs, entropy = token_stats(logits, labels, vocab, 0.7, with_entropy=True)
        else:
            log_probs, entropy = straightforward(logits, labels, 0.7)
        ((log_probs * upstream[0]).sum() + (entropy * upstream[1]).sum()).backward()
        logits.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    peak = _peak_bytes(device) - base
    return {"ms": statistics.median(times[1:]), "peak_gb": peak / 2**30, "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one measurement, in this process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.tokens, args.vocab, args.iters)))
        return
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", name, "--tokens", str(args.tokens)]
            cmd += ["--vocab", str(args.vocab), "--iters", str(args.iters)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    device = results["token_stats"][0]["device"]
    print(f"device {device}; {args.tokens} tokens x {args.vocab} vocab, forward + backward")
    base_ms = statistics.median(r["ms"] for r in results["straightforward"])
    for name in VARIANTS:
        ms = statistics.median(r["ms"] for r in results[name])
        peak = statistics.median(r["peak_gb"] for r in results[name])
        print(f"{name:16s} {ms:9.1f} ms  {ms / base_ms:5.2f}x  peak +{peak:6.2f} GB")


if __name__ == "__main__":
    main()
