"""What this version and this environment can run: a resolved config that asks for a mode not built, a model
rlpipe's trainer does not build (flags an imported Miles script keeps in miles.extra_args), or an optional library
that is not installed, is refused in the config phase with the key, why, and what to do instead.

Missing libraries are about the machine, and an architecture rlpipe cannot train is still worth printing or
exporting to Miles: when the config is only printed (`--cfg job`, `--miles`) both are warnings.
"""

from __future__ import annotations

import importlib.util

from rlpipe.config.state import Resolver

# Miles/slime/Megatron flags of models or training modes rlpipe's trainer does not build: flag -> what it is.
UNTRAINABLE_FLAGS: dict[str, str] = {
    "--multi-latent-attention": "multi-latent attention (MLA: DeepSeek-V3, Kimi K2)",
    "--q-lora-rank": "multi-latent attention (MLA)",
    "--kv-lora-rank": "multi-latent attention (MLA)",
    "--mtp-num-layers": "multi-token prediction (MTP) layers",
    "--enable-mtp-training": "multi-token prediction (MTP) training",
    "--hybrid-override-pattern": "Mamba/attention hybrid layers",
    "--is-hybrid-model": "a Mamba/attention hybrid model",
    "--mamba-num-heads": "Mamba layers",
    "--mamba-state-dim": "Mamba layers",
    "--linear-attention-backend": "linear attention (Gated DeltaNet, Qwen3-Next)",
    "--qwen-gdn-backend": "Gated DeltaNet attention (Qwen3-Next)",
    "--moe-shared-expert-intermediate-size": "shared MoE experts",
    "--moe-layer-freq": "MoE on some layers only (rlpipe builds every layer alike)",
    "--fp8-format": "FP8 training (rlpipe trains in bf16 or fp32; FP8 rollout is ckpt.hf_checkpoint's business)",
    "--fp16": "fp16 training (rlpipe trains in bf16 or fp32)",
}


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
    _untrainable(r)


def _untrainable(r: Resolver) -> None:
    """Flags an imported script keeps (miles.extra_args) that name a model or mode rlpipe cannot train."""
    words = r.get("miles.extra_args")
    flags = [w for w in words if w.startswith("--")]
    for i, word in enumerate(words):
        if word == "--position-embedding-type" and words[i + 1 : i + 2] not in (["rope"], []):
            r.path_problem(
                "miles.extra_args",
                f"--position-embedding-type {words[i + 1]}: rlpipe's models use RoPE only",
                "train this recipe with Miles (--miles writes its script), or import a RoPE model's script",
            )
    for flag in flags:
        if flag in UNTRAINABLE_FLAGS:
            r.path_problem(
                "miles.extra_args",
                f"{flag}: {UNTRAINABLE_FLAGS[flag]}, which rlpipe's trainer does not build",
                "train this recipe with Miles (--miles writes its script), or drop the flag from miles.extra_args",
            )
    if flags:
        shown = ", ".join(flags[:6]) + (f" and {len(flags) - 6} more" if len(flags) > 6 else "")
        r.warn(
            "miles.extra_args", f"{len(flags)} Miles/Megatron flag(s) rlpipe runs without (kept for --miles): {shown}"
        )
