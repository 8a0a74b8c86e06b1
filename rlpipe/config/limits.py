"""Resolution rules for values the schema's types accept but no run can use: they are refused (or warned about)
here, naming the key, instead of being accepted silently and failing deep in torch or Megatron.

    numbers       every number finite; whole numbers within int32 (seeds within uint32)
    sampling      top_k 0 keeps no token; stop ids inside the vocabulary; responses within the model's positions
    parallel      TP divides the heads and the query groups; PP divides the layers
    schedule      min_lr <= lr; warmup shorter than the decay
    objective     TIS's lower clip below its upper one; a KL loss weight needs the KL loss
    placement     colocate needs separate processes (Ray); cuda needs a visible NVIDIA GPU
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from rlpipe.config.state import Resolver

INT_LIMIT = 2**31 - 1
SEED_LIMIT = 2**32 - 1
SEED_KEYS = ("seed", "rollout.seed", "demo.seed")


def gpu_visible() -> bool:
    """Cheap and import-free: the NVIDIA driver's control device exists only where a GPU is usable."""
    return os.path.exists("/dev/nvidiactl")


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{prefix}{i}.")
    else:
        yield prefix.removesuffix("."), node


def numbers(r: Resolver) -> None:
    """Finite numbers only (free-form maps such as sglang.extra included); no int beyond what the libraries take."""
    for key, value in _leaves(r.d):
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            r.problem(key, "must be a finite number", "give a finite value", value)
        elif isinstance(value, int) and key in SEED_KEYS and not 0 <= value <= SEED_LIMIT:
            r.problem(key, f"seeds run from 0 to {SEED_LIMIT}", f"{key}=1234", value)
        elif isinstance(value, int) and abs(value) > INT_LIMIT:
            r.problem(key, f"is beyond {INT_LIMIT}, more than any run can use", "give a realistic value", value)


def sampling(r: Resolver) -> None:
    """Sampling settings the engine would reject or silently mis-serve."""
    ro, model = r.d["rollout"], r.d["model"]
    top_ks = {"rollout.top_k": ro["top_k"], "eval.top_k": r.get("eval.top_k")}
    top_ks |= {f"eval.datasets.{n}.top_k": ds.get("top_k") for n, ds in r.d["eval"]["datasets"].items()}
    for key, value in top_ks.items():
        if value == 0:
            r.problem(key, "top_k 0 keeps no token", f"{key}=-1 (off), or a positive k", 0)
    vocab = model["vocab_size"]
    if vocab:
        outside = [t for t in ro["stop_token_ids"] if not 0 <= t < vocab]
        if outside:
            r.problem(
                "rollout.stop_token_ids",
                f"ids {outside} are outside the vocabulary (0 to {vocab - 1})",
                "use token ids of this model's tokenizer",
                ro["stop_token_ids"],
            )
    positions = model["max_position_embeddings"]
    if positions:
        lengths = {"rollout.max_response_len": ro["max_response_len"]}
        datasets = r.d["eval"]["datasets"].items()
        lengths |= {f"eval.datasets.{n}.max_response_len": ds.get("max_response_len") for n, ds in datasets}
        for key, length in lengths.items():
            if length and length >= positions:
                r.problem(
                    key,
                    f"{length} tokens reach past the model's {positions} positions (model.max_position_embeddings), "
                    "with no room for the prompt",
                    f"{key}={positions // 2} (or a model with more positions)",
                    length,
                )
        prompt = ro["max_prompt_len"]
        if prompt and ro["max_response_len"] < positions <= prompt + ro["max_response_len"]:
            r.warn(
                "rollout.max_prompt_len",
                f"max_prompt_len {prompt} + max_response_len {ro['max_response_len']} exceeds the model's "
                f"{positions} positions: the longest prompts cannot finish their responses",
            )


def parallel(r: Resolver) -> None:
    """Megatron asserts these deep inside model construction, after Ray has started every actor."""
    pf, model = r.d["perf"], r.d["model"]
    tp = pf["tensor_parallel"]
    for field, what in (("num_attention_heads", "attention heads"), ("num_query_groups", "query groups")):
        count = model[field]
        if count and count % tp:
            r.problem(
                "perf.tensor_parallel",
                f"does not divide the model's {count} {what} (model.{field}): each TP rank holds whole heads",
                f"perf.tensor_parallel to a divisor of {count}",
                tp,
            )
    _pipeline_stages(r, model["num_layers"])


def stage_layers(num_layers: int, pp: int, first: int | None, last: int | None) -> list[int] | None:
    """Layers on each of `pp` pipeline stages, Megatron's split: `first` / `last` on the end stages when given,
    the rest shared evenly by the others; None when that split does not exist."""
    ends = [n for n in (first, last) if n is not None]
    middle_stages, middle_layers = pp - len(ends), num_layers - sum(ends)
    if pp == 1 and ends:
        return None
    if middle_stages == 0:
        return ends if middle_layers == 0 else None
    if middle_layers <= 0 or middle_layers % middle_stages:
        return None
    share = middle_layers // middle_stages
    return [first or share] + [share] * (pp - 2) + [last or share] if pp > 1 else [share]


def _pipeline_stages(r: Resolver, layers: int | None) -> None:
    """Every stage holds whole layers: an even share, or Miles' uneven ends (--decoder-first/last-pipeline-num-
    layers) with the middle stages sharing the rest evenly, as Megatron's TransformerConfig demands."""
    pf = r.d["perf"]
    pp, first, last = (
        pf["pipeline_parallel"],
        pf["decoder_first_pipeline_num_layers"],
        pf["decoder_last_pipeline_num_layers"],
    )
    if not layers:
        return
    if stage_layers(layers, pp, first, last) is not None:
        return
    if first is None and last is None:
        fix = f"perf.pipeline_parallel to a divisor of {layers}"
        if uneven := [n for n in range(1, layers) if stage_layers(layers, pp, None, n)]:
            last = min(uneven, key=lambda n: abs(n - layers / pp))
            fix += f", or uneven stages: perf.decoder_last_pipeline_num_layers={last}"
        r.problem("perf.pipeline_parallel", f"does not divide the model's {layers} layers (model.num_layers)", fix, pp)
        return
    on_first = first is not None
    key = f"perf.decoder_{'first' if on_first else 'last'}_pipeline_num_layers"
    given = first if on_first else last
    if pp == 1:
        r.problem(key, "sets one pipeline stage's layers, but pipeline_parallel is 1", f"{key}=null", given)
        return
    others = pp - (first is not None) - (last is not None)
    rest = layers - (first or 0) - (last or 0)
    fits = [n for n in range(1, layers) if stage_layers(layers, pp, *((n, last) if on_first else (first, n)))]
    fix = f"{key}={min(fits, key=lambda n: abs(n - given))}" if fits else "perf.pipeline_parallel to fewer stages"
    r.problem(
        key,
        f"leaves {rest} of the model's {layers} layers to the other {others} pipeline stage(s), which share them "
        "evenly, at least one each",
        fix,
        given,
    )


def schedule(r: Resolver) -> None:
    optim = r.d["optim"]
    if optim["min_lr"] > optim["lr"]:
        r.problem(
            "optim.min_lr",
            f"is above the peak learning rate optim.lr {optim['lr']:g}",
            f"optim.min_lr={optim['lr'] / 10:g} (or 0)",
            optim["min_lr"],
        )
    warmup, decay = optim["lr_warmup_iters"], optim["lr_decay_iters"]
    if warmup and decay and warmup >= decay:
        r.problem(
            "optim.lr_warmup_iters",
            f"{warmup} warm-up steps leave nothing of the {decay} steps of optim.lr_decay_iters "
            "(the peak learning rate would never be reached)",
            f"optim.lr_warmup_iters={decay // 10} (or raise optim.lr_decay_iters)",
            warmup,
        )


def objective(r: Resolver) -> None:
    algo = r.d["algo"]
    if algo["tis_clip_low"] > algo["tis_clip"]:
        message = f"is above the upper clip algo.tis_clip {algo['tis_clip']:g}: no importance weight fits between"
        if algo["use_tis"]:
            r.problem("algo.tis_clip_low", message, "algo.tis_clip_low=0 (or below tis_clip)", algo["tis_clip_low"])
        else:
            r.warn("algo.tis_clip_low", message + " (unused: algo.use_tis is off)")
    if algo["kl_loss_coef"] > 0 and not algo["use_kl_loss"]:
        r.problem(
            "algo.kl_loss_coef",
            "weighs the KL loss, which is off (algo.use_kl_loss=false): it would have no effect",
            "algo.use_kl_loss=true (needs ckpt.ref_load), or algo.kl_loss_coef=0",
            algo["kl_loss_coef"],
        )


def placement(r: Resolver) -> None:
    cluster = r.d["cluster"]
    if cluster["colocate"] and cluster["backend"] == "local":
        r.problem(
            "cluster.colocate",
            "colocation time-slices GPUs between trainer and engine processes; the local backend runs one process",
            "cluster.backend=ray (with cluster.colocate=true), or cluster.colocate=false",
            True,
        )
    if cluster["accelerator"] == "cuda" and not gpu_visible():
        r.path_problem(
            "cluster.accelerator",
            "is cuda, but this machine has no NVIDIA GPU (no /dev/nvidiactl)",
            "cluster.accelerator=cpu (or auto), or launch on a GPU machine",
            "cuda",
        )
