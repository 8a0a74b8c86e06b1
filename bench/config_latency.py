"""Config latency: how long `launch.py` takes to reject a bad config, and to print a resolved one.

The promise (issue 2): every config mistake is caught and explained in under a second, with nothing heavy
imported. Each case runs as a fresh subprocess, as a user would type it; rounds interleave the cases with a
bare `python -c pass` baseline so that load from other processes on the machine hits all of them alike.

    python bench/config_latency.py            # 5 rounds, prints a markdown table (a case over the goal: OVER)
    python bench/config_latency.py --runs 9
    python bench/config_latency.py --check    # ... and exit 1 if any case is over the goal

Without --check the exit code says only whether every case did what it says (its exit code): timings on a
shared machine vary with its load, so a smoke run (tests/test_bench_smoke.py) must not fail on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.0

PROMPT_ROWS = 17_000  # the size of dapo-math-17k, read whole by the config phase's file check


def cases(files: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (argv after the interpreter, the exit code that proves the case did what it says); `files` holds
    the inputs of the file-check case (`make_inputs`)."""
    recipe = [
        "launch.py", "experiment=none", "model=auto", f"ckpt.hf_checkpoint={files / 'hf'}",
        "rollout.rm_type=exact_match", f"rollout.prompt_data={files / 'prompts.jsonl'}", "rollout.num_rollout=3",
        "rollout.max_response_len=16",
        "rollout.max_prompt_len=3", "cluster.accelerator=cpu", f"output_dir={files / 'out'}",
    ]  # fmt: skip
    return {
        "baseline `python -c pass`": (["-c", "pass"], 0),
        "unknown key `rollout.n_sample=8`": (["launch.py", "rollout.n_sample=8"], 2),
        "bad value `rollout.batch_size=0`": (["launch.py", "rollout.batch_size=0"], 2),
        "`--cfg job` (default experiment)": (["launch.py", "--cfg", "job"], 0),
        "`--cfg job` (GLM4-9B recipe, 8 H100)": (
            ["launch.py", "experiment=glm4-9b-dapo", "cluster.gpu=h100", "--cfg", "job"],
            0,
        ),
        "`--plan` (GLM4-9B recipe, 8 H100)": (
            ["launch.py", "experiment=glm4-9b-dapo", "cluster.gpu=h100", "--plan"],
            0,
        ),
        "`--plan=json` of a plan that overflows (GLM4-9B at TP 1)": (
            [
                "launch.py",
                "experiment=glm4-9b-dapo",
                "cluster.gpu=h100",
                "perf.tensor_parallel=1",
                "perf.sequence_parallel=false",
                "--plan=json",
            ],
            0,
        ),
        f"a {PROMPT_ROWS}-row prompt file, every prompt over max_prompt_len (all read, all counted)": (recipe, 2),
    }


def make_inputs(files: Path) -> None:
    """A tiny HF checkpoint and a prompt file none of whose prompts fits max_prompt_len 3 (each is 6 characters,
    6 tokens of the demo's character tokenizer): the config phase parses every row, counts every prompt's tokens,
    and refuses the file."""
    from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint

    build_tiny_checkpoint(files / "hf", TinyModelSpec())
    rows = [json.dumps({"prompt": f"r{i:05d}", "label": str(i)}) for i in range(PROMPT_ROWS)]
    (files / "prompts.jsonl").write_text("\n".join(rows) + "\n")


def time_once(argv: list[str], expected_rc: int) -> float:
    """Wall seconds of one fresh interpreter running argv; fails loudly if it exits with the wrong code."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != expected_rc:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}, expected {expected_rc}:\n{proc.stderr}")
    return elapsed


def measure(runs: int, table: dict[str, tuple[list[str], int]]) -> dict[str, float]:
    """Median seconds per case over `runs` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(runs):
        for name, (argv, rc) in table.items():
            times[name].append(time_once(argv, rc))
    return {name: statistics.median(samples) for name, samples in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="subprocess runs per case (the median is reported)")
    parser.add_argument("--goal", type=float, default=GOAL_S, help="seconds a case may take (default: the promise)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a case's median is over the goal")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_inputs(Path(folder))
        medians = measure(args.runs, cases(Path(folder)))
    baseline = medians["baseline `python -c pass`"]
    print(f"median of {args.runs} runs each, Python {sys.version.split()[0]}, goal <= {args.goal:.1f} s\n")
    print("| case | seconds | x baseline | goal |")
    print("|---|---:|---:|---|")
    over = 0
    for name, seconds in medians.items():
        is_baseline = name.startswith("baseline")
        ok = is_baseline or seconds <= args.goal
        over += not ok
        verdict = "" if is_baseline else ("met" if ok else "OVER")
        print(f"| {name} | {seconds:.3f} | {seconds / baseline:.1f} | {verdict} |")
    if over:
        print(f"\n{over} case(s) over the {args.goal:.1f} s goal")
    return 1 if over and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
