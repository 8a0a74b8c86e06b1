"""A run folder belongs to one run: what makes two configs the same run, and the rule that keeps runs apart.

Rerunning the same command resumes (Miles' restart-idempotent `--load` = `--save`). Rerunning with a config that
computes something else (another algorithm, model, data, batch knobs, learning rate...) into the same folder would
mix two runs' checkpoints and metrics, so it is refused with the differences and the ways out: a new `run_name`,
`resume=force` (continue anyway), or `resume=false` (start over; the earlier run is moved aside, not deleted).

What does not change what a run computes is left out of its identity: how long it runs, where it writes, how it is
watched, how it is placed and sharded (a checkpoint resumes at another layout), the engine's serving settings.
The identity is written as `run.json` into the run folder and the checkpoint folder when a run starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rlpipe.config.files import TRACKER_FILE
from rlpipe.config.state import Resolver

RUN_FILE = "run.json"
# Dotted prefixes that are not part of what a run computes (see the module docstring).
NOT_THE_RUN = (
    "run_name", "output_dir", "resume", "log.", "eval.", "cluster.", "sglang.",
    "perf.tensor_parallel", "perf.sequence_parallel", "perf.pipeline_parallel", "perf.decoder_",
    "perf.context_parallel",
    "perf.expert_parallel", "perf.expert_tensor_parallel", "perf.recompute_", "perf.use_dynamic_batch_size",
    "perf.max_tokens_per_gpu", "perf.micro_batch_size", "perf.use_distributed_optimizer", "perf.bias_swiglu_fusion",
    "ckpt.load", "ckpt.save", "ckpt.save_interval", "ckpt.save_hf", "ckpt.keep_last", "ckpt.no_save_optim",
    "rollout.num_rollout", "rollout.num_epoch", "rollout.max_sampling_waves", "rollout.reward_timeout_s",
    "rollout.engine", "demo.cache_dir", "debug.save_rollout_data", "lora.sync",
)  # fmt: skip
MAX_SHOWN = 12  # differences listed in one message


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.removesuffix("."): node}


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config's values that decide what the run computes, flattened to dotted keys."""
    flat = _flat(config)
    identity = {k: v for k, v in flat.items() if not k.startswith(NOT_THE_RUN)}
    if config.get("demo") is not None:  # the demo's files are named by its settings, which are in the identity
        identity.pop("ckpt.hf_checkpoint", None)
        identity.pop("rollout.prompt_data", None)
    if config["optim"]["lr_decay_style"] == "constant":  # the decay length then changes nothing
        identity.pop("optim.lr_decay_iters", None)
    return json.loads(json.dumps(identity))  # the values as JSON gives them back, so stored and new compare


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The identity stored in `folder`, or None when there is none (or it cannot be read: then nothing is known)."""
    try:
        stored = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def write_identity(folder: Path, config: dict[str, Any]) -> None:
    """Store the run's identity in `folder` (created if needed), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(run_identity(config), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / RUN_FILE)


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: before -> now` for each identity value that changed."""
    return [
        f"{key}: {before.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]


def has_progress(run_dir: Path, checkpoint_dir: Path | None) -> bool:
    """Whether an earlier run left work behind: metrics records in its folder, or a checkpoint."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        return True
    return checkpoint_dir is not None and (checkpoint_dir / TRACKER_FILE).exists()


def same_run(r: Resolver) -> None:
    """Refuse to resume a run folder (or checkpoint folder) that holds another run, unless `resume` says how."""
    if not r.check_paths:
        return
    run_dir = Path(r.get("output_dir")) / r.get("run_name")
    load = Path(r.get("ckpt.load")) if r.get("ckpt.load") else None
    save = Path(r.get("ckpt.save")) if r.get("ckpt.save") else None
    if r.get("resume") is False:
        if load is not None and load != save and (load / TRACKER_FILE).exists():
            r.problem(
                "ckpt.load",
                "holds a checkpoint that would be resumed, but resume=false starts over",
                "ckpt.load=null (or point it at initial weights), or resume=true",
                str(load),
            )
        return
    if not has_progress(run_dir, load):
        return
    now = run_identity(r.d)
    for folder in dict.fromkeys(f for f in (run_dir, load) if f is not None):
        before = read_identity(folder)
        changed = differences(before, now) if before is not None else []
        if not changed:
            continue
        if r.get("resume") == "force":
            r.warn("resume", f"force: resuming {folder} although the run differs in {len(changed)} value(s)")
            return
        more = f"; and {len(changed) - MAX_SHOWN} more" if len(changed) > MAX_SHOWN else ""
        r.problem(
            "run_name",
            f"{folder} holds another run, which this config would resume and mix with: "
            + "; ".join(changed[:MAX_SHOWN])
            + more,
            "run_name=<a new name> for a new run; resume=force to continue that run with these values; "
            "resume=false to start over (the earlier run is moved aside, not deleted)",
            r.get("run_name"),
        )
        return
