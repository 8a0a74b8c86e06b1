"""The preflight plan: where every role runs, how many bytes each GPU holds in each phase, and how long a rollout
takes, from the resolved config alone (no torch, no GPU). `python launch.py ... --plan` prints it; a normal launch
refuses a plan whose phase overflows a GPU (`check_fit`, a config rule) unless cluster.launch_over_plan is set."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from rlpipe.config import Resolved
from rlpipe.config.limits import stage_layers
from rlpipe.plan.gpus import GPUS, RUNTIME_OVERHEAD, Gpu, detect_gpu
from rlpipe.plan.memory import MemoryPlan, human_bytes, memory_plan
from rlpipe.plan.params import ParamCount, count_params
from rlpipe.plan.placement import Slot, placement
from rlpipe.plan.timing import Timing, timing


@dataclass(frozen=True)
class Phase:
    """Bytes one GPU holds in one phase, by part."""

    name: str  # rollout | train | weight sync
    where: str  # which GPU: "trainer rank of stage 0", "engine GPU", "shared GPU (colocated)"
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass(frozen=True)
class Plan:
    gpu_key: str | None
    gpu: Gpu | None
    params: ParamCount
    slots: list[Slot]
    memory: MemoryPlan
    phases: list[Phase]
    timing: Timing | None
    notes: list[str] = field(default_factory=list)

    def overflows(self) -> list[Phase]:
        return [p for p in self.phases if self.gpu is not None and p.total > self.gpu.memory]


def gpu_of(cfg: dict[str, Any], topology: dict[str, Any]) -> str | None:
    """cluster.gpu, else the GPU nvidia-smi reports when the run is on CUDA; None on CPU."""
    if cfg["cluster"]["gpu"] is not None:
        return cfg["cluster"]["gpu"]
    return detect_gpu() if topology.get("device") == "cuda" else None


def plan_of(run: Resolved) -> Plan:
    """The plan of a resolved run, on the GPU model it names or this machine has."""
    cfg, topology = run.cfg.model_dump(), run.topology.model_dump()
    return make_plan(cfg, topology, gpu_of(cfg, topology))


def make_plan(cfg: dict[str, Any], topology: dict[str, Any], gpu_key: str | None) -> Plan:
    gpu = GPUS[gpu_key] if gpu_key else None
    memory = memory_plan(cfg, topology, gpu)
    phases = _phases(cfg, memory)
    engine = memory.engine
    notes = list(memory.notes)
    if gpu is None:
        notes.append("no GPU model (cluster.gpu, or a visible GPU): bytes are shown, nothing is checked against a GPU")
    if engine is not None and engine.concurrent < 1:
        notes.append(
            f"one sample of {engine.sequence_tokens} tokens does not fit the KV pool ({engine.kv_tokens} tokens)"
        )
    times = timing(cfg, topology, gpu, engine) if gpu is not None else None
    return Plan(gpu_key, gpu, count_params(cfg["model"], 1), placement(cfg, topology), memory, phases, times, notes)


def _phases(cfg: dict[str, Any], memory: MemoryPlan) -> list[Phase]:
    cl = cfg["cluster"]
    t, e = memory.busiest, memory.engine
    colocated = cl["colocate"] and e is not None
    trainer = f"trainer GPU (pipeline stage {t.stage}, {t.layers} layers)"
    train = {
        "weights": t.weights,
        "gradients": t.grads,
        "optimizer": t.optimizer,
        "critic state": t.critic,
        "activations": t.activations,
        ("log-prob head" if t.logits >= t.recompute else "recomputed layers"): t.transient,
        "CUDA runtime": t.overhead,
    }
    sync = {"weights": t.weights, "gradients": t.grads, "optimizer": t.optimizer, "critic state": t.critic}
    sync["sync bucket"] = memory.bucket
    sync["CUDA runtime"] = t.overhead
    if e is None:
        return [Phase("train", trainer, train), Phase("weight sync", trainer, sync)]
    engine = {
        "engine weights": e.weights,
        "KV cache": e.kv_pool,
        "SGLang reserve": e.reserved,
        "CUDA runtime": e.context,
    }
    if not colocated:
        return [
            Phase("rollout", "engine GPU", engine),
            Phase("train", trainer, train),
            Phase("weight sync", trainer, sync),
        ]
    shared = "shared GPU (colocated)"
    rollout = dict(engine)
    if not cl["offload_train"]:  # both derived by the resolver (= colocate unless set)
        rollout |= {"trainer weights": t.weights, "trainer gradients": t.grads, "trainer optimizer": t.optimizer}
        rollout["critic state"] = t.critic
    if not cl["offload_rollout"]:
        train |= {"engine weights": e.weights, "KV cache": e.kv_pool}
    sync |= {"engine weights": e.weights}
    return [Phase("rollout", shared, rollout), Phase("train", shared, train), Phase("weight sync", shared, sync)]


# ------------------------------------------------------------------------------------------- refusing a misfit
FIX_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("perf.tensor_parallel", "double"),
    ("perf.pipeline_parallel", "double"),
    ("perf.context_parallel", "double"),
    ("perf.recompute_granularity", "full"),
    ("perf.max_tokens_per_gpu", "halve"),
    ("perf.micro_batch_size", "halve"),
    ("perf.use_distributed_optimizer", "true"),
    ("cluster.offload_train", "true"),
    ("cluster.offload_rollout", "true"),
    ("cluster.actor_num_nodes", "double"),
    ("sglang.rollout_num_gpus_per_engine", "double"),
    ("sglang.mem_fraction_static", "lower"),
)


def ranked_fixes(cfg: dict[str, Any], topology: dict[str, Any], gpu_key: str, phase: Phase) -> list[str]:
    """Single changes that shrink the overflowing phase, most effective first, each with the bytes it saves;
    changes Megatron or the layout would refuse are left out."""
    found = []
    for key, how in FIX_CANDIDATES:
        changed = _apply(cfg, key, how)
        if changed is None:
            continue
        new_cfg, value = changed
        new_topology = _topology(new_cfg, topology)
        if new_topology is None:
            continue
        after = next((p for p in make_plan(new_cfg, new_topology, gpu_key).phases if p.name == phase.name), None)
        if after is not None and after.total < phase.total:
            found.append((phase.total - after.total, f"{key}={value} (-{human_bytes(phase.total - after.total)})"))
    return [text for _, text in sorted(found, key=lambda f: -f[0])]


def _apply(cfg: dict[str, Any], key: str, how: str) -> tuple[dict[str, Any], Any] | None:
    group, leaf = key.split(".")
    old = cfg[group][leaf]
    if how == "double":
        value = (old or 1) * 2
    elif how == "halve":
        if not old or old < 2 or (leaf == "max_tokens_per_gpu" and not cfg["perf"]["use_dynamic_batch_size"]):
            return None
        if leaf == "micro_batch_size" and cfg["perf"]["use_dynamic_batch_size"]:
            return None
        value = old // 2
    elif how == "lower":
        if old is None or cfg["rollout"]["engine"] != "sglang":
            return None
        value = round(old - 0.1, 2)
    elif how == "full":
        value = None if old == "full" else "full"
    else:
        value = True if not old else None
    if value is None or (leaf == "rollout_num_gpus_per_engine" and cfg["rollout"]["engine"] != "sglang"):
        return None
    new = copy.deepcopy(cfg)
    new[group][leaf] = value
    if leaf == "tensor_parallel":
        new["perf"]["sequence_parallel"] = True
        if cfg["perf"]["expert_tensor_parallel"] == old:
            new["perf"]["expert_tensor_parallel"] = value
    if leaf == "actor_num_nodes" and cfg["cluster"]["colocate"]:
        return None  # colocated engines follow the trainer's GPUs; the layout rules would change too
    return new, value


def _topology(cfg: dict[str, Any], old: dict[str, Any]) -> dict[str, Any] | None:
    """The derived layout of a changed config, or None when Megatron would refuse it."""
    model, pf, cl = cfg["model"], cfg["perf"], cfg["cluster"]
    actor = cl["actor_num_nodes"] * cl["actor_num_gpus_per_node"]
    tp, pp, cp = pf["tensor_parallel"], pf["pipeline_parallel"], pf["context_parallel"]
    if actor % (tp * pp * cp) or model["num_attention_heads"] % tp:
        return None
    if (model["num_query_groups"] or model["num_attention_heads"]) % tp:
        return None
    if (
        stage_layers(
            model["num_layers"], pp, pf["decoder_first_pipeline_num_layers"], pf["decoder_last_pipeline_num_layers"]
        )
        is None
    ):
        return None
    new = dict(old, actor_gpus=actor, data_parallel=actor // (tp * pp * cp))
    if cfg["rollout"]["engine"] == "sglang":
        per_engine = cfg["sglang"]["rollout_num_gpus_per_engine"]
        if old["rollout_gpus"] % per_engine:
            return None
        new["num_engines"] = old["rollout_gpus"] // per_engine
    return new


def check_fit(r: Any) -> None:
    """Config rule: refuse a run whose plan overflows a GPU (exit 2 before Ray or torch), naming the GPU and phase
    and the fixes ranked by effect; cluster.launch_over_plan=true launches anyway (a warning)."""
    gpu_key = gpu_of(r.d, r.topology) if r.topology else None
    if gpu_key is None or not r.topology or r.topology.get("device") != "cuda":
        return
    plan = make_plan(r.d, r.topology, gpu_key)
    for phase in plan.overflows():
        gpu = GPUS[gpu_key]
        message = (
            f"the {phase.name} phase needs {human_bytes(phase.total)} on the {phase.where} of a {gpu.name} "
            f"({human_bytes(gpu.memory)}): " + ", ".join(f"{k} {human_bytes(v)}" for k, v in phase.parts.items() if v)
        )
        if r.get("cluster.launch_over_plan") or not r.check_paths:  # an override, or only printing (--plan)
            r.warn("cluster.gpu", message + (" (launching anyway)" if r.check_paths else ""))
            continue
        fixes = ranked_fixes(r.d, r.topology, gpu_key, phase)
        fix = "; ".join([*fixes[:5], "or cluster.launch_over_plan=true to launch anyway (python launch.py ... --plan)"])
        r.problem("cluster.gpu", message, fix, gpu_key)


__all__ = ["RUNTIME_OVERHEAD", "Plan", "check_fit", "gpu_of", "make_plan", "plan_of"]
