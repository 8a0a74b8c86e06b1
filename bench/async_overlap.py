"""Async vs sync rollout: per-iteration wall time on a job where generating and training take similar time.

The promise (issue 7, and the seed's "up to 2x throughput"): with `rollout.mode=async` the engine generates
rollout k+1 while the trainer trains on rollout k, so an iteration costs about max(rollout, train) instead of
their sum. Goal: async at most 0.6x sync per iteration.

Both modes run the same job through launch.py (a fresh process each, interleaved over rounds so that load
from other processes hits both alike). The job is the CPU demo with a wider model (`--hidden`), so both phases
are mostly matrix work that releases the GIL, and long responses (`--response-len`: after one warm-up step the
model seldom emits EOS, so responses run to the limit) so that generation costs about as much as training.
Per-iteration time is time_rollout + time_train + time_sync from metrics.jsonl (the loop body: in async,
time_rollout is the wait for the background rollout and time_sync includes the wait before the weight sync),
over the iterations after `--skip` warm-up ones.

    python bench/async_overlap.py                 # 3 rounds, prints a markdown table
    python bench/async_overlap.py --rounds 5 --rollouts 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.6


def job(args: argparse.Namespace, out: Path, mode: str) -> list[str]:
    h = args.hidden
    return [
        f"run_name={mode}", f"output_dir={out}", f"demo.cache_dir={out / 'cache'}", "log.progress=false",
        "ckpt.save=null", "ckpt.load=null", "eval.interval=null", "eval.before_train=false", "warmup.steps=1",
        "demo.task=copy", f"demo.digits={args.digits}", f"rollout.max_response_len={args.response_len}",
        f"rollout.num_rollout={args.rollouts}", f"model.hidden_size={h}", f"model.ffn_hidden_size={4 * h}",
        f"model.kv_channels={h // 4}", f"model.num_layers={args.layers}", f"rollout.mode={mode}",
    ]  # fmt: skip


def per_iteration(run_dir: Path, skip: int) -> tuple[float, float, float]:
    """(iteration, rollout, train) mean seconds over the train records after the first `skip`."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["phase"] == "train"][skip:]
    total = [r["time_rollout"] + r["time_train"] + r["time_sync"] for r in train]
    return (
        statistics.mean(total),
        statistics.mean(r["time_rollout"] for r in train),
        statistics.mean(r["time_train"] for r in train),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rollouts", type=int, default=12)
    parser.add_argument("--skip", type=int, default=2, help="warm-up iterations left out of the mean")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--response-len", type=int, default=128, help="tokens; the barely warmed model rarely stops")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in results:
                out = Path(tmp)
                done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *job(args, out, mode)],
                                      capture_output=True, text=True, cwd=tmp)  # fmt: skip
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                results[mode].append(per_iteration(out / mode, args.skip))
    print(
        f"model hidden {args.hidden} x {args.layers} layers, copy {args.digits} digits, responses <= "
        f"{args.response_len} tokens, {args.rollouts} rollouts"
    )
    print("| mode | iteration s (median of rounds) | rollout s | train s | rounds |")
    print("|---|---:|---:|---:|---|")
    med = {m: [statistics.median(x[i] for x in v) for i in range(3)] for m, v in results.items()}
    for mode, (it, ro, tr) in med.items():
        rounds = ", ".join(f"{x[0]:.3f}" for x in results[mode])
        print(f"| {mode} | {it:.3f} | {ro:.3f} | {tr:.3f} | {rounds} |")
    ratio = med["async"][0] / med["sync"][0]
    print(f"\nasync / sync per iteration: {ratio:.2f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
