"""Where metrics go: metrics.jsonl always, TensorBoard and wandb when switched on, and the reward-curve PNG.

Each record is `{"rollout_id": k, "phase": "train"|"eval"|"warmup", ...floats}`. Secrets never enter a record
or a saved config: wandb reads its key from the environment itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from rlpipe.config.schema import LogConfig

log = logging.getLogger(__name__)


def covered_by_checkpoint(record: dict[str, Any], resume_from: int) -> bool:
    """Whether a checkpoint taken before rollout `resume_from` already holds the work behind `record`.

    The loop logs rollout k's train record, then the eval after k + 1 rollouts (as rollout_id k + 1), then saves
    the checkpoint tagged k + 1; warm-up runs before the first rollout. A resumed run keeps exactly these records
    and redoes the rest, so its metrics.jsonl reads as the uninterrupted run's."""
    if resume_from <= 0:
        return False
    phase, rollout_id = record.get("phase"), record.get("rollout_id", -1)
    if phase == "warmup":
        return True
    if phase == "eval":
        return rollout_id <= resume_from
    return rollout_id < resume_from


class MetricsLogger:
    """Appends one JSON line per record; mirrors scalars to TensorBoard / wandb as configured."""

    def __init__(self, run_dir: Path, log: LogConfig, run_name: str, resume_from: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.run_dir = run_dir
        # A resumed run keeps the records its checkpoint covers and redoes the rest; a fresh run starts empty.
        kept = [r for r in self.read(self.path) if covered_by_checkpoint(r, resume_from)]
        _write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._tb = None
        if log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self._wandb = None
        if log.wandb:
            import wandb  # optional dependency; the config check reports it missing before the run starts

            self._wandb = wandb.init(
                project=log.wandb_project,
                group=log.wandb_group,
                name=run_name,
                mode=log.wandb_mode,
                dir=str(run_dir),
            )

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """Every record of a metrics file; a line a killed run left half-written is skipped with a warning."""
        if not path.is_file():
            return []
        records = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                log.warning("%s:%d: skipped a torn or malformed record (a run killed mid-write?)", path, number)
                continue
            records.append(record)
        return records

    def log(self, phase: str, step: int, metrics: dict[str, float]) -> None:
        record = {"phase": phase, "rollout_id": step, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = {f"{phase}/{k}": v for k, v in metrics.items() if math.isfinite(float(v))}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def plot(self) -> Path:
        """Reward per rollout (and eval reward) as reward_curve.png beside metrics.jsonl; for the SFT job the
        training and eval loss as loss_curve.png."""
        records = self.read(self.path)
        train = [r for r in records if r["phase"] == "train"]
        sft = any("sft_loss" in r for r in train)
        train_key, eval_suffix, what = (
            ("sft_loss", "/loss", "loss") if sft else ("reward_mean", "/reward_mean", "reward")
        )
        curves = {f"{what} (train)": [(r["rollout_id"], r[train_key]) for r in train if train_key in r]}
        evals = [r for r in records if r["phase"] == "eval"]
        for key in sorted({k for r in evals for k in r if k.endswith(eval_suffix)}):
            curves[f"eval {key.split('/')[0]}"] = [(r["rollout_id"], r[key]) for r in evals if key in r]
        marked = {label for label in curves if label.startswith("eval ")}
        return save_curves(self.run_dir / f"{what}_curve.png", curves, marked, ylabel=f"mean {what}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def save_curves(
    path: Path, curves: dict[str, list[tuple[int, float]]], marked: set[str] | None = None, ylabel: str = "mean reward"
) -> Path:
    """A mean per rollout (reward, or the SFT job's loss), one line per curve (`marked` ones with dots), as a PNG at
    `path`: a run's reward_curve.png / loss_curve.png and a sweep's rewards.png."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if label in (marked or set()) else None, label=label)
    ax.set_xlabel("rollout")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: a kill mid-write leaves the old file, never half of the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
