"""Model weights in Megatron's distributed checkpoint format (torch_dist), which reshards on load.

A torch_dist checkpoint stores every tensor once, by its global shape and each rank's slice of it
(`GPTModel.sharded_state_dict`), so a checkpoint written at TP=1 loads into TP=2 or PP=2 and back. Layout, as
Megatron-LM writes it:

    DIR/latest_checkpointed_iteration.txt      the iteration number
    DIR/iter_{iteration:07d}/                  metadata.json, .metadata, common.pt, __*_*.distcp

The functions here read and write weights only (what `ckpt.load` / `ckpt.ref_load`, the teacher and the converter
need). The trainer's full checkpoints (`rlpipe.train.checkpoint`: optimizer, LR schedule and RNG state beside the
weights) use the same format and layout, so everything here reads them too. Every rank of the world calls these
together.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

TRACKER_FILE = "latest_checkpointed_iteration.txt"


def latest_iteration_folder(directory: Path) -> Path | None:
    """The iteration folder a checkpoint directory's tracker file names; None without a tracker file."""
    tracker = Path(directory) / TRACKER_FILE
    if not tracker.exists():
        return None
    return Path(directory) / f"iter_{int(tracker.read_text().strip()):07d}"


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


def save_model(module: torch.nn.Module, directory: Path, iteration: int) -> Path:
    """Write `module`'s weights as DIR/iter_{iteration:07d} and point the tracker at it; returns the folder."""
    directory = Path(directory)
    folder = directory / f"iter_{iteration:07d}"
    if dist.get_rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)  # re-saving an iteration replaces it
        folder.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(module.sharded_state_dict(), str(folder))
    dist.barrier()
    if dist.get_rank() == 0:
        (directory / TRACKER_FILE).write_text(str(iteration))
    dist.barrier()
    return folder


@torch.no_grad()
def load_model(module: torch.nn.Module, path: Path) -> None:
    """Fill `module` (any TP / PP layout) from a torch_dist checkpoint folder or iteration folder."""
    loaded = dist_checkpointing.load(module.sharded_state_dict(), str(iteration_folder(path)))
    own = module.state_dict().keys()  # a full checkpoint's common state (iteration, schedule, ...) comes back too
    module.load_state_dict({name: value for name, value in loaded.items() if name in own})


def load_model_state(module: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """This rank's parameter shards from a torch_dist checkpoint, by local name, without touching `module`.

    torch_dist loads in place into the tensors of the request, so the request gets buffers of its own: the
    module's would be overwritten, and the result would alias the live weights (a KL reference or teacher that
    trains along with the policy)."""
    request = dict_list_map_inplace(_own_buffer, module.sharded_state_dict())
    loaded = dist_checkpointing.load(request, str(iteration_folder(path)))
    names = {name for name, _ in module.named_parameters()}
    return {name: t.detach().cpu() for name, t in loaded.items() if name in names}


def _own_buffer(entry: object) -> object:
    """A sharded tensor (or factory) entry of a request, reading into a new tensor of the same shape and dtype."""
    if isinstance(entry, ShardedTensor | ShardedTensorFactory):
        return replace(entry, data=torch.empty_like(entry.data))
    return entry
