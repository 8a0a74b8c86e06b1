"""Resolution: every derived value, computed once, each with its reason.

`resolve(cfg)` takes the validated-but-unresolved RunConfig and returns a `Resolved`: the final frozen
RunConfig (every `None` that is derivable filled), the placement `Topology`, the list of derivations
(`rollout.global_batch_size = 128  (derived: batch_size 16 x n_samples 8 / num_steps_per_rollout 1)`)
and warnings. Every rule is a small function below, run in order against one mutable dict; problems are
collected across all rules and raised together. Nothing here imports torch, Ray or SGLang.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rlpipe.config import consistency, limits, lora, sft
from rlpipe.config.errors import ConfigError
from rlpipe.config.hf import hf_architecture, read_hf_config
from rlpipe.config.identity import same_run
from rlpipe.config.paths import input_files, labels_for_reward, output_paths, run_folder_name, weights_folders
from rlpipe.config.schema import EvalDataset, RunConfig
from rlpipe.config.state import Derivation, Resolver
from rlpipe.config.support import supported
from rlpipe.config.validation import problems_from_validation


class Topology(BaseModel):
    """Placement numbers derived from the cluster and perf groups."""

    model_config = ConfigDict(frozen=True)

    device: str  # "cpu" | "cuda"
    actor_gpus: int  # trainer ranks (GPUs; processes on CPU)
    data_parallel: int  # actor_gpus / (TP x PP x CP)
    rollout_gpus: int  # GPUs serving rollout (= actor_gpus under colocate; 0 for the in-process HF engine on CPU)
    num_engines: int  # rollout engines (rollout_gpus / GPUs per engine; 1 in-process engine on CPU)


@dataclass(frozen=True)
class Resolved:
    """The resolved run: what every other module receives."""

    cfg: RunConfig
    topology: Topology
    derivations: tuple[Derivation, ...]
    warnings: tuple[str, ...]

    def reason(self, key: str) -> str | None:
        return next((d.reason for d in self.derivations if d.key == key), None)


# ------------------------------------------------------------------------------------------------ rules
def _accelerator(r: Resolver) -> None:
    if r.get("cluster.accelerator") == "auto":
        has_gpu = limits.gpu_visible()
        r.derive(
            "cluster.accelerator",
            "cuda" if has_gpu else "cpu",
            "auto: /dev/nvidiactl " + ("present" if has_gpu else "absent"),
        )


DEMO_CHECKPOINT_PREFIX = "tiny-qwen2-"  # the demo's checkpoints in demo.cache_dir: tiny-qwen2-<architecture hash>


def demo_paths(demo: dict[str, Any], model: dict[str, Any], conversations: bool = False) -> tuple[Path, Path, Path]:
    """(checkpoint folder, train jsonl, eval jsonl) the demo builds; the checkpoint is named by a hash of the
    architecture and seed, the data files by `rlpipe.data.tasks.task_dataset_paths` (`conversations`: the SFT
    job's)."""
    from rlpipe.data.tasks import task_dataset_paths

    cache = Path(demo["cache_dir"])
    arch = json.dumps({k: v for k, v in sorted(model.items()) if k != "name"}, sort_keys=True)
    model_hash = hashlib.sha256(f"{arch}|{demo['seed']}".encode()).hexdigest()[:10]
    train, evalset = task_dataset_paths(
        cache / "data",
        demo["task"],
        demo["n_train"],
        demo["n_eval"],
        demo["seed"],
        demo["digits"],
        tools=demo["tools"],
        conversations=conversations,
    )
    return cache / f"{DEMO_CHECKPOINT_PREFIX}{model_hash}", train, evalset


DEMO_ARCH_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "vocab_size",
    "rotary_base",
    "norm_epsilon",
    "max_position_embeddings",
)


def _demo(r: Resolver) -> None:
    demo = r.d["demo"]
    if demo is None:
        return
    missing = [k for k in DEMO_ARCH_FIELDS if r.d["model"][k] is None]
    for k in missing:
        r.problem(
            f"model.{k}",
            "the demo builds its tiny model from the model group, which leaves this unset",
            "use model=tiny, or set it",
        )
    if missing:
        return
    conversations = sft.is_sft(r)
    ckpt, train, evalset = demo_paths(demo, r.d["model"], conversations)
    why = f"built offline by the demo (task {demo['task']}) on first run, cached in {demo['cache_dir']}"
    # The demo writes its task files next to each other; a user's own data file would be ignored or written over.
    user_data = {"rollout.prompt_data": r.get("rollout.prompt_data"), "eval.datasets": list(r.d["eval"]["datasets"])}
    for key, given in user_data.items():
        if given:
            r.problem(
                key,
                f"the demo (task {demo['task']}) trains and evaluates on data it writes itself, so yours would "
                "not be used",
                "experiment=none to train on your own data (see conf/experiment/none.yaml), or drop this setting",
                given,
            )
    if r.get("ckpt.hf_checkpoint") is None:  # a given one is a warm start: checked as any model folder
        r.derive("ckpt.hf_checkpoint", str(ckpt), why)
    r.derive("rollout.prompt_data", str(train), why)
    r.derive("eval.datasets", {demo["task"]: {"path": str(evalset)}}, why)
    if r.get("rollout.rm_type") is None and r.get("rollout.custom_rm_path") is None:
        r.derive("rollout.rm_type", "exact_match", "demo tasks are scored by exact match up to EOS")
    if conversations:
        r.derive("rollout.input_key", "messages", f"{why}: conversations for the SFT job")
    _demo_vocabulary(r)
    _demo_add_learns(r)


DEMO_CALCULATOR_ENV = "rlpipe.rollout.env.calculator_env"


def _demo_vocabulary(r: Resolver) -> None:
    """The tiny model's vocabulary is the demo tokenizer's; the tool demo's adds the tool tokens and its task
    needs the calculator environment."""
    from rlpipe.data.tiny_model import TOOL_VOCAB, VOCAB

    demo, model = r.d["demo"], r.d["model"]
    if demo["tools"]:
        if demo["task"] != "add":
            r.problem("demo.tools", f"only the add task has a tool (the calculator), not {demo['task']!r}",
                      "demo.task=add, or demo.tools=false", True)  # fmt: skip
        if r.get("rollout.env") is None:
            r.derive("rollout.env", DEMO_CALCULATOR_ENV, "the tool demo's model calls a calculator")
    size = len(TOOL_VOCAB if demo["tools"] else VOCAB)
    if model["name"].startswith("tiny") and model["vocab_size"] != size:
        tokens = "with the tool tokens " if demo["tools"] else ""
        r.problem("model.vocab_size", f"the demo's tokenizer {tokens}has {size} tokens",
                  f"model.vocab_size={size}", model["vocab_size"])  # fmt: skip


# The add task on the freshly built tiny model learns only within these (measured: conf/experiment/tiny-add.yaml).
ADD_MAX_DIGITS, ADD_MIN_WARMUP_STEPS = 2, 500


def _demo_add_learns(r: Resolver) -> None:
    """Warn when a demo run of the add task will learn nothing: exact match scores a wrong sum 0, and GRPO learns
    nothing from a group whose rewards are all equal, so RL needs a warm-up that already gets some sums right.
    3-digit sums are beyond the tiny model (its warm-up memorises the 800 training sums of 10^6 and gets held-out
    ones wrong, even after 1500 steps); 2-digit ones need about 500 warm-up steps, not tiny-cpu's 40."""
    demo, warmup = r.d["demo"], r.d["warmup"]
    steps = warmup["steps"] if warmup else 0
    if demo["task"] != "add" or r.d["model"]["name"] != "tiny" or demo["tools"]:  # with a calculator it learns
        return
    if demo["digits"] > ADD_MAX_DIGITS or steps < ADD_MIN_WARMUP_STEPS:
        r.warn(
            "demo.task",
            f"add with {demo['digits']} digits and {steps} warm-up steps learns nothing on the tiny model (every "
            "sum wrong, every reward 0, no signal for GRPO); experiment=tiny-add runs 2-digit sums with 800 "
            "warm-up steps (sampled reward ~0.7 -> ~0.9 in about a minute)",
        )


def _model_from_hf(r: Resolver) -> None:
    path = r.get("ckpt.hf_checkpoint")
    hf = read_hf_config(path) if path else None
    if hf is None:  # no folder or no readable config.json: rlpipe.config.paths.input_files says which
        return
    model = r.d["model"]
    for key, theirs in hf_architecture(hf).items():
        ours = model.get(key)
        if ours is None:
            r.derive(f"model.{key}", theirs, f"from {path}/config.json")
        elif key == "vocab_size" and ours >= theirs:
            continue  # a padded vocabulary (Megatron rounds it up) is not drift
        elif ours != theirs and not (isinstance(ours, float) and abs(ours - theirs) <= 1e-12 * abs(theirs)):
            r.problem(
                f"model.{key}", f"drifts from {path}/config.json, which says {theirs!r}", f"model.{key}={theirs}", ours
            )


def _dataset_rows(path: str) -> int | None:
    """Rows in a prompt file, cheaply (line count / parquet footer); None if it cannot be read yet."""
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(p).metadata.num_rows
    with p.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


KNOBS = ("batch_size", "n_samples", "global_batch_size", "num_steps_per_rollout")


def _batch_knobs(r: Resolver) -> None:
    """The four-knob invariant: batch_size x n_samples == global_batch_size x num_steps_per_rollout."""
    ro = r.d["rollout"]
    given = {k: ro[k] for k in KNOBS if ro[k] is not None}
    missing = [k for k in KNOBS if k not in given]
    if len(missing) > 1:
        r.problem(
            "rollout",
            f"{len(given)} of the four batch knobs are set; missing: {', '.join(missing)}",
            "set three of batch_size, n_samples, global_batch_size, num_steps_per_rollout; the usual choice "
            "is rollout.num_steps_per_rollout=1 (strict on-policy) and the fourth is derived",
        )
        return
    bs, n, gbs, steps = (ro[k] for k in KNOBS)
    if not missing:
        if bs * n != gbs * steps:
            r.problem(
                "rollout.global_batch_size",
                f"batch_size {bs} x n_samples {n} = {bs * n} samples produced per rollout, but "
                f"global_batch_size {gbs} x num_steps_per_rollout {steps} = {gbs * steps} consumed",
                "make the products equal, or set one knob to null to derive it (e.g. "
                "rollout.num_steps_per_rollout=null)",
            )
        return
    (key,) = missing
    if key == "global_batch_size":
        numerator, denominator = bs * n, steps
        arithmetic = f"batch_size {bs} x n_samples {n} / num_steps_per_rollout {steps}"
    elif key == "num_steps_per_rollout":
        numerator, denominator = bs * n, gbs
        arithmetic = f"batch_size {bs} x n_samples {n} / global_batch_size {gbs}"
    elif key == "batch_size":
        numerator, denominator = gbs * steps, n
        arithmetic = f"global_batch_size {gbs} x num_steps_per_rollout {steps} / n_samples {n}"
    else:
        numerator, denominator = gbs * steps, bs
        arithmetic = f"global_batch_size {gbs} x num_steps_per_rollout {steps} / batch_size {bs}"
    if numerator % denominator:
        r.problem(
            f"rollout.{key}",
            f"cannot be derived: {arithmetic} = {numerator / denominator:g} is not a "
            "whole number (Miles would floor it silently and drop samples)",
            "change one of the other three knobs so the division is exact",
        )
        return
    r.derive(f"rollout.{key}", numerator // denominator, f"derived: {arithmetic}")


def _num_rollout(r: Resolver) -> None:
    ro = r.d["rollout"]
    if ro["num_rollout"] is not None and ro["num_epoch"] is not None:
        r.problem("rollout.num_epoch", "both num_rollout and num_epoch are set", "set only one (the other: null)")
    elif ro["num_rollout"] is None and ro["num_epoch"] is None:
        r.problem("rollout.num_rollout", "the run length is not set", "rollout.num_rollout=100 or rollout.num_epoch=1")
    elif ro["num_rollout"] is None and ro["batch_size"]:
        demo = r.d["demo"]
        rows = demo["n_train"] if demo else _dataset_rows(ro["prompt_data"] or "")
        if rows is not None and rows < ro["batch_size"]:
            r.problem(
                "rollout.num_epoch",
                f"an epoch of {rows} prompts holds no whole rollout of batch_size {ro['batch_size']}",
                f"rollout.batch_size={rows} or less, or rollout.num_rollout instead of num_epoch",
            )
        elif rows is not None:
            # slime's and Miles' rule: whole rollouts per epoch (a last, partial batch is not one) times epochs.
            per_epoch = rows // ro["batch_size"]
            r.derive(
                "rollout.num_rollout",
                per_epoch * ro["num_epoch"],
                f"derived: {rows} prompts // batch_size {ro['batch_size']} = {per_epoch} rollouts per epoch x "
                f"num_epoch {ro['num_epoch']} (Miles' rule)",
            )


def _lr_schedule(r: Resolver) -> None:
    ro = r.d["rollout"]
    if r.get("optim.lr_decay_iters") is None and ro["num_rollout"] and ro["num_steps_per_rollout"]:
        steps = ro["num_rollout"] * ro["num_steps_per_rollout"]
        r.derive(
            "optim.lr_decay_iters",
            steps,
            f"the whole run: num_rollout {ro['num_rollout']} x num_steps_per_rollout {ro['num_steps_per_rollout']}",
        )


def _colocate(r: Resolver) -> None:
    cl = r.d["cluster"]
    actor_gpus = cl["actor_num_nodes"] * cl["actor_num_gpus_per_node"]
    for key in ("offload_train", "offload_rollout"):
        if cl[key] is None:
            r.derive(
                f"cluster.{key}",
                cl["colocate"],
                "colocate: phases time-slice the same GPUs" if cl["colocate"] else "not colocated",
            )
    if cl["colocate"]:
        if cl["rollout_num_gpus"] is not None and cl["rollout_num_gpus"] != actor_gpus:
            r.warn("cluster.rollout_num_gpus", f"ignored under colocate: rollout uses the {actor_gpus} actor GPUs")
        r.derive(
            "cluster.rollout_num_gpus",
            actor_gpus,
            f"colocate: rollout shares the actor's {cl['actor_num_nodes']} x {cl['actor_num_gpus_per_node']} GPUs",
        )
        if r.get("rollout.mode") == "async":
            r.problem(
                "rollout.mode",
                "async rollout overlaps generation with training, which colocated GPUs cannot do (they time-slice)",
                "rollout.mode=sync, or cluster.colocate=false",
                "async",
            )


def _async(r: Resolver) -> None:
    # Under colocate, _colocate has already rejected async (and offload follows from colocate there).
    if r.get("rollout.mode") == "async" and r.get("cluster.offload_rollout") and not r.get("cluster.colocate"):
        r.problem(
            "cluster.offload_rollout",
            "async rollout keeps the engine generating while the trainer trains; it cannot be offloaded then",
            "cluster.offload_rollout=false, or rollout.mode=sync",
            True,
        )


def _debug(r: Resolver) -> None:
    """Miles' debug modes: one side of the loop alone, and rollout dumps named by rollout id."""
    dbg = r.d["debug"]
    if dbg["load_rollout_data"] and not dbg["train_only"]:
        r.derive("debug.train_only", True, "load_rollout_data: saved rollouts replace generation")
    for key in ("save_rollout_data", "load_rollout_data"):
        path = dbg[key]
        if path is not None and "{rollout_id}" not in path:
            r.problem(
                f"debug.{key}",
                "needs {rollout_id} in the path: one file per rollout",
                f"debug.{key}=" + "'dumps/rollout_{rollout_id}.pkl'",
                path,
            )
    if dbg["train_only"] and not dbg["load_rollout_data"] and not sft.is_sft(r):  # SFT reads its conversations
        r.problem(
            "debug.train_only",
            "train-only runs without an engine and trains on saved rollouts, but none are given",
            "debug.load_rollout_data=<the debug.save_rollout_data path of an earlier run>",
        )
    if dbg["train_only"] and dbg["rollout_only"]:
        r.problem("debug.rollout_only", "rollout-only and train-only exclude each other", "keep one of them")
    # (the SFT job's async is Miles' train_async SFT: the next conversations are read while the trainer trains)
    if (dbg["train_only"] or dbg["rollout_only"]) and r.get("rollout.mode") == "async" and not sft.is_sft(r):
        r.problem(
            "rollout.mode",
            "async overlaps generation with training, and a debug mode runs only one of them",
            "rollout.mode=sync",
            "async",
        )
    if dbg["train_only"] and r.get("eval.interval"):
        skipped = (
            "generation-based evaluation is skipped (the eval loss is not)"
            if sft.is_sft(r)
            else "evaluation is skipped"
        )
        r.warn("eval.interval", f"train-only runs have no engine to evaluate with; {skipped}")


def _weight_sync(r: Resolver) -> None:
    cl = r.d["cluster"]
    if cl["weight_sync"] != "auto":
        if cl["weight_sync"] == "broadcast" and (cl["backend"] == "local" or cl["colocate"]):
            r.problem(
                "cluster.weight_sync",
                "broadcast needs trainer and engines in separate processes (cluster.backend=ray, not colocated)",
                "cluster.weight_sync=tensor",
            )
        return
    if cl["backend"] == "local":
        r.derive("cluster.weight_sync", "tensor", "local backend: the engine is in this process")
    elif cl["colocate"]:
        r.derive("cluster.weight_sync", "tensor", "colocate: tensors handed over on the same devices")
    else:
        r.derive("cluster.weight_sync", "broadcast", "disaggregated: a collective from trainer rank 0 to the engines")


def _sglang(r: Resolver) -> None:
    sg, colocate = r.d["sglang"], r.get("cluster.colocate")
    if sg["mem_fraction_static"] is None and colocate:
        r.derive("sglang.mem_fraction_static", 0.8, "colocate: leave Megatron headroom during init, or it OOMs")
    if colocate:
        # Leading digits of each part, so "0.5.14rc1" and "0.5.13.post1" compare as 0.5.14 and 0.5.13.
        parts = tuple(int(m.group()) for x in sg["version"].split(".")[:3] if (m := re.match(r"\d+", x)))
        if not parts:
            r.problem(
                "sglang.version", "is not a version number", "sglang.version=0.5.23 (major.minor.patch)", sg["version"]
            )
            return
        if parts <= (0, 5, 13):
            name, value = "disable_piecewise_cuda_graph", True
        else:
            name, value = "cuda_graph_backend_prefill", "disabled"
        if name not in sg["extra"]:
            r.derive(
                f"sglang.extra.{name}",
                value,
                f"colocate: piecewise CUDA graphs OOM on NVLS (flag name for SGLang {sg['version']})",
            )


SAMPLING_KEYS = ("input_key", "label_key", "rm_type", "n_samples", "max_response_len", "temperature", "top_p", "top_k")


def _eval_inherit(r: Resolver) -> None:
    """Each eval dataset field: dataset's own, else eval's, else rollout's (n_samples has eval's default)."""
    ev, ro = r.d["eval"], r.d["rollout"]
    for name, ds in ev["datasets"].items():
        full = {**EvalDataset.model_construct().model_dump(), **ds}
        for key in SAMPLING_KEYS:
            if full.get(key) is not None:
                continue
            if ev.get(key) is not None:
                value, source = ev[key], f"eval.{key}"
            elif key == "n_samples":
                value, source = 1, "default"
            else:
                value, source = ro[key], f"rollout.{key}"
            r.derive(f"eval.datasets.{name}.{key}", value, f"inherited from {source}")


def _perf(r: Resolver) -> None:
    pf = r.d["perf"]
    tp, moe = pf["tensor_parallel"], bool(r.get("model.num_experts"))
    if pf["sequence_parallel"] is None:
        # Miles' rule: pair TP > 1 with sequence parallel, which shards the activations TP leaves whole.
        r.derive(
            "perf.sequence_parallel",
            tp > 1,
            "paired with tensor_parallel > 1 (shards the activations TP leaves whole)"
            if tp > 1
            else "tensor_parallel 1",
        )
    elif pf["sequence_parallel"] and tp == 1:
        r.derive("perf.sequence_parallel", False, "tensor_parallel 1: nothing to shard over")
        r.warn("perf.sequence_parallel", "has no effect at tensor_parallel 1")
    elif not pf["sequence_parallel"] and tp > 1 and moe:
        r.problem(
            "perf.sequence_parallel",
            f"a MoE model at tensor_parallel {tp} trains only with sequence parallel (megatron refuses otherwise)",
            "perf.sequence_parallel=true (or leave it unset)",
        )
    elif not pf["sequence_parallel"] and tp > 1:
        r.warn(
            "perf.sequence_parallel",
            "TP > 1 without sequence parallel keeps full activations on every TP rank; budget memory for it",
        )
    if pf["use_dynamic_batch_size"]:
        if pf["max_tokens_per_gpu"] is None:
            r.problem(
                "perf.max_tokens_per_gpu",
                "dynamic batching packs samples under this token budget, which is unset",
                "perf.max_tokens_per_gpu=4608 (or perf.use_dynamic_batch_size=false)",
            )
        else:
            r.derivations.append(
                Derivation(
                    "perf.micro_batch_size",
                    pf["micro_batch_size"],
                    "irrelevant: dynamic batching packs by max_tokens_per_gpu",
                )
            )
            budget = pf["max_tokens_per_gpu"] * pf["context_parallel"]
            longest = r.get("rollout.max_response_len") + (r.get("rollout.max_prompt_len") or 0)
            if longest > budget:
                r.warn(
                    "perf.max_tokens_per_gpu",
                    f"a sample can reach {longest} tokens but one micro-batch holds {pf['max_tokens_per_gpu']} x "
                    f"CP {pf['context_parallel']} = {budget}; such a sample goes alone and may OOM "
                    "(keep rollout.max_response_len <= max_tokens_per_gpu x context_parallel)",
                )
    if pf["recompute_granularity"] == "full" and pf["recompute_method"] is None:
        r.problem("perf.recompute_method", "full recompute needs a method", "perf.recompute_method=uniform")
    num_experts = r.get("model.num_experts")
    if pf["expert_tensor_parallel"] is None:
        r.derive(
            "perf.expert_tensor_parallel",
            tp if num_experts else 1,
            "megatron's default: tensor_parallel" if num_experts else "no experts",
        )
    elif num_experts and pf["expert_parallel"] == 1 and pf["expert_tensor_parallel"] != tp:
        r.problem(
            "perf.expert_tensor_parallel",
            f"differs from tensor_parallel {tp} while expert_parallel is 1: megatron then reduces the experts' "
            "gradients like a dense layer's, over ranks that hold other expert shards or other tokens",
            f"perf.expert_tensor_parallel={tp} (or leave it unset), or perf.expert_parallel > 1",
            pf["expert_tensor_parallel"],
        )
    if num_experts and num_experts % pf["expert_parallel"]:
        r.problem(
            "perf.expert_parallel",
            f"does not divide model.num_experts {num_experts}",
            "choose a divisor of the expert count",
            pf["expert_parallel"],
        )
    if not num_experts and (pf["expert_parallel"] > 1 or pf["expert_tensor_parallel"] > 1):
        r.problem(
            "perf.expert_parallel",
            "expert parallelism needs a MoE model (model.num_experts)",
            "perf.expert_parallel=1 perf.expert_tensor_parallel=1",
        )


def _topology(r: Resolver) -> None:
    cl, pf = r.d["cluster"], r.d["perf"]
    device = r.get("cluster.accelerator")
    actor = cl["actor_num_nodes"] * cl["actor_num_gpus_per_node"]
    model_parallel = pf["tensor_parallel"] * pf["pipeline_parallel"] * pf["context_parallel"]
    if actor % model_parallel:
        r.problem(
            "cluster.actor_num_gpus_per_node",
            f"{cl['actor_num_nodes']} node(s) x {cl['actor_num_gpus_per_node']} GPUs = {actor} actor GPUs, "
            f"not divisible by TP {pf['tensor_parallel']} x PP {pf['pipeline_parallel']} x "
            f"CP {pf['context_parallel']} = {model_parallel}",
            "make the actor GPU count a multiple of it",
        )
        return
    dp = actor // model_parallel
    experts = pf["expert_parallel"] * pf["expert_tensor_parallel"]
    if r.get("model.num_experts") and (actor // pf["pipeline_parallel"]) % experts:
        r.problem(
            "perf.expert_parallel",
            f"EP {pf['expert_parallel']} x expert TP {pf['expert_tensor_parallel']} = {experts} does not divide the "
            f"{actor // pf['pipeline_parallel']} GPUs of one pipeline stage (TP x CP x DP)",
            "choose expert_parallel x expert_tensor_parallel dividing actor GPUs / pipeline_parallel",
        )
    gbs = r.get("rollout.global_batch_size")
    if gbs and gbs % dp:
        r.problem(
            "rollout.global_batch_size",
            f"{gbs} samples do not split evenly over {dp} data-parallel ranks",
            f"use a multiple of {dp}",
            gbs,
        )
    per_engine = r.get("sglang.rollout_num_gpus_per_engine")
    if r.get("rollout.engine") == "hf":
        rollout_gpus, engines = (cl["rollout_num_gpus"] or 0) if not cl["colocate"] else actor, 1
    elif r.get("debug.train_only") and not cl["colocate"]:
        rollout_gpus, engines = 0, 0  # no engine is started (slime/Miles place no rollout GPUs either)
    else:
        rollout_gpus = cl["rollout_num_gpus"]
        if rollout_gpus is None:
            r.problem(
                "cluster.rollout_num_gpus",
                "SGLang engines need GPUs of their own when not colocated",
                "cluster.rollout_num_gpus=4, or cluster.colocate=true",
            )
            return
        if rollout_gpus % per_engine:
            r.problem(
                "cluster.rollout_num_gpus",
                f"{rollout_gpus} rollout GPUs do not split into engines of "
                f"{per_engine} GPUs (sglang.rollout_num_gpus_per_engine)",
                f"use a multiple of {per_engine}",
                rollout_gpus,
            )
            return
        engines = rollout_gpus // per_engine
        if device == "cpu":
            r.problem("rollout.engine", "SGLang serves on GPUs only and this run is on CPU", "rollout.engine=hf")
    r.topology = {
        "device": device,
        "actor_gpus": actor,
        "data_parallel": dp,
        "rollout_gpus": rollout_gpus,
        "num_engines": engines,
    }
    r.derivations.append(
        Derivation("topology.data_parallel", dp, f"derived: {actor} actor GPUs / (TP x PP x CP = {model_parallel})")
    )
    if r.get("rollout.engine") == "sglang":
        r.derivations.append(
            Derivation(
                "topology.num_engines", engines, f"derived: {rollout_gpus} rollout GPUs / {per_engine} GPUs per engine"
            )
        )


GROUP_ESTIMATORS = ("grpo", "gspo", "reinforce_plus_plus_baseline")


def _algo(r: Resolver) -> None:
    al, ro = r.d["algo"], r.d["rollout"]
    if al["eps_clip_high"] is None:
        r.derive("algo.eps_clip_high", al["eps_clip"], "defaults to eps_clip (symmetric clip)")
    lora_base = bool(r.get("lora.rank"))  # LoRA: the frozen base is the reference (adapters off), nothing to load
    if al["use_kl_loss"]:
        if not r.get("ckpt.ref_load") and not lora_base:
            r.problem(
                "ckpt.ref_load",
                "algo.use_kl_loss needs the reference model's weights",
                f"ckpt.ref_load={r.get('ckpt.hf_checkpoint') or '/path/to/ref'} (the HF checkpoint works), "
                "or algo.use_kl_loss=false",
            )
        if al["kl_loss_coef"] == 0:
            r.derivations.append(Derivation("algo.kl_loss_coef", 0.0, "KL is computed and logged only (monitor)"))
        if al["kl_coef"] > 0:
            r.problem(
                "algo.kl_coef",
                "reward-level KL and the KL loss both penalise KL; use one",
                "algo.kl_coef=0 or algo.use_kl_loss=false",
                al["kl_coef"],
            )
    elif al["kl_coef"] > 0 and not r.get("ckpt.ref_load") and not lora_base:
        r.problem(
            "ckpt.ref_load",
            "algo.kl_coef > 0 needs the reference model's weights",
            "set ckpt.ref_load, or algo.kl_coef=0",
        )
    if ro["n_samples"] == 1 and al["advantage_estimator"] in GROUP_ESTIMATORS and al["loss_type"] == "policy_loss":
        r.problem(
            "rollout.n_samples",
            f"{al['advantage_estimator']} compares samples within a group; with one "
            "sample per prompt every advantage is 0",
            "rollout.n_samples=8 (or more)",
            1,
        )
    if ro["partial_rollout"] and (ro["num_steps_per_rollout"] or 1) > 1 and not al["use_tis"]:
        r.warn(
            "rollout.partial_rollout",
            "resumed samples are off-policy and num_steps_per_rollout > 1 reuses them; "
            "set algo.use_tis=true to keep the gradient well-behaved",
        )
    if (
        ro["over_sampling_batch_size"] is not None
        and ro["batch_size"]
        and ro["over_sampling_batch_size"] < ro["batch_size"]
    ):
        r.problem(
            "rollout.over_sampling_batch_size",
            f"smaller than batch_size {ro['batch_size']}",
            f"rollout.over_sampling_batch_size={ro['batch_size'] * 2} (or null)",
            ro["over_sampling_batch_size"],
        )
    if al["loss_type"] == "custom_loss" and not al["custom_loss_function_path"]:
        r.problem(
            "algo.custom_loss_function_path",
            "loss_type=custom_loss needs the function",
            "algo.custom_loss_function_path=pkg.module.loss",
        )
    own_generate = "--custom-generate-function-path" in r.get("miles.extra_args")  # refused by support.py instead
    no_reward = r.get("rollout.rm_type") is None and r.get("rollout.custom_rm_path") is None
    if no_reward and al["loss_type"] != "sft_loss" and not own_generate:
        r.problem("rollout.rm_type", "no reward is configured", "rollout.rm_type=math (see the reward hub's list)")


def _critic_and_teacher(r: Resolver) -> None:
    """The extra models two estimators bring: ppo's critic (its lr and initial weights) and on-policy
    distillation's teacher, which must match the policy's architecture and tokenizer."""
    al, estimator = r.d["algo"], r.d["algo"]["advantage_estimator"]
    critic_load, teacher = r.get("ckpt.critic_load"), al["opd_teacher_load"]
    if estimator == "ppo":
        if r.get("optim.critic_lr") is None:
            r.derive("optim.critic_lr", r.get("optim.lr"), "defaults to optim.lr (ppo critic)")
        if critic_load and not Path(critic_load).is_dir():
            r.path_problem(
                "ckpt.critic_load", "folder does not exist", "point it at an HF folder, or null", critic_load
            )
        elif critic_load:
            # The critic never ties embeddings (its head replaces the output layer), so tying may differ.
            _same_model(r, "ckpt.critic_load", critic_load, ignore=("untie_embeddings_and_output_weights",))
    else:
        for key, value, default in (
            ("ckpt.critic_load", critic_load, None),
            ("optim.critic_lr", r.get("optim.critic_lr"), None),
            ("algo.num_critic_only_steps", al["num_critic_only_steps"], 0),
        ):
            if value != default:
                r.warn(key, f"only ppo trains a critic; ignored with advantage_estimator={estimator}")
    if estimator == "on_policy_distillation":
        if not teacher:
            r.problem(
                "algo.opd_teacher_load",
                "on_policy_distillation needs the teacher's weights",
                "algo.opd_teacher_load=/path/to/teacher (HF folder, torch_dist or rlpipe checkpoint)",
            )
        elif not Path(teacher).exists():
            r.path_problem("algo.opd_teacher_load", "folder does not exist", "point it at the teacher", teacher)
        else:
            _same_model(r, "algo.opd_teacher_load", teacher, check_tokenizer=True)
    elif teacher:
        r.warn("algo.opd_teacher_load", f"ignored with advantage_estimator={estimator} (on_policy_distillation)")


def _same_model(
    r: Resolver, key: str, folder: str, check_tokenizer: bool = False, ignore: tuple[str, ...] = ()
) -> None:
    """An HF folder in `key` must have the policy's architecture (config.json, but the `ignore` fields) and, with
    `check_tokenizer`, its tokenizer.json; Megatron-format checkpoints are shape-checked when the trainer loads."""
    hf_path = r.get("ckpt.hf_checkpoint")
    if not hf_path:
        return
    tokenizers = [Path(f) / "tokenizer.json" for f in (hf_path, folder)]
    if check_tokenizer and all(t.is_file() for t in tokenizers) and len({t.read_bytes() for t in tokenizers}) > 1:
        r.problem(
            key,
            "has another tokenizer than ckpt.hf_checkpoint: token ids would mean different text",
            "use a teacher that shares the policy's tokenizer",
            folder,
        )
    ours, theirs = read_hf_config(hf_path), read_hf_config(folder)
    if ours is None or theirs is None:
        return  # a Megatron checkpoint, or the demo's model not built yet
    a, b = hf_architecture(ours), hf_architecture(theirs)
    drift = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b) - set(ignore)) if a.get(k) != b.get(k)}
    if ours.get("model_type") != theirs.get("model_type"):
        drift["model_type"] = (ours.get("model_type"), theirs.get("model_type"))
    if drift:
        r.problem(
            key,
            f"has another architecture than ckpt.hf_checkpoint (policy vs this): {drift}",
            "use a model of the policy's family and size",
            folder,
        )


def _dotted_paths(r: Resolver) -> None:
    """Import and signature-check every dotted path the config gives, all in one bounded child process
    (`check_dotted_paths`); rlpipe's own ones that a rule filled in (the SFT rollout, the demo's calculator) are not
    re-checked."""
    from rlpipe.config.dotted import DOTTED_FIELDS, check_dotted_paths
    from rlpipe.reward.custom import REWARD_ARGS, reward_signature

    checks = {}
    for key, (n_args, expected) in DOTTED_FIELDS.items():
        if (path := r.get(key)) and not r.derived(key):
            if key == "rollout.custom_rm_path":  # the reward hub owns the reward signature rules
                n_args, expected = REWARD_ARGS, reward_signature(r.get("rollout.group_rm"))
            checks[key] = (path, n_args, expected)
    for key, error in check_dotted_paths(checks).items():
        if "not found (is it on PYTHONPATH?)" in error:  # the user's own module, maybe only on the run's machine
            fix = (
                "put its folder on PYTHONPATH; a Miles/slime plug-in is written against Miles' Python API: port it to "
                f"rlpipe's signature {checks[key][2]}"
            )
            r.path_problem(key, error, fix, r.get(key))
        else:
            r.problem(key, error, "fix the dotted path (module.function) or the function's parameters", r.get(key))


def _reward_type(r: Resolver) -> None:
    from rlpipe.reward import REWARD_TYPES

    for key in ["rollout.rm_type", *(f"eval.datasets.{n}.rm_type" for n in r.d["eval"]["datasets"])]:
        value = r.get(key)
        if value is not None and value not in REWARD_TYPES:
            r.problem(key, "unknown reward type", "one of: " + ", ".join(REWARD_TYPES), value)
        elif value == "reasoning_gym" and importlib.util.find_spec("reasoning_gym") is None:
            missing = "scores with the reasoning-gym package, which is not installed"
            r.problem(key, missing, "pip install 'rlpipe[envs]'", value)
    remote = "remote" in (r.get("rollout.rm_type"), *(ds["rm_type"] for ds in r.d["eval"]["datasets"].values()))
    if remote and not r.get("rollout.rm_url") and not r.get("rollout.custom_rm_path"):
        r.problem(
            "rollout.rm_url",
            "rm_type remote scores with a reward service, whose URL is unset",
            "rollout.rm_url=http://host:port/reward",
        )


def _sglang_extra(r: Resolver) -> None:
    """Every sglang.extra key (given or derived) must be a launch_server flag of sglang.version's SGLang that sets a
    ServerArgs field rlpipe does not set itself (see rlpipe.rollout.sglang.server_args for where the names come from).

    An alias (`expert_parallel_size`) or a field whose flag is named otherwise (`fp8_gemm_runner_backend`) is renamed
    to the flag rlpipe passes (`ep_size`, `fp8_gemm_backend`), shown as a derivation: one spelling per field, so two
    spellings of one field are caught and the owned-field check sees through aliases. A deprecated flag is kept, with
    a warning. Checked against an older version's list (none for sglang.version), findings are warnings that name
    that version, and nothing is renamed: a newer SGLang may know the key."""
    from rlpipe.rollout.sglang.server_args import OWNED_FIELDS, KeyCheck, check_key, server_arg_names

    version = r.get("sglang.version")
    names = server_arg_names(version)  # None: no SGLang here and no list as old as that version
    for key in list(r.d["sglang"]["extra"]):
        check = check_key(key, names) if names else KeyCheck(key, key)
        field, where = check.field or key, f"sglang.extra.{key}"
        if field in OWNED_FIELDS:
            alias = "" if field == key else f" (a launch_server flag for {field})"
            r.problem(where, f"is set by rlpipe from {OWNED_FIELDS[field]}{alias}", "set that instead")
        elif check.problem and names and not names.exact:
            r.warn(where, f"{check.problem}; checked against {names.source}, sglang.version is {version}")
        elif check.problem:
            r.problem(where, check.problem, "fix the name (a launch_server flag of that SGLang, with underscores)")
        elif check.warning:
            r.warn(where, check.warning)
        elif check.use != key and names and names.exact:
            extra = r.d["sglang"]["extra"]
            if check.use in extra:
                r.problem(where, f"sets {field}, as sglang.extra.{check.use} does ({check.reason})", "keep one")
            else:  # renamed in place, keeping the order
                r.d["sglang"]["extra"] = {check.use if k == key else k: v for k, v in extra.items()}
                r.derive(f"sglang.extra.{check.use}", extra[key], check.reason)


def _plan_fits(r: Resolver) -> None:
    """A run whose preflight plan overflows a GPU is refused here, before Ray or torch (rlpipe.plan.check_fit)."""
    from rlpipe.plan import check_fit

    if not r.problems:  # the plan needs a consistent layout
        check_fit(r)


RULES: tuple[Callable[[Resolver], None], ...] = (
    limits.numbers,
    _accelerator,
    limits.placement,
    _demo,
    sft.job,
    _model_from_hf,
    run_folder_name,
    input_files,
    weights_folders,
    output_paths,
    labels_for_reward,
    _batch_knobs,
    _num_rollout,
    _lr_schedule,
    limits.schedule,
    _colocate,
    _weight_sync,
    _async,
    _debug,
    _sglang,
    _eval_inherit,
    _perf,
    _topology,
    limits.sampling,
    limits.parallel,
    _algo,
    limits.objective,
    _critic_and_teacher,
    lora.rules,
    _dotted_paths,
    _reward_type,
    _sglang_extra,
    consistency.correction,
    consistency.routing_replay,
    consistency.precision,
    supported,
    _plan_fits,
    same_run,
)


def resolve(cfg: RunConfig, check_paths: bool = True) -> Resolved:
    """Fill every derivable value, check every cross-field rule, and return the frozen result.

    With check_paths=False (printing a plan for another machine) missing files are warnings, not errors."""
    r = Resolver(cfg.model_dump(), check_paths=check_paths)
    for rule in RULES:
        rule(r)
    if r.problems:
        raise ConfigError(r.problems)
    try:
        final = RunConfig.model_validate(r.d)  # validate after every merge: derived values obey the schema too
    except ValidationError as exc:  # a rule derived an out-of-bounds value: still the user's config to fix
        raise ConfigError(problems_from_validation(exc)) from None
    return Resolved(final, Topology(**r.topology), tuple(r.derivations), tuple(r.warnings))
