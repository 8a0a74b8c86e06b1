"""The plan as Markdown (for people: `--plan`) and as JSON (for tools: `--plan=json`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rlpipe.plan import Plan
from rlpipe.plan.memory import human_bytes


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n:,}"


def to_markdown(plan: Plan) -> str:
    gpu = f"{plan.gpu.name}, {human_bytes(plan.gpu.memory)}" if plan.gpu else "none given (cluster.gpu)"
    lines = [f"# rlpipe plan ({gpu})", ""]
    p = plan.params
    lines += [
        f"Model: {_count(p.total)} parameters ({_count(p.active)} active per token), {p.num_layers} layers.",
        "",
        "## Placement",
        "",
        "| node | GPU | trainer | engine |",
        "|---:|---:|---|---|",
    ]
    lines += [f"| {s.node} | {s.gpu} | {s.trainer or '-'} | {s.engine or '-'} |" for s in plan.slots]
    lines += [
        "",
        "Addresses: each process group's master is its rank 0's node; ports are asked of the OS at start.",
        "",
        "## Memory per GPU",
        "",
    ]
    lines += ["| phase | GPU | total | " + ("fits" if plan.gpu else "") + " | parts |", "|---|---|---:|---|---|"]
    for phase in plan.phases:
        fits = "" if plan.gpu is None else ("yes" if phase.total <= plan.gpu.memory else "**no**")
        parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in phase.parts.items() if v)
        lines.append(f"| {phase.name} | {phase.where} | {human_bytes(phase.total)} | {fits} | {parts} |")
    lines.append("")
    lines.append(
        "Trainer stages: "
        + "; ".join(f"stage {t.stage}: {t.layers} layers, {human_bytes(t.total)}" for t in plan.memory.train)
    )
    if plan.memory.host:
        held = ", ".join(f"{k} {human_bytes(v)}" for k, v in plan.memory.host.items())
        lines.append(f"Host memory per trainer rank: {held}.")
    if (e := plan.memory.engine) is not None:
        source = "SGLang's default for this GPU" if e.mem_fraction_derived else "sglang.mem_fraction_static"
        lines += [
            "",
            f"Engine: mem_fraction_static {e.mem_fraction_static} ({source}); KV pool {human_bytes(e.kv_pool)} = "
            f"{e.kv_tokens:,} tokens; a sample is {e.sequence_tokens:,} tokens, so {e.concurrent:,} run at once; "
            f"a rollout sends {e.sent:,} to each engine.",
        ]
    if (t := plan.timing) is not None:
        gpus = max(1, len(plan.slots))
        lines += [
            "",
            "## Time per rollout (upper bound: every response at max_response_len)",
            "",
            f"- generation: {t.decode_steps:,} decode steps per engine, {t.decode_s:,.1f} s "
            f"(at {t.decode_efficiency:.0%} of HBM bandwidth, an assumption)",
            f"- training: {t.train_tokens:,} tokens, {t.train_flops / 1e15:,.1f} PFLOP, {t.train_s:,.1f} s "
            f"(at {t.train_efficiency:.0%} of bf16 peak, measured on an H200)",
            f"- rollout: {t.rollout_s:,.1f} s, {t.tokens_per_s_per_gpu(gpus):,.0f} trained tokens/s per GPU",
        ]
    if plan.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in plan.notes)]
    return "\n".join(lines) + "\n"


def to_json(plan: Plan) -> str:
    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {k: encode(v) for k, v in dataclasses.asdict(value).items()}
        return value

    body = encode(plan)
    body["params"] |= {"total": plan.params.total, "active": plan.params.active}
    body["phases"] = [{"name": p.name, "where": p.where, "bytes": p.total, "parts": p.parts} for p in plan.phases]
    body["fits"] = None if plan.gpu is None else not plan.overflows()
    return json.dumps(body, indent=2) + "\n"
