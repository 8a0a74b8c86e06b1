"""What this version can run: resolved configs that ask for a mode not built yet fail here, before any
heavy import, with the key, why, and what to do instead (each names the issue that tracks it)."""

from __future__ import annotations

import importlib.util

from rlpipe.config import Problem, Resolved


def unsupported(run: Resolved) -> list[Problem]:
    cfg, topo = run.cfg, run.topology
    p: list[Problem] = []

    def no(key: str, why: str, fix: str) -> None:
        p.append(Problem(key, why, fix))

    if cfg.rollout.engine == "sglang" and importlib.util.find_spec("sglang") is None:
        no(
            "rollout.engine",
            "sglang is not installed in this environment (it is an optional, GPU-only extra)",
            "pip install 'sglang==0.5.23' on the GPU machine, or rollout.engine=hf",
        )
    if cfg.algo.loss_type != "policy_loss":
        no(
            "algo.loss_type",
            f"{cfg.algo.loss_type} as the RL-phase loss is not built yet; a supervised phase is declared with `warmup`",
            "algo.loss_type=policy_loss",
        )
    if cfg.cluster.backend == "local" and topo.actor_gpus > 1:
        no(
            "cluster.actor_num_gpus_per_node",
            f"the local backend runs one trainer process, not {topo.actor_gpus}",
            "cluster.actor_num_nodes=1 cluster.actor_num_gpus_per_node=1 (TP/DP > 1 need the Ray backend)",
        )
    if cfg.perf.bf16 and topo.device == "cpu":
        no("perf.bf16", "bf16 training on CPU is slow and untested here", "perf.bf16=false")
    if cfg.log.wandb and importlib.util.find_spec("wandb") is None:
        no("log.wandb", "wandb is not installed", "pip install wandb, or log.wandb=false")
    return p
