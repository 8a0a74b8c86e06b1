"""Writing the trainer's weights as a HuggingFace folder (Miles' --save-hf): serve or share them directly.

The folder is the source checkpoint's config and tokenizer files plus `model.safetensors` with the trained
weights, built under a temporary name and renamed into place, so a reader never sees half a model. Its folder and
files get the usual modes (0777 / 0666 minus the umask): a `tempfile.mkdtemp` folder's 0700 would survive the rename.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path

import torch
from safetensors.torch import save_file

# Files of an HF folder that describe the model (config, tokenizer, chat template) rather than hold weights.
DESCRIPTION_FILES = ("*.json", "*.txt", "*.model", "*.jinja")


def export_hf(named: list[tuple[str, torch.Tensor]], source: Path, out: Path) -> Path:
    """Write `named` (HF names) with `source`'s description files to `out` atomically; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = readable_temp_dir(out)
    try:
        for pattern in DESCRIPTION_FILES:
            for file in Path(source).glob(pattern):
                if not file.name.endswith(".safetensors.index.json"):  # describes the source's shards, not ours
                    shutil.copyfile(file, tmp / file.name)  # contents only: a new file's mode, not the source's
        tensors = {name: t.detach().cpu().contiguous() for name, t in named}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", new_file_mode(tmp))  # safetensors writes 0600 whatever the umask
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


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
