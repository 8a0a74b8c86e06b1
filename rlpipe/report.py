"""The end-of-run report: what moved, and where the files are."""

from __future__ import annotations

from pathlib import Path

from rlpipe.loop import SAMPLED_EPISODE_KEYS, Summary


def print_report(summary: Summary, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if summary.first_rollout >= summary.last_rollout:
        console.print(
            f"rlpipe: nothing to do, the checkpoint is already at rollout {summary.first_rollout} "
            f"of {summary.last_rollout} (raise rollout.num_rollout to train further)"
        )
        return
    table = Table(title="rlpipe: run finished", title_justify="left")
    table.add_column("metric", style="cyan")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    n = min(10, summary.last_rollout - summary.first_rollout)
    if not summary.sft:  # the SFT job has no reward; its loss is tracked
        table.add_row(
            f"sampled reward (mean of first / last {n} rollouts)",
            f"{summary.reward_first:.3f}",
            f"{summary.reward_last:.3f}",
        )
    for key, (first, last) in summary.tracked.items():
        what = "train" if key == "sft_loss" else "sampled"
        table.add_row(f"{what} {key} (first / last {n})", f"{first:.3f}", f"{last:.3f}")
    for key in sorted(summary.eval_after):
        if "/env/" in key and not key.endswith(SAMPLED_EPISODE_KEYS):
            continue  # the episode details are in metrics.jsonl; the table keeps what says whether it works
        before = summary.eval_before.get(key)
        table.add_row(f"eval {key}", "-" if before is None else f"{before:.3f}", f"{summary.eval_after[key]:.3f}")
    console.print(table)
    plot = run_dir / ("loss_curve.png" if summary.sft else "reward_curve.png")
    console.print(f"metrics: {run_dir / 'metrics.jsonl'}   plot: {plot}")
