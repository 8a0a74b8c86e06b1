"""Writing the trainer's weights as a HuggingFace folder (Miles' --save-hf): serve or share them directly.

The folder is the source checkpoint's config and tokenizer files plus `model.safetensors` with the trained
weights, built under a temporary name and renamed into place, so a reader never sees half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

# Files of an HF folder that describe the model (config, tokenizer, chat template) rather than hold weights.
DESCRIPTION_FILES = ("*.json", "*.txt", "*.model", "*.jinja")


def export_hf(named: list[tuple[str, torch.Tensor]], source: Path, out: Path) -> Path:
    """Write `named` (HF names) with `source`'s description files to `out` atomically; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for pattern in DESCRIPTION_FILES:
            for file in Path(source).glob(pattern):
                if not file.name.endswith(".safetensors.index.json"):  # describes the source's shards, not ours
                    shutil.copy2(file, tmp / file.name)
        tensors = {name: t.detach().cpu().contiguous() for name, t in named}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
