"""LoRA adapters as a peft adapter folder (adapter_config.json + adapter_model.safetensors): what `peft` loads with
`PeftModel.from_pretrained(base, folder)`, SGLang with `--lora-paths` or `/load_lora_adapter`, and rlpipe with
`lora.adapter_path`. Written under a temporary name and renamed into place, like the HF export.

Tensor names are peft's on-disk ones, `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`: without
the `base_model.model.` prefix peft would load nothing, silently.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlpipe.train.hf_export import new_file_mode, readable_temp_dir, replace_folder
from rlpipe.train.spec import LoraSpec

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


def adapter_config(spec: LoraSpec, base_model: str) -> dict:
    """peft's LoraConfig fields for these adapters (what peft, SGLang and vLLM read)."""
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
        "target_modules": list(spec.projections), "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "inference_mode": True, "modules_to_save": None,
    }  # fmt: skip


def save_adapter(named: list[tuple[str, torch.Tensor]], spec: LoraSpec, base_model: str, out: Path) -> Path:
    """Write the adapters (peft names) as a peft adapter folder at `out`, atomically; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = readable_temp_dir(out)
    try:
        (tmp / CONFIG_FILE).write_text(json.dumps(adapter_config(spec, base_model), indent=2) + "\n")
        save_file({n: t.detach().cpu().contiguous() for n, t in named}, str(tmp / WEIGHTS_FILE))
        os.chmod(tmp / WEIGHTS_FILE, new_file_mode(tmp))
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_adapter(folder: Path) -> dict[str, torch.Tensor]:
    """The adapter matrices of a peft adapter folder by peft name (safetensors, else peft's older .bin)."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file():
        return load_file(str(folder / WEIGHTS_FILE))
    return torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
