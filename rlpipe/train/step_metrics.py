"""How metrics of micro-batches, data-parallel ranks and optimizer steps combine into one rollout's.

Loss metrics are each micro-batch's share of a global mean (`rlpipe.algo.reduce`): they add over micro-batches
and data-parallel ranks, and are averaged over the optimizer steps of a rollout. Keys ending in `_max` / `_min`
are extremes over tokens: they combine with max / min everywhere. Keys in `ALREADY_GLOBAL` are the same on
every rank after the optimizer step (grad norm, learning rate, whether the step was skipped) and are not summed
over ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

ALREADY_GLOBAL = ("grad_norm", "lr", "nonfinite_step")


def _kind(key: str) -> str:
    if key.endswith("_max"):
        return "max"
    if key.endswith("_min"):
        return "min"
    return "sum"


def _fold(parts: list[dict[str, float]], mean: bool) -> dict[str, float]:
    """Every key of `parts` combined: max / min for extremes, the sum (or with `mean` the mean) otherwise."""
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [float(part[key]) for part in parts if key in part]
        kind = _kind(key)
        if kind == "max":
            out[key] = max(values)
        elif kind == "min":
            out[key] = min(values)
        else:
            out[key] = sum(values) / len(values) if mean else sum(values)
    return out


def combine_micro_batches(parts: list[dict[str, float]]) -> dict[str, float]:
    """One rank's metrics of one optimizer step from its micro-batches': sums, maxima and minima."""
    return _fold(parts, mean=False)


def combine_over_group(metrics: dict[str, float], group: dist.ProcessGroup) -> dict[str, float]:
    """Every rank's share combined over `group` (the data-parallel group): sums add, extremes take max / min.
    Every rank of the group must call it with the same keys."""
    keys = sorted(k for k in metrics if k not in ALREADY_GLOBAL)
    sums = [k for k in keys if _kind(k) == "sum"]
    extremes = [k for k in keys if _kind(k) != "sum"]
    out = dict(metrics)
    if sums:
        values = torch.tensor([metrics[k] for k in sums], dtype=torch.float64)
        dist.all_reduce(values, group=group)
        out |= dict(zip(sums, values.tolist(), strict=True))
    if extremes:  # min(x) = -max(-x): one MAX all-reduce serves both
        signs = [1.0 if _kind(k) == "max" else -1.0 for k in extremes]
        values = torch.tensor([s * metrics[k] for s, k in zip(signs, extremes, strict=True)], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=group)
        out |= {k: s * v for s, k, v in zip(signs, extremes, values.tolist(), strict=True)}
    return out


def combine_steps(per_step: list[dict[str, float]]) -> dict[str, float]:
    """A rollout's metrics from its optimizer steps': means, maxima and minima; `nonfinite_steps` counts the
    steps that were skipped for a non-finite loss or gradient."""
    out = _fold(per_step, mean=True)
    if "nonfinite_step" in out:
        out["nonfinite_steps"] = sum(step["nonfinite_step"] for step in per_step)
        del out["nonfinite_step"]
    return out
