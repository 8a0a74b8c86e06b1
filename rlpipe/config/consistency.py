"""Config rules of train-inference consistency: the off-policy correction and low-precision rollout/training.

Correction (algo.*): use_tis turns the engine-vs-trainer importance correction on; tis_level and tis_mode pick
TIS, IcePop or MIS and mean nothing without it. policy_loss=cispo replaces PPO's clipped surrogate; it
combines with every correction, but not with GSPO's sequence ratio or PPO's dual clip.

Routing replay (algo.use_rollout_routing_replay) needs an MoE model.

Precision: perf.train_quantization and sglang.rollout_quantization, with Miles' rules: MXFP8 training needs
MXFP8 rollout (the engine must sample from what the trainer computes), FP8 and MXFP8 rollout exclude each other
(a checkpoint already in FP8 is FP8 rollout), and the reference model is never quantized (its KL anchor would
move). Quantized GEMMs run on GPUs only (Transformer Engine for training, SGLang's kernels for rollout): on CPU
they are refused here, not emulated.
"""

from __future__ import annotations

from pathlib import Path

from rlpipe.config.hf import read_hf_config
from rlpipe.config.state import Resolver

# SGLang's --quantization name for each rollout format (python/sglang/srt/server_args.py QUANTIZATION_CHOICES)
SGLANG_QUANTIZATION = {"fp8": "fp8", "mxfp8": "mxfp8", "nvfp4": "modelopt_fp4"}


def fp8_checkpoint(folder: str) -> bool:
    """Whether an HF folder holds FP8 weights (its quantization_config says so, or its name does)."""
    hf = read_hf_config(folder) or {}
    quant = hf.get("quantization_config") or {}
    return "fp8" in Path(folder).name.lower() or str(quant.get("quant_method", "")).lower() == "fp8"


def correction(r: Resolver) -> None:
    al = r.d["algo"]
    if not al["use_tis"]:
        for key, default in (("tis_level", "token"), ("tis_mode", "truncate")):
            if al[key] != default:
                r.problem(
                    f"algo.{key}",
                    "picks how the engine-vs-trainer correction works, but the correction is off",
                    f"algo.use_tis=true, or drop algo.{key}",
                    al[key],
                )
    elif al["tis_clip_low"] >= al["tis_clip"]:
        r.problem(
            "algo.tis_clip_low",
            f"must lie below algo.tis_clip={al['tis_clip']}: the ratio is kept within [tis_clip_low, tis_clip]",
            "e.g. algo.tis_clip_low=0.5 algo.tis_clip=2.0",
            al["tis_clip_low"],
        )
    if al["policy_loss"] == "cispo":
        if al["loss_type"] != "policy_loss":
            r.problem(
                "algo.policy_loss",
                f"cispo is an RL policy loss; loss_type={al['loss_type']} does not use it",
                "algo.loss_type=policy_loss, or algo.policy_loss=ppo",
                "cispo",
            )
        if al["advantage_estimator"] == "gspo":
            r.problem(
                "algo.policy_loss",
                "cispo weights each token by its own ratio; gspo uses one ratio per sequence",
                "algo.advantage_estimator=grpo with cispo, or algo.policy_loss=ppo with gspo",
                "cispo",
            )
        if al["eps_clip_c"] is not None:
            r.problem(
                "algo.eps_clip_c",
                "dual clip bounds PPO's surrogate; cispo has no surrogate to bound",
                "drop algo.eps_clip_c, or algo.policy_loss=ppo",
                al["eps_clip_c"],
            )


def routing_replay(r: Resolver) -> None:
    if r.get("algo.use_rollout_routing_replay") and not r.get("model.num_experts"):
        r.problem(
            "algo.use_rollout_routing_replay",
            "replays the experts the engine routed each token to, but the model is dense (model.num_experts unset)",
            "drop algo.use_rollout_routing_replay, or train an MoE model (e.g. a qwen3_moe checkpoint)",
            True,
        )


def precision(r: Resolver) -> None:
    train, rollout = r.get("perf.train_quantization"), r.get("sglang.rollout_quantization")
    hf, ref = r.get("ckpt.hf_checkpoint"), r.get("ckpt.ref_load")
    fp8_weights = bool(hf) and fp8_checkpoint(hf)
    if train == "mxfp8" and rollout != "mxfp8":
        r.problem(
            "perf.train_quantization",
            f"MXFP8 training needs MXFP8 rollout (sglang.rollout_quantization is {rollout}): the engine must "
            "sample from the numerics the trainer computes",
            "sglang.rollout_quantization=mxfp8",
            train,
        )
    if rollout == "mxfp8" and fp8_weights:
        r.problem(
            "sglang.rollout_quantization",
            f"FP8 and MXFP8 rollout exclude each other, and ckpt.hf_checkpoint={hf} is already FP8",
            "point ckpt.hf_checkpoint at the BF16 weights, or drop sglang.rollout_quantization",
            rollout,
        )
    extra = r.get("sglang.extra").get("quantization")
    if rollout and extra and extra != SGLANG_QUANTIZATION[rollout]:
        r.problem(
            "sglang.extra.quantization",
            f"contradicts sglang.rollout_quantization={rollout} (SGLang's {SGLANG_QUANTIZATION[rollout]})",
            "keep one of them",
            extra,
        )
    if ref and fp8_checkpoint(ref):
        r.problem(
            "ckpt.ref_load",
            "points at an FP8 checkpoint; the reference must stay BF16 or the KL anchor silently changes",
            "point ckpt.ref_load at the BF16 weights (FP8 belongs in ckpt.hf_checkpoint)",
            ref,
        )
    if r.get("cluster.accelerator") == "cpu":
        for key, value in (("perf.train_quantization", train), ("sglang.rollout_quantization", rollout)):
            if value:
                r.problem(key, f"{value} GEMMs run on NVIDIA GPUs only; this run is on CPU", f"drop {key}", value)
        return
    if train:
        r.problem(
            "perf.train_quantization",
            f"{train} training needs Transformer Engine's quantized GEMMs, which rlpipe's trainer does not drive "
            "yet (the rules above still check the config for the Miles export)",
            "drop perf.train_quantization (train in perf.bf16), or export with --miles and run it under Miles",
            train,
        )
    if r.get("rollout.engine") == "hf" and rollout:
        r.problem(
            "sglang.rollout_quantization",
            "quantized rollout is SGLang's; the in-process HF engine runs the checkpoint's own dtype",
            "rollout.engine=sglang, or drop sglang.rollout_quantization",
            rollout,
        )
    if r.get("rollout.engine") == "sglang" and (fp8_weights or rollout) and not r.get("algo.use_tis"):
        key = "sglang.rollout_quantization" if rollout else "ckpt.hf_checkpoint"
        r.warn(key, f"{(rollout or 'fp8').upper()} rollout without algo.use_tis: the precision mismatch is uncorrected")
