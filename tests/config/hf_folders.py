"""HuggingFace-shaped folders for the config tests: the files the config phase looks for, with no real weights
(importable by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

# config.json of conf/model/tiny.yaml's architecture, as transformers writes it for Qwen2
TINY_CONFIG = {
    "model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 22,
    "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}  # fmt: skip


def write_hf_folder(folder: Path, config: dict | None, tokenizer: str = "{}") -> Path:
    """A folder laid out as a HuggingFace checkpoint: config.json (unless None), tokenizer.json and a weights file
    (empty: the config phase only checks that the files are there)."""
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(tokenizer)
    (folder / "model.safetensors").write_text("")
    return folder
