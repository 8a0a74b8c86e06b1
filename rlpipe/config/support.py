"""What this version and this environment can run: a resolved config that asks for a mode not built, or for an
optional library that is not installed, is refused in the config phase with the key, why, and what to do instead.

Missing libraries are about the machine, not the config: when the config is only printed for another machine
(`--cfg job`, `--miles`) they are warnings.
"""

from __future__ import annotations

import importlib.util

from rlpipe.config.state import Resolver


def installed(package: str) -> bool:
    """Whether `package` can be imported here, without importing it."""
    return importlib.util.find_spec(package) is not None


def supported(r: Resolver) -> None:
    cfg, topology = r.d, r.topology
    if cfg["rollout"]["engine"] == "sglang" and not installed("sglang"):
        r.path_problem(
            "rollout.engine",
            "sglang is not installed in this environment (it is an optional, GPU-only extra)",
            "pip install 'sglang==0.5.23' on the GPU machine, or rollout.engine=hf",
        )
    if cfg["log"]["wandb"] and not installed("wandb"):
        r.path_problem("log.wandb", "wandb is not installed", "pip install wandb, or log.wandb=false")
    if cfg["algo"]["loss_type"] != "policy_loss":
        r.problem(
            "algo.loss_type",
            f"{cfg['algo']['loss_type']} as the RL-phase loss is not built yet; a supervised phase is declared "
            "with `warmup`",
            "algo.loss_type=policy_loss",
        )
    if cfg["cluster"]["backend"] == "local" and topology.get("actor_gpus", 1) > 1:
        r.problem(
            "cluster.actor_num_gpus_per_node",
            f"the local backend runs one trainer process, not {topology['actor_gpus']}",
            "cluster.actor_num_nodes=1 cluster.actor_num_gpus_per_node=1 (TP/DP > 1 need the Ray backend)",
        )
    if cfg["perf"]["bf16"] and topology.get("device") == "cpu":
        r.problem("perf.bf16", "bf16 training on CPU is slow and untested here", "perf.bf16=false")
