"""A trainer's full checkpoint (model, optimizer, LR schedule, RNG, loop state) in Megatron's torch_dist format.

Layout, as Megatron-LM writes it with `--ckpt-format torch_dist`:

    DIR/latest_checkpointed_iteration.txt      the iteration number, replaced last
    DIR/iter_{iteration:07d}/                  metadata.json, .metadata, common.pt, __*_*.distcp, rng_state/
    DIR/iter_{iteration:07d}/{part}/           the same for each other model of the run (the PPO critic)

Each tensor is stored once by its global shape: the model's `sharded_state_dict()`, the optimizer state keyed by
the model parameter it belongs to (`optimizer.state.{exp_avg,exp_avg_sq,fp32_param}.<param>` for the plain
optimizer, `optimizer.state.{param,exp_avg,exp_avg_sq}.<param>` for the distributed one, megatron's
"fully_reshardable" format). The common state (rank 0's common.pt) holds the iteration, the LR schedule, the
optimizer's hyper-parameters and step, the caller's `extra_state` and the parallel layout. A full checkpoint is
therefore also a weights-only torch_dist checkpoint (`rlpipe.train.dist_ckpt`).

Resharding: a checkpoint resumes at any TP / PP / DP layout (tested: DP 2 -> 1 with the distributed optimizer,
TP 2 -> 1 with the plain one), optimizer state included, as long as the optimizer kind (plain or distributed) is
the one it was saved with: megatron names the fp32 main weights differently in the two formats, so switching is
refused with a message (load the weights alone instead: `load_torch_dist`). RNG state is per rank (a ShardedObject
on the (pp, tp, dp x cp) grid); it is restored when the layout matches the saved one and otherwise left as the
constructor seeded it (`TrainerSpec.seed`), so a resharded resume continues the weights and optimizer exactly but
draws fresh random numbers (for dropout, which rlpipe trains without).

Writes are atomic: everything lands in iter_X.tmp, which is fsynced and renamed into place before the tracker
file is replaced, so a crash mid-save leaves the previous checkpoint the latest one. A save that fails (disk full,
no permission) removes its .tmp folder and raises `CheckpointWriteError` naming the folder and the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.optimizer import (
    get_param_id_to_sharded_param_map,
    make_sharded_optimizer_tensor,
    optim_state_to_sharding_state,
)
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from torch.distributed.checkpoint.api import CheckpointException

from rlpipe.train.dist_ckpt import TRACKER_FILE, latest_iteration_folder, save_sharded

# Megatron-LM's `--dist-ckpt-optim-fully-reshardable`: distributed-optimizer state in model space, so any layout
# can load it (its default, "dp_reshardable", only reshards across data-parallel ranks).
DISTRIBUTED_OPTIMIZER_FORMAT = {"distrib_optim_sharding_type": "fully_reshardable"}


@dataclass(frozen=True)
class TrainState:
    """What one trained model's checkpoint holds: its module (unwrapped from DDP), optimizer and LR schedule."""

    module: torch.nn.Module
    optimizer: MegatronOptimizer
    scheduler: OptimizerParamScheduler
    distributed_optimizer: bool
    # LoRA: the names of the trained part of the module; only those are saved (the frozen base comes from the
    # initial weights, loaded before the checkpoint), so a checkpoint holds adapters and their optimizer state.
    trainable: Callable[[str], bool] | None = None


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, no permission, read-only file system); the message names the
    folder and the cause, and the previous checkpoint is still the latest one."""


def save(
    directory: Path, iteration: int, state: TrainState, extra_state: dict, parts: Mapping[str, TrainState]
) -> Path:
    """Write iter_{iteration:07d}/ (with a sub-folder per part) and point the tracker at it; returns the folder.

    Every rank calls this together. Re-saving an iteration replaces it. A save that fails removes its .tmp folder
    and leaves the tracker alone, so the previous checkpoint stays the latest; a failure to write (an OSError,
    however megatron wrapped it) is raised as `CheckpointWriteError`. Rank 0's own steps share their outcome with
    every rank (`_on_rank0`), so no rank waits at a collective for one that gave up; a rank-0 failure inside
    megatron's save is only seen by the others when the process group times out."""
    directory = Path(directory)
    final = directory / f"iter_{iteration:07d}"
    tmp = directory / f"iter_{iteration:07d}.tmp"
    try:
        _on_rank0(lambda: _fresh_folder(tmp))
        _save_one(tmp, state, {"iteration": iteration, "extra_state": extra_state})
        for name, part in parts.items():
            _on_rank0((tmp / name).mkdir)
            _save_one(tmp / name, part, {"iteration": iteration, "extra_state": {}})
        _on_rank0(lambda: _publish(tmp, final, iteration))
    except BaseException as err:  # KeyboardInterrupt too: no half-written folder stays behind
        if dist.get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        failure = _write_failure(err)
        if failure is None:
            raise
        reason, advice = failure
        raise CheckpointWriteError(
            f"could not write checkpoint {iteration} to {directory}: {reason}. {_still_latest(directory)} {advice}, "
            "then rerun the same command"
        ) from err
    return final


def _fresh_folder(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)  # what a crashed save left behind
    tmp.mkdir(parents=True)


def _publish(tmp: Path, final: Path, iteration: int) -> None:
    """Make the written folder durable, move it into place, then point the tracker at it (replaced last)."""
    directory = final.parent
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    tracker_tmp = directory / f"{TRACKER_FILE}.tmp"
    tracker_tmp.write_text(str(iteration))
    _fsync_file(tracker_tmp)
    os.replace(tracker_tmp, directory / TRACKER_FILE)
    _fsync_dir(directory)


def _on_rank0(step: Callable[[], object]) -> None:
    """Run `step` on rank 0 and give every rank its outcome (a collective, so it also stands in for a barrier): an
    OSError there is raised on every rank, so that none waits at the next collective for a rank that gave up."""
    error: OSError | None = None
    if dist.get_rank() == 0:
        try:
            step()
        except OSError as err:
            error = err
    shared = [None if error is None else (error.errno, error.strerror or str(error), error.filename)]
    dist.broadcast_object_list(shared, src=0)
    if error is not None:
        raise error
    if shared[0] is not None:
        raise OSError(*shared[0])  # rank 0's error, on this rank


_FREE_SPACE, _WRITABLE = "free some space there (or set ckpt.keep_last)", "make the folder writable"
_WRITE_FAILURES = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ("disk full", _FREE_SPACE),
    errno.EDQUOT: ("disk quota exceeded", _FREE_SPACE),
    errno.EACCES: ("permission denied", _WRITABLE),
    errno.EPERM: ("permission denied", _WRITABLE),
    errno.EROFS: ("read-only file system", "save to a writable folder (ckpt.save)"),
}


def _write_failure(err: BaseException) -> tuple[str, str] | None:
    """(why a save failed, what to do), when an OSError is behind it (itself, or what it was raised from); None
    when the failure is something else."""
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, OSError):
            what, advice = _WRITE_FAILURES.get(current.errno or 0, (current.strerror or "", "fix that"))
            return f"{what} ({current})" if what else str(current), advice
        current = current.__cause__ or current.__context__
    if isinstance(err, CheckpointException):  # another rank's write failed (`save_sharded` raises a rank's own)
        return "another rank could not write its part", "see that rank's error"
    return None


def _still_latest(directory: Path) -> str:
    """What a rerun resumes from, in words: the checkpoint the tracker still names."""
    try:
        latest = latest_iteration_folder(directory)
    except (OSError, ValueError):  # an unreadable or garbled tracker
        latest = None
    if latest is None:
        return "There is no earlier checkpoint there, so a rerun starts over:"
    return f"The latest checkpoint there is still {latest.name}, and a rerun resumes from it:"


@torch.no_grad()  # the optimizers copy into views of (grad-requiring) parameters
def load(directory: Path, state: TrainState, part: str | None = None) -> tuple[int, dict] | None:
    """Restore `state` from the latest checkpoint under `directory` (its `part` sub-folder when given).

    Returns (iteration, extra_state), or None when there is nothing to resume: no tracker file, a weights-only
    torch_dist checkpoint, or no such part. Every rank calls this together."""
    folder = latest_iteration_folder(Path(directory))
    if folder is None:
        return None
    if not (folder / "metadata.json").exists():
        raise ValueError(
            f"{folder} is not a torch_dist checkpoint (no metadata.json): an interrupted copy, or Megatron's legacy "
            "per-rank layout, which rlpipe no longer reads; convert it with Megatron-LM's checkpoint converter"
        )
    if part is not None:
        folder = folder / part
        if not (folder / "metadata.json").exists():
            return None
    common = dist_checkpointing.load_common_state_dict(str(folder))
    if "opt_param_scheduler" not in common:
        return None  # weights only
    saved_format = dist_checkpointing.load_content_metadata(preloaded_state_dict=common) or {}
    saved_distributed = "distrib_optim_sharding_type" in saved_format  # how Megatron-LM tells them apart too
    if saved_distributed != state.distributed_optimizer:
        raise ValueError(
            f"{folder} was saved with use_distributed_optimizer={saved_distributed}: resume with the same setting "
            "(megatron's two optimizer formats name the fp32 main weights differently), or start from its weights "
            "alone"
        )
    same_layout = common.get("layout") == _layout()
    request = _sharded_state(state, {}, saved_format, is_loading=True, with_rng=same_layout)
    loaded = dist_checkpointing.load(request, str(folder))
    state.module.load_state_dict(loaded["model"], strict=state.trainable is None)
    # The fp32 main params come from the optimizer state (torch_dist filled the plain optimizer's in place), not
    # from the (bf16) model: no reload_model_params here, it would round them.
    _load_optimizer(state.optimizer, loaded["optimizer"])
    state.scheduler.load_state_dict(loaded["opt_param_scheduler"])
    if same_layout:
        _set_rng_state(loaded["rng_state"])
    return common["iteration"], common.get("extra_state", {})


def _save_one(folder: Path, state: TrainState, common: dict) -> None:
    optimizer_format = DISTRIBUTED_OPTIMIZER_FORMAT if state.distributed_optimizer else {}
    content = _sharded_state(state, common, optimizer_format, is_loading=False, with_rng=True)
    save_sharded(content, folder, content_metadata=optimizer_format)


def _sharded_state(state: TrainState, common: dict, optimizer_format: dict, is_loading: bool, with_rng: bool) -> dict:
    """The state dict torch_dist writes or fills: sharded tensors and objects, plus common values."""
    model = state.module.sharded_state_dict()
    if state.trainable is not None:
        model = {name: entry for name, entry in model.items() if state.trainable(name)}
    _materialize_optimizer_state(state.optimizer)
    content = {
        **common,
        "model": model,
        "optimizer": _optimizer_sharded_state(state.optimizer, model, optimizer_format, is_loading),
        "opt_param_scheduler": state.scheduler.state_dict(),
        "layout": _layout(),
    }
    if with_rng:
        content["rng_state"] = _rng_object()
    return content


def _layout() -> dict[str, int]:
    return {
        "tensor_parallel": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_parallel": parallel_state.get_pipeline_model_parallel_world_size(),
        "context_parallel": parallel_state.get_context_parallel_world_size(),
        "data_parallel": parallel_state.get_data_parallel_world_size(),
        "expert_parallel": parallel_state.get_expert_model_parallel_world_size(),
        "expert_tensor_parallel": parallel_state.get_expert_tensor_parallel_world_size(),
    }


# ----- optimizer -----


def _inner_optimizers(optimizer: MegatronOptimizer) -> list[MegatronOptimizer]:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _materialize_optimizer_state(optimizer: MegatronOptimizer) -> None:
    """Give every parameter without optimizer state the state torch's optimizer creates on its first step.

    torch Adam: step 0 and zero moments; SGD with momentum: a zero buffer (its first update, 0 * momentum +
    grad, equals torch's clone of the grad exactly). Numerically a no-op, it makes a checkpoint written before
    the first step hold the same keys as any other, and gives a fresh optimizer state to load into: megatron
    0.16's distributed optimizer asserts on an empty torch-Adam state, and its plain one restores no SGD buffer.
    Optimizers other than torch's (TransformerEngine's FusedAdam) are left to megatron.
    """
    for inner in _inner_optimizers(optimizer):
        torch_optimizer = inner.optimizer
        for group in torch_optimizer.param_groups:
            for param in group["params"]:
                state = torch_optimizer.state[param]
                if state:
                    continue
                if isinstance(torch_optimizer, torch.optim.Adam):  # AdamW subclasses it
                    on_device = group["capturable"] or group["fused"]
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device if on_device else "cpu")
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                elif isinstance(torch_optimizer, torch.optim.SGD) and group["momentum"] != 0:
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def _optimizer_sharded_state(
    optimizer: MegatronOptimizer, model: dict, optimizer_format: dict, is_loading: bool
) -> dict:
    """Megatron's optimizer sharded state dict (ChainedOptimizer's shape: the inner one's, or one per index);
    `optimizer_format` is the metadata megatron's distributed optimizer reads (`DISTRIBUTED_OPTIMIZER_FORMAT`)."""
    inners = [
        _inner_sharded_state(inner, model, is_loading, optimizer_format) for inner in _inner_optimizers(optimizer)
    ]
    return inners[0] if len(inners) == 1 else dict(enumerate(inners))


def _inner_sharded_state(inner: MegatronOptimizer, model: dict, is_loading: bool, metadata: dict) -> dict:
    if isinstance(inner, DistributedOptimizer):
        _fix_group_order(inner)
        return inner.sharded_state_dict(model, is_loading=is_loading, metadata=metadata)
    return _plain_sharded_state(inner, model)


def _fix_group_order(inner: DistributedOptimizer) -> None:
    """Point each model parameter at its main shard's real place in the optimizer's param groups.

    megatron 0.16 records (group, order) in grad-buffer order but builds each group as [fp32 shards, bf16 shards'
    fp32 mains], so in a group that mixes dtypes (an fp32 parameter in a bf16 model) the checkpoint code
    (`_get/_set_main_param_and_optimizer_states`) reads another parameter's state. Training does not use the map.
    """
    for group_index, group in enumerate(inner.optimizer.param_groups):
        position = {id(main): order for order, main in enumerate(group["params"])}
        models = [*inner.model_float16_groups[group_index], *inner.model_fp32_groups[group_index]]
        mains = [*inner.shard_fp32_from_float16_groups[group_index], *inner.shard_fp32_groups[group_index]]
        for model_param, main in zip(models, mains, strict=True):
            inner.model_param_group_index_map[model_param] = (group_index, position[id(main)])


def _plain_sharded_state(inner: MegatronOptimizer, model: dict) -> dict:
    """The plain (fp32 or bf16) optimizer's sharded state dict, in megatron's format, built here for two bugs.

    megatron 0.16's `Float16OptimizerWithFloat16Params.sharded_state_dict` numbers the optimizer's parameters by
    chaining its bf16 groups only, which misnumbers every group that also holds fp32 parameters (an fp32
    parameter in a bf16 model); here each optimizer parameter maps to its model parameter by identity. And
    both plain optimizers drop torch Adam's step while it is 0 (`if step:`), after which torch cannot load the
    state; here it is kept.
    """
    saved = inner.state_dict()
    mixed = isinstance(inner, Float16OptimizerWithFloat16Params)
    torch_saved = saved["optimizer"] if mixed else saved
    optimizer_params = [p for group in inner.optimizer.param_groups for p in group["params"]]
    model_param_of = (
        {
            id(main): param
            for mains, params in zip(inner.fp32_from_float16_groups, inner.float16_groups, strict=True)
            for main, param in zip(mains, params, strict=True)
        }
        if mixed
        else {}
    )
    sharded_param = get_param_id_to_sharded_param_map(model, [model_param_of.get(id(p), p) for p in optimizer_params])
    if mixed:
        index = {id(p): i for i, p in enumerate(optimizer_params)}
        saved["fp32_from_fp16_params"] = [
            [
                make_sharded_optimizer_tensor(sharded_param[index[id(main)]], main, prefix="optimizer.state.fp32_param")
                for main in mains
            ]
            for mains in saved["fp32_from_fp16_params"]
        ]
    step = inner._extract_common_per_param_step(torch_saved)  # one step for all parameters (megatron's format)
    optim_state_to_sharding_state(torch_saved, sharded_param, exclude_keys="step")
    if step is not None:
        torch_saved["state"]["common_step"] = step
    return saved


def _load_optimizer(optimizer: MegatronOptimizer, loaded: dict) -> None:
    inners = _inner_optimizers(optimizer)
    states = [loaded] if len(inners) == 1 else [loaded[i] for i in range(len(inners))]
    for inner, state in zip(inners, states, strict=True):
        if isinstance(inner, DistributedOptimizer):
            _load_distributed(inner, state)
        else:
            inner.load_state_dict(state)
        _unshare_steps(inner)


def _load_distributed(inner: DistributedOptimizer, state: dict) -> None:
    """The distributed optimizer's load, with torch Adam's per-parameter "step" held aside.

    megatron 0.16 writes this format for TransformerEngine's FusedAdam, which keeps its step in param_groups: the
    checkpoint has no per-parameter step, and `_set_main_param_and_optimizer_states` copies every key of the live
    state from it, failing on torch Adam's "step". The step itself comes back through param_groups
    (`load_state_dict`)."""
    param_state = state.pop("param_state")
    sharding_type = state.pop("param_state_sharding_type")
    inner.load_state_dict(state)  # hyper-parameters and step
    torch_state = inner.optimizer.state
    steps = {param: s.pop("step") for param, s in torch_state.items() if "step" in s}
    try:
        getattr(inner, f"load_parameter_state_from_{sharding_type}")(param_state)
    finally:
        for param, step in steps.items():
            torch_state[param]["step"] = step


def _unshare_steps(inner: MegatronOptimizer) -> None:
    """Give each parameter its own step tensor: megatron's distributed-optimizer load hands every parameter the
    same one, which torch's foreach Adam would then advance once per parameter on every step."""
    for state in inner.optimizer.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


# ----- RNG -----


def _rng_object() -> ShardedObject:
    """This rank's RNG states (host, device, Megatron's tracker) as one cell of the (pp, tp, dp x cp) grid:
    Megatron-LM's `get_rng_state` with the data-parallel rank (context-parallel ranks included, as in its replica
    id) as a coordinate, so every rank gets its own state back."""
    rng = {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    shape = (
        parallel_state.get_pipeline_model_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_data_parallel_world_size(with_context_parallel=True),
    )
    offset = (
        parallel_state.get_pipeline_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_data_parallel_rank(with_context_parallel=True),
    )
    return ShardedObject("rng_state", rng, shape, offset, replica_id=0)


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(rng["tracker"])


# ----- durability -----


def _fsync_tree(root: Path) -> None:
    """fsync every file, then every folder deepest first, so each folder's entries are durable before its parent's."""
    for path in root.rglob("*"):
        if path.is_file():
            _fsync_file(path)
    for folder in sorted((f for f in root.rglob("*") if f.is_dir()), key=lambda f: -len(f.parts)):
        _fsync_dir(folder)
    _fsync_dir(root)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
