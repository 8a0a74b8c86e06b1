"""Writing the trainer's weights as a HuggingFace folder (Miles' --save-hf): serve or share them directly.

The folder is the source checkpoint's config and tokenizer files plus the trained weights, built under a temporary
name and renamed into place, so a reader never sees half a model. The weights are written as they come, at most
`shard_bytes` per file: `model.safetensors` when one file holds them all, else HF's sharded layout
(`model-00001-of-0000N.safetensors` ... and `model.safetensors.index.json`), so a stream of tensors is never held
whole. Its folder and files get the usual modes (0777 / 0666 minus the umask): a `tempfile.mkdtemp` folder's 0700
would survive the rename.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlpipe.rollout.sglang.protocol import alone, buckets

# Files of an HF folder that describe the model (config, tokenizer, chat template) rather than hold weights.
DESCRIPTION_FILES = ("*.json", "*.txt", "*.model", "*.jinja")
SHARD_BYTES = 256 * 2**20  # a file's tensors are held until it is written: beside the model, about this much


def export_hf(
    named: Iterable[tuple[str, torch.Tensor]], source: Path, out: Path, shard_bytes: int = SHARD_BYTES
) -> Path:
    """Write `named` (HF names) with `source`'s description files to `out` atomically, `shard_bytes` per weights
    file at most (a larger tensor alone); returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = readable_temp_dir(out)
    try:
        for pattern in DESCRIPTION_FILES:
            for file in Path(source).glob(pattern):
                if not file.name.endswith(".safetensors.index.json"):  # describes the source's shards, not ours
                    shutil.copyfile(file, tmp / file.name)  # contents only: a new file's mode, not the source's
        write_weights(named, tmp, shard_bytes)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_weights(named: Iterable[tuple[str, torch.Tensor]], folder: Path, shard_bytes: int) -> None:
    """`named` as safetensors files in `folder`, each written (and its tensors let go) once `shard_bytes` are in
    it; named at the end, when their number is known."""
    files: list[tuple[Path, list[str]]] = []
    total = 0
    for bucket in buckets(((name, alone(t.detach().cpu())) for name, t in named), shard_bytes):
        path = folder / f".part-{len(files)}.safetensors"
        save_file(dict(bucket), str(path), metadata={"format": "pt"})
        os.chmod(path, new_file_mode(folder))  # safetensors writes 0600 whatever the umask
        files.append((path, [name for name, _ in bucket]))
        total += sum(t.numel() * t.element_size() for _, t in bucket)
    if len(files) == 1:
        os.replace(files[0][0], folder / "model.safetensors")
        return
    if not files:  # no tensors: still a (weightless) weights file, as readers expect one
        save_file({}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(folder / "model.safetensors", new_file_mode(folder))
        return
    weight_map = {}
    for i, (path, names) in enumerate(files):
        final = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        os.replace(path, folder / final)
        weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def readable_temp_dir(near: Path) -> Path:
    """A new empty hidden sibling of `near` (`.NAME.tmp-XXXXXXXX`) to build it in, created with mode 0777 minus the
    umask, as any new folder: `tempfile.mkdtemp` makes 0700, which the rename into place would keep."""
    near = Path(near)
    for _ in range(100):
        path = near.parent / f".{near.name}.tmp-{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)  # the umask applies
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary folder name next to {near}")


def new_file_mode(folder: Path) -> int:
    """The mode a new file gets (0666 minus the umask), read off a folder `readable_temp_dir` made (0777 minus the
    umask): no process-wide `os.umask` round trip, which would race with other threads creating files."""
    return stat.S_IMODE(Path(folder).stat().st_mode) & 0o666


def replace_folder(new: Path, out: Path) -> None:
    """Rename the folder `new` onto `out`. An existing `out` is moved aside first (and put back if the rename
    fails), then deleted: a reader finds the old folder or the whole new one, never a mix (or, for the instant
    between the two renames, nothing)."""
    new, out = Path(new), Path(out)
    if not out.exists():
        os.replace(new, out)
        return
    aside = readable_temp_dir(out)
    os.replace(out, aside / "old")
    try:
        os.replace(new, out)
    except OSError:
        os.replace(aside / "old", out)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
