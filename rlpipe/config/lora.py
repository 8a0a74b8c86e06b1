"""Config rules of LoRA (`lora.*`, Miles' --lora-* flags): which projections get adapters, and what LoRA combines with.

Adapters go on HF's projection names (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj, or all-linear), the
names peft and SGLang use, so an adapter trained here loads there unchanged. torch-free: the config phase imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlpipe.config.state import Resolver

HF_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def projections(target_modules: str, exclude_modules: str | None = None) -> tuple[str, ...]:
    """The projections a comma list (or all-linear) names, less the excluded ones, in HF_PROJECTIONS order; a
    ValueError names any other name."""

    def names(text: str) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()]

    chosen = HF_PROJECTIONS if target_modules.strip() == "all-linear" else tuple(names(target_modules))
    excluded = names(exclude_modules or "")
    unknown = [n for n in (*chosen, *excluded) if n not in HF_PROJECTIONS]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a projection; use all-linear or a comma list of "
                         f"{','.join(HF_PROJECTIONS)}")  # fmt: skip
    return tuple(n for n in HF_PROJECTIONS if n in chosen and n not in excluded)


def rules(r: Resolver) -> None:
    lo = r.d["lora"]
    if not lo["rank"]:
        if lo["adapter_path"]:
            r.problem("lora.rank", "lora.adapter_path is set but LoRA is off", "lora.rank=<the adapter's rank>", 0)
        return
    try:
        chosen = projections(lo["target_modules"], lo["exclude_modules"])
    except ValueError as err:
        r.problem("lora.target_modules", str(err), "lora.target_modules=all-linear", lo["target_modules"])
        return
    if not chosen:
        r.problem("lora.exclude_modules", "leaves no projection to adapt", "exclude fewer projections")
    moe_mlp = [n for n in chosen if n in MLP_PROJECTIONS] if r.get("model.num_experts") else []
    if moe_mlp:
        r.problem(
            "lora.target_modules",
            f"{','.join(moe_mlp)}: this MoE model's MLP projections are experts, which get no adapters yet",
            "lora.target_modules=q_proj,k_proj,v_proj,o_proj (attention only)",
            lo["target_modules"],
        )
    if r.get("algo.advantage_estimator") == "ppo":
        r.problem("lora.rank", "LoRA is built for the policy only, not ppo's critic", "lora.rank=0, or another "
                  "advantage_estimator", lo["rank"])  # fmt: skip
    if lo["adapter_path"]:
        _adapter_matches(r, lo)


def _adapter_matches(r: Resolver, lo: dict) -> None:
    """lora.adapter_path is a peft adapter folder of this rank and alpha."""
    config = Path(lo["adapter_path"]) / "adapter_config.json"
    if not config.is_file():
        r.path_problem("lora.adapter_path", "no adapter_config.json there (not a peft adapter folder)",
                       "point it at a folder peft's save_pretrained wrote", lo["adapter_path"])  # fmt: skip
        return
    saved = json.loads(config.read_text())
    for key, ours in (("r", "rank"), ("lora_alpha", "alpha")):
        if saved.get(key) is not None and float(saved[key]) != float(lo[ours]):
            r.problem(f"lora.{ours}", f"the adapter in lora.adapter_path has {key}={saved[key]}",
                      f"lora.{ours}={saved[key]}", lo[ours])  # fmt: skip
