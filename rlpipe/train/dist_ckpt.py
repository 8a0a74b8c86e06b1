"""Model weights in Megatron's distributed checkpoint format (torch_dist), which reshards on load.

A torch_dist checkpoint stores every tensor once, by its global shape and each rank's slice of it
(`GPTModel.sharded_state_dict`), so a checkpoint written at TP=1 loads into TP=2 or PP=2 and back. Layout, as
Megatron-LM writes it:

    DIR/latest_checkpointed_iteration.txt      the iteration number
    DIR/iter_{iteration:07d}/                  metadata.json, .metadata, common.pt, __*_*.distcp

The functions here read and write weights only (what `ckpt.load` / `ckpt.ref_load`, the teacher and the converter
need). The trainer's full checkpoints (`rlpipe.train.checkpoint`: optimizer, LR schedule and RNG state beside the
weights) use the same format and layout, so everything here reads them too. Every rank of the world calls these
together. Both write through `save_sharded`, whose file writers are threads (`ThreadedTorchDistSave`): megatron's
forked writer processes could leave a save waiting forever on one that died.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncRequest
from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync
from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from rlpipe.config.files import TRACKER_FILE

MODEL_KEY_PREFIXES = ("embedding.", "decoder.", "output_layer.")  # GPTModel's parts, as its sharded keys begin


class ThreadedTorchDistSave(TorchDistSaveShardedStrategy):
    """megatron's torch_dist save strategy with its files written by threads of this process, not forked ones.

    rlpipe saves synchronously (megatron's async save is never used), but megatron-core 0.16 writes even a
    synchronous save from worker processes it forks (`FileSystemWriterAsync.write_preloaded_data_multiproc`) and
    waits for them on a JoinableQueue: a worker killed mid-write (the OOM killer, a signal) never marks its task
    done, and the save would wait forever. A thread cannot vanish that way: whatever stops it comes back as an
    exception. The files are the same (one per bucket, `thread_count` of them) and the writes still overlap: file
    I/O releases the GIL. torch's own FileSystemWriter writes from threads too.

    The results come back through a plain in-process queue, not megatron's: that one lives in a Manager server
    process spawned on the first save (it re-imports __main__, and fails where __main__ is not a file).
    `write_error` keeps this rank's failed write as raised: megatron reports it through a gather that pickles it
    down to a RuntimeError with its text, losing the OSError (and its errno) behind it.
    """

    write_error: Exception | None = None

    def async_save(self, sharded_state_dict: Any, checkpoint_dir: Any) -> AsyncRequest:
        with _patched(filesystem_async, "_get_write_results_queue", queue.Queue):  # see the class docstring
            request = super().async_save(sharded_state_dict, checkpoint_dir)
        forked = request.async_fn
        if forked is None:  # nothing to write on this rank
            return request
        if not (isinstance(forked, partial) and forked.func is FileSystemWriterAsync.write_preloaded_data_multiproc):
            raise RuntimeError(f"megatron-core's torch_dist writer is not the one rlpipe replaces: {forked!r}")
        return request._replace(async_fn=partial(self._write_in_threads, *forked.args, **forked.keywords))

    def _write_in_threads(
        self, transform_list: list, use_msc: bool, rank: int, write_buckets: list, results_queue: Any
    ) -> None:
        """`write_preloaded_data_multiproc`'s work and its result protocol (a dict of each bucket's write results,
        or the first exception, put on `results_queue`) with one thread per bucket instead of a forked process."""
        outcomes: queue.Queue = queue.Queue()
        tickets: queue.Queue = queue.Queue()  # write_preloaded_data takes one and marks it done, as in a process
        write = partial(FileSystemWriterAsync.write_preloaded_data, transform_list, use_msc=use_msc)
        with ThreadPoolExecutor(len(write_buckets), thread_name_prefix="rlpipe-ckpt-write") as pool:
            futures = []
            for index, bucket in enumerate(write_buckets):
                tickets.put(index)
                futures.append(pool.submit(write, index, bucket, outcomes, tickets, True))  # True: fsync each file
            for future in futures:
                future.result()  # raises what write_preloaded_data does not catch itself (a BaseException)
        results = dict(outcomes.get_nowait() for _ in write_buckets)
        self.write_error = next((result for result in results.values() if isinstance(result, Exception)), None)
        results_queue.put(self.write_error if self.write_error is not None else results)


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """`module.name` is `value` inside the block; a name the module lacks (another megatron) is left alone."""
    if not hasattr(module, name):
        yield
        return
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def save_sharded(sharded_state_dict: dict, folder: Path, **kwargs: Any) -> None:
    """`dist_checkpointing.save` in torch_dist format, written by `ThreadedTorchDistSave`; kwargs go to it. A
    failed write of this rank is raised as itself (an OSError, say), from megatron's CheckpointException."""
    strategy = ThreadedTorchDistSave("torch_dist", 1)  # megatron's default save strategy and version
    try:
        dist_checkpointing.save(sharded_state_dict, str(folder), sharded_strategy=strategy, **kwargs)
    except CheckpointException as err:
        if strategy.write_error is None:
            raise
        raise strategy.write_error from err


def latest_iteration_folder(directory: Path) -> Path | None:
    """The iteration folder a checkpoint directory's tracker file names; None without a tracker file."""
    tracker = Path(directory) / TRACKER_FILE
    if not tracker.exists():
        return None
    return Path(directory) / f"iter_{int(tracker.read_text().strip()):07d}"


def prune_iterations(directory: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` iteration folders under `directory` (`ckpt.keep_last`), never the one
    the tracker names; returns what was removed. Unfinished `.tmp` folders are a save's own business."""
    directory = Path(directory)
    tracked = latest_iteration_folder(directory)
    folders = sorted(p for p in directory.glob("iter_*") if p.is_dir() and p.name.removeprefix("iter_").isdigit())
    stale = [p for p in folders[: max(0, len(folders) - keep_last)] if p != tracked]
    for folder in stale:
        shutil.rmtree(folder)
    return stale


def is_torch_dist(path: Path) -> bool:
    """True for a torch_dist checkpoint folder (with a tracker file) or one iteration folder of it, weights-only or
    a trainer's full checkpoint."""
    path = Path(path)
    if (path / "metadata.json").exists():
        return True
    folder = latest_iteration_folder(path)
    return folder is not None and (folder / "metadata.json").exists()


def iteration_folder(path: Path) -> Path:
    """The folder holding the tensors: `path` itself, or the iteration its tracker file names."""
    path = Path(path)
    if (path / "metadata.json").exists():
        return path
    folder = latest_iteration_folder(path)
    if folder is None:
        raise FileNotFoundError(f"{path} is neither a torch_dist iteration folder nor has a {TRACKER_FILE}")
    return folder


def stored_model_dtypes(path: Path) -> set[torch.dtype]:
    """The dtypes a torch_dist checkpoint stores the model's weights in (a full checkpoint's optimizer state aside),
    read from its metadata alone."""
    metadata = FileSystemReader(str(iteration_folder(path))).read_metadata().state_dict_metadata
    return {
        entry.properties.dtype
        for key, entry in metadata.items()
        if isinstance(entry, TensorStorageMetadata) and key.startswith(MODEL_KEY_PREFIXES)
    }


def save_model(module: torch.nn.Module, directory: Path, iteration: int) -> Path:
    """Write `module`'s weights as DIR/iter_{iteration:07d} and point the tracker at it; returns the folder."""
    directory = Path(directory)
    folder = directory / f"iter_{iteration:07d}"
    if dist.get_rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)  # re-saving an iteration replaces it
        folder.mkdir(parents=True)
    dist.barrier()
    save_sharded(module.sharded_state_dict(), folder)
    dist.barrier()
    if dist.get_rank() == 0:
        (directory / TRACKER_FILE).write_text(str(iteration))
    dist.barrier()
    return folder


@torch.no_grad()
def load_model(module: torch.nn.Module, path: Path, skip: Callable[[str], bool] | None = None) -> None:
    """Fill `module` (any TP / PP layout) from a torch_dist checkpoint folder or iteration folder; entries whose
    name `skip` accepts are left as they are (LoRA adapters, which a base model's checkpoint does not have)."""
    request = _without(module.sharded_state_dict(), skip)
    loaded = dist_checkpointing.load(request, str(iteration_folder(path)))
    own = module.state_dict().keys()  # a full checkpoint's common state (iteration, schedule, ...) comes back too
    module.load_state_dict({name: value for name, value in loaded.items() if name in own}, strict=skip is None)


def load_model_state(
    module: torch.nn.Module, path: Path, skip: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """This rank's parameter shards from a torch_dist checkpoint, by local name, without touching `module`.

    torch_dist loads in place into the tensors of the request, so the request gets buffers of its own: the
    module's would be overwritten, and the result would alias the live weights (a KL reference or teacher that
    trains along with the policy)."""
    request = dict_list_map_inplace(_own_buffer, _without(module.sharded_state_dict(), skip))
    loaded = dist_checkpointing.load(request, str(iteration_folder(path)))
    names = {name for name, _ in module.named_parameters()}
    return {name: t.detach().cpu() for name, t in loaded.items() if name in names}


def _without(sharded: dict, skip: Callable[[str], bool] | None) -> dict:
    return sharded if skip is None else {name: entry for name, entry in sharded.items() if not skip(name)}


def _own_buffer(entry: object) -> object:
    """A sharded tensor (or factory) entry of a request, reading into a new tensor of the same shape and dtype."""
    if isinstance(entry, ShardedTensor | ShardedTensorFactory):
        return replace(entry, data=torch.empty_like(entry.data))
    return entry
