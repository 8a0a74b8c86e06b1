"""What this version and this environment can run: a resolved config that asks for a mode not built, a model
rlpipe's trainer does not build (flags an imported Miles script keeps in miles.extra_args), or an optional library
that is not installed, is refused in the config phase with the key, why, and what to do instead.

Missing libraries are about the machine, and an architecture rlpipe cannot train is still worth printing or
exporting to Miles: when the config is only printed (`--cfg job`, `--miles`) both are warnings.
"""

from __future__ import annotations

import importlib.util
import re

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
    "--fp8-format": "FP8 training (rlpipe trains in bf16 or fp32; FP8 rollout is ckpt.hf_checkpoint's business)",
    "--fp16": "fp16 training (rlpipe trains in bf16 or fp32)",
    "--custom-generate-function-path": "a custom generate function (the rollout is the script's own Python against "
    "Miles' API, often multi-turn with its reward inside; rlpipe runs rollout.rollout_function_path plug-ins)",
    "--use-opd": "Miles' on-policy distillation term (a teacher KL added to the base estimator's advantages; "
    "rlpipe's algo.advantage_estimator=on_policy_distillation is pure distillation)",
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
    if cfg["rollout"]["engine"] == "sglang" and not (installed("sglang_router") and installed("aiohttp")):
        r.path_problem(
            "rollout.engine", "the SGLang router and client are not installed", "pip install 'rlpipe[sglang]'"
        )
    if cfg["cluster"]["backend"] == "ray" and not installed("ray"):
        r.path_problem("cluster.backend", "Ray is not installed in this environment", "pip install 'rlpipe[ray]'")
    if cfg["log"]["wandb"] and not installed("wandb"):
        r.path_problem("log.wandb", "wandb is not installed", "pip install wandb, or log.wandb=false")
    if cfg["algo"]["loss_type"] == "custom_loss":
        r.problem(
            "algo.loss_type",
            "custom_loss is not built yet",
            "algo.loss_type=policy_loss (RL) or sft_loss (the SFT job)",
            "custom_loss",
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


def moe_on_every_layer(value: list[str]) -> bool:
    """Whether Megatron's --moe-layer-freq value puts MoE on every layer: `1`, or a pattern such as
    `[1,1,1]` or `[0]*0+[1]*48` of ones only (terms `[a,b,...]` or `[a]*n` joined by `+`, as Megatron evaluates)."""
    text = "".join(value).replace(" ", "").strip("'\"")
    if text.isdigit():
        return int(text) == 1
    pattern: list[str] = []
    for term in text.split("+"):
        if not (m := re.fullmatch(r"\[([\d,]*)\](?:\*(\d+))?", term)):
            return False
        pattern += [d for d in m[1].split(",") if d] * (int(m[2]) if m[2] is not None else 1)
    return bool(pattern) and set(pattern) == {"1"}


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
        if word == "--moe-layer-freq" and not moe_on_every_layer(words[i + 1 : i + 2]):
            r.path_problem(
                "miles.extra_args",
                f"--moe-layer-freq {' '.join(words[i + 1 : i + 2])}: MoE on some layers only, which rlpipe's trainer "
                "does not build (every layer alike)",
                "train this recipe with Miles (--miles writes its script), or import a script whose MoE is on every "
                "layer",
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
