"""The dynamic-batching planner at production size: 8,192 samples of mixed lengths into micro-batches.

    python bench/batch_planner.py                      # 8,192 samples, 16,384-token budget (issue 20's size)
    python bench/batch_planner.py --samples 64 --rounds 1

Measures, in one process, the trainer's planner (`rlpipe.train.batching.split_by_tokens`, best-fit decreasing)
against the in-order greedy split it replaced (kept here as the baseline): milliseconds per rollout (best of
`--rounds`), micro-batches against the lower bound ceil(tokens / budget), and the budget's fill (tokens /
(micro-batches x budget)): the unused part is the padding-equivalent waste of packed micro-batches, forward passes
that run with less than a full budget. Then the host-side layout of one data-parallel rank's share (`--dp`) into
packed model input (`packed_micro_batch`). Lengths: a prompt of 64-2,048 tokens plus a log-normal response, capped
at `--max-len` (the shape of a reasoning rollout: most short, a long tail).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable

from rlpipe.train.batching import packed_micro_batch, split_by_tokens


def in_order_greedy(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """The planner before issue 20: fill micro-batches in arrival order, a new one when the next sample does not fit."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, length in enumerate(lengths):
        if current and used + length > max_tokens:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += length
    if current:
        groups.append(current)
    return groups


def mixed_lengths(n: int, max_len: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [min(max_len, rng.randint(64, 2048) + int(rng.lognormvariate(7.5, 1.0))) for _ in range(n)]


def best_ms(plan: Callable[[list[int], int], list[list[int]]], lengths: list[int], budget: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        plan(lengths, budget)
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--budget", type=int, default=16384, help="perf.max_tokens_per_gpu")
    parser.add_argument("--max-len", type=int, default=16384, help="longest sample (prompt + response)")
    parser.add_argument("--dp", type=int, default=8, help="data-parallel ranks sharing the rollout (layout part)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    lengths = mixed_lengths(args.samples, args.max_len, args.seed)
    total = sum(lengths)
    bound = math.ceil(total / args.budget)
    print(f"{args.samples} samples, {total:,} tokens (mean {total / args.samples:.0f}), budget {args.budget:,}")
    print(f"lower bound: {bound} micro-batches\n")
    print("| planner | ms / rollout | micro-batches | / lower bound | budget fill |")
    print("|---|---|---|---|---|")
    counts = {}
    for name, plan in (
        ("in-order greedy (baseline)", in_order_greedy),
        ("best-fit decreasing (rlpipe)", split_by_tokens),
    ):
        groups = plan(lengths, args.budget)
        assert sorted(i for g in groups for i in g) == list(range(args.samples))
        assert all(sum(lengths[i] for i in g) <= args.budget or len(g) == 1 for g in groups)
        counts[name] = len(groups)
        ms = best_ms(plan, lengths, args.budget, args.rounds)
        fill = total / (len(groups) * args.budget)
        print(f"| {name} | {ms:.1f} | {len(groups)} | {len(groups) / bound:.3f} | {fill:.3f} |")
    base, ours = counts.values()
    print(f"\nforward passes: {ours / base:.3f}x the baseline's")

    rng = random.Random(args.seed)
    share = lengths[: max(1, args.samples // args.dp)]
    seqs = [[rng.randrange(150_000) for _ in range(n)] for n in share]
    groups = split_by_tokens(share, args.budget)
    start = time.perf_counter()
    inputs = [packed_micro_batch(seqs, [1] * len(seqs), g) for g in groups]
    layout = time.perf_counter() - start
    tokens = sum(mb.tokens.numel() for mb in inputs)
    print(
        f"layout of one DP rank's share ({len(share)} samples, {tokens:,} tokens, {len(groups)} micro-batches): "
        f"{layout * 1e3:.0f} ms ({tokens / layout / 1e6:.1f} M tokens/s)"
    )


if __name__ == "__main__":
    main()
