"""Packed micro-batches: per-sequence attention (the trainer's packed path) against one block-diagonal mask.

    python bench/packing.py                  8 sequences x 512 tokens, 4-layer hidden-256 Qwen2 shape, fp32
    python bench/packing.py --rounds 1 --seqs 2 --seq-len 32     smoke size

The same tokens go through the trainer's Megatron model (forward + backward, cross entropy) three ways, taking
turns for `--rounds` rounds (this machine is shared and noisy: compare within a round): as padded rows [b, s]
(the reference: attention over b separate causal rows), packed in one row with per-sequence attention
(PackedSeqParams; what dynamic batching runs), and packed under an explicit [b*s, b*s] mask. Prints medians
and each layout's time as a ratio of the masked one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_train import TINY, megatron_step, time_ms  # the benchmark next door

SHAPE = {**TINY, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4}
SHAPE.update(num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=8192)
LAYOUTS = ("rows", "packed", "packed-mask")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seqs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    tokens = torch.randint(0, SHAPE["vocab_size"], (args.seqs, args.seq_len), device=device)
    steps = {layout: megatron_step(SHAPE, "fp32", tokens, layout) for layout in LAYOUTS}
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for _ in range(args.rounds):
        for layout, step in steps.items():
            times[layout].append(time_ms(step, warmup=1, iters=args.iters))
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; {args.seqs} x {args.seq_len} tokens")
    masked = statistics.median(times["packed-mask"])
    for layout in LAYOUTS:
        ms = statistics.median(times[layout])
        print(f"{layout:12s} {ms:9.1f} ms  {ms / masked:5.2f}x the masked packed step")


if __name__ == "__main__":
    main()
