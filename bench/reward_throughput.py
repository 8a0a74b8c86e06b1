"""Reward throughput at production size: 8,192 math-verify calls in-process vs in the reward pool, and the overlap.

    python bench/reward_throughput.py                     # 8,192 samples (issue 20's size)
    python bench/reward_throughput.py --samples 64 --light 64

One process, back to back, on the same samples:
  1. `math` scored in-process (the event loop; what every rollout did before issue 20) - the baseline;
  2. the same in `RewardPool` with one worker per core (`auto_workers()`), already started, as it is from the second
     rollout on (its start-up is printed apart);
  3. overlap: an engine that hands out the groups evenly over `--gen-factor` x the pool's scoring time (the engine is
     the slower side), each started in the pool as it arrives (`RolloutSource.generate_turn` does this), against
     scoring them all after the last one arrives. Reported: the scoring time left after generation ends;
  4. a light reward (`f1`) in-process vs pooled: why rollout.reward_workers unset keeps exact_match and f1 in-process.

Answers are math in several forms (boxed, fractions, decimals, LaTeX, plain), a quarter of them wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from rlpipe.data.sample import Sample
from rlpipe.reward import RewardContext, score_groups
from rlpipe.reward.pool import RewardPool, auto_workers

FORMS = [
    ("{a}/{b}", "\\boxed{{\\frac{{{a}}}{{{b}}}}}"),
    ("{a}/{b}", "So the answer is $\\dfrac{{{a}}}{{{b}}}$."),
    ("{c}", "We get {c}. The final answer is \\boxed{{{c}}}"),
    ("{c}", "$x = {c}$"),
    ("\\sqrt{{{c}}}", "Therefore \\boxed{{\\sqrt{{{c}}}}}."),
    ("{d}", "The result is {d:.2f}, i.e. \\boxed{{{d:.2f}}}"),
]


def math_samples(n: int, seed: int, group: int = 8) -> list[list[Sample]]:
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        a, b, c, d = rng.randint(1, 50), rng.randint(2, 60), rng.randint(2, 999), rng.uniform(0, 100)
        label, text = rng.choice(FORMS)
        wrong = rng.random() < 0.25
        values = {"a": a, "b": b, "c": c, "d": round(d, 2)}
        answer = text.format(**(values | ({"c": c + 1, "a": a + 1, "d": d + 1} if wrong else {})))
        samples.append(Sample(prompt="q", label=label.format(**values), index=i, group_index=i // group))
        samples[-1].response_text = answer
    return [samples[k : k + group] for k in range(0, n, group)]


def fresh(groups: list[list[Sample]]) -> list[list[Sample]]:
    """The same samples, unscored (each measurement starts from none)."""
    return [[Sample(prompt=s.prompt, label=s.label, index=s.index, group_index=s.group_index,
                    response_text=s.response_text) for s in g] for g in groups]  # fmt: skip


def timed(groups: list[list[Sample]], ctx: RewardContext, pool: RewardPool | None) -> tuple[float, list]:
    start = time.perf_counter()
    asyncio.run(score_groups(groups, ctx, pool))
    return time.perf_counter() - start, [s.reward for g in groups for s in g]


def overlapped(groups: list[list[Sample]], ctx: RewardContext, pool: RewardPool, span: float, early: bool) -> float:
    """Groups arrive evenly over `span` seconds, as a prompt's reply brings its n samples (each group started in the
    pool on arrival if `early`); returns the seconds from the last arrival until every reward is in."""
    start = time.perf_counter()
    for k, group in enumerate(groups):
        due = start + span * (k + 1) / len(groups)
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.01))
        if early:
            pool.start(group)
    generated = time.perf_counter()
    asyncio.run(score_groups(groups, ctx, pool))
    return time.perf_counter() - generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--light", type=int, default=8192, help="samples for the light-reward (f1) comparison")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core (auto_workers)")
    parser.add_argument("--gen-factor", type=float, default=1.25, help="generation time / pooled scoring time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    workers = args.workers or auto_workers()
    ctx = RewardContext(rm_type="math", eos_token_id=1, special_token_ids=frozenset({1}), decode=str)
    groups = math_samples(args.samples, args.seed)
    pool = RewardPool(ctx, workers)
    try:
        start = time.perf_counter()
        timed(fresh(groups[:1]), ctx, pool)  # starts the workers (spawn + imports)
        print(f"pool start-up ({workers} workers): {time.perf_counter() - start:.2f} s (once per run)\n")

        base, local = timed(fresh(groups), ctx, None)
        ours, pooled = timed(fresh(groups), ctx, pool)
        assert pooled == local, "the pool must give the in-process rewards"
        print(f"math-verify, {args.samples} samples ({sum(r == 1.0 for r in local)} right):")
        print("| scoring | seconds | samples/s | speed-up |")
        print("|---|---:|---:|---:|")
        print(f"| in-process (baseline) | {base:.2f} | {args.samples / base:.0f} | 1.00x |")
        print(f"| pool, {workers} workers | {ours:.2f} | {args.samples / ours:.0f} | {base / ours:.2f}x |")

        span = args.gen_factor * ours
        after = overlapped(fresh(groups), ctx, pool, span, early=False)
        hidden = overlapped(fresh(groups), ctx, pool, span, early=True)
        print(f"\nengine the slower side (samples arrive over {span:.1f} s), scoring left after the last arrives:")
        print(f"  scored after generation: {after:.2f} s;  scored as they arrive: {hidden:.2f} s")
        print(f"  ({1 - hidden / after:.0%} of the scoring hidden behind generation)")

        light_ctx = RewardContext(rm_type="f1", eos_token_id=1, special_token_ids=frozenset({1}), decode=str)
        light_pool = RewardPool(light_ctx, workers)
        try:
            light = math_samples(args.light, args.seed)
            timed(fresh(light[:1]), light_ctx, light_pool)
            base_f1, _ = timed(fresh(light), light_ctx, None)
            pool_f1, _ = timed(fresh(light), light_ctx, light_pool)
            print(f"\nf1 (a light reward), {args.light} samples: in-process {base_f1:.2f} s, pool {pool_f1:.2f} s "
                  f"({base_f1 / pool_f1:.2f}x): kept in-process unless rollout.reward_workers is set")  # fmt: skip
        finally:
            light_pool.close()
    finally:
        pool.close()


if __name__ == "__main__":
    main()
