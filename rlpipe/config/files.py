"""Looking inside the files a config names, cheaply, before anything heavy starts.

Each `inspect_*` function returns what is wrong with one file or folder as a list of `Finding`s (empty: fine), in
the user's words with the path in them; the resolver turns them into problems under the config key that named the
file. Nothing here imports torch, transformers or megatron: prompt files are read with json / pyarrow, prompts are
counted with the `tokenizers` library, config.json is plain JSON, and checkpoints are judged by their file layout.
What only the real load can find (a corrupt tensor) is reported there, by file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpipe.data.rows import DatasetError, read_rows

# A prompt file up to this size is read whole (every row checked); a larger one by its first and last rows.
FULL_CHECK_BYTES = 8 * 2**20
# Prompts counted in tokens to prove `max_prompt_len` leaves some: at most this many rows.
TOKEN_CHECK_ROWS = 20_000
# config.json fields the trainer and the engines need, whatever the family.
HF_REQUIRED_FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a file: what, and how to fix it."""

    message: str
    fix: str


# ------------------------------------------------------------------------------------------- prompt data
def inspect_prompt_file(
    path: Path, input_key: str, label_key: str | None, max_prompt_len: int | None, tokenizer_json: Path | None
) -> list[Finding]:
    """A .jsonl/.parquet prompt file: readable, UTF-8, rows that parse, the input (and label) keys present, and,
    with `max_prompt_len`, at least one prompt short enough (counted without the chat template, which only adds)."""
    if not path.exists():
        return [Finding("file does not exist", "point it at a .jsonl or .parquet file")]
    if path.is_dir():
        return [Finding("is a folder, not a file", "point it at a .jsonl or .parquet file inside it")]
    if path.suffix not in (".jsonl", ".parquet"):
        return [Finding("unsupported file type: not .jsonl or .parquet", "use a .jsonl or .parquet file")]
    if not os.access(path, os.R_OK):
        return [Finding("is not readable (permission denied)", "fix its permissions")]
    if path.stat().st_size == 0:
        return [Finding("is empty", "point it at a file with one JSON object per line")]
    try:
        rows = _sample_rows(path)
    except DatasetError as exc:
        return [Finding(str(exc), "fix that row, or remove it")]
    if not rows:
        return [Finding("has no rows (only blank lines)", "point it at a file with rows")]
    findings = []
    for key, what in ((input_key, "input_key"), (label_key, "label_key")):
        if key is None:
            continue
        missing = next(((n, row) for n, row in rows if key not in row), None)
        if missing is not None:
            n, row = missing
            fix = f"set rollout.{what} to one of {sorted(row)}" + (
                ", or rollout.label_key=null if the reward needs no label" if what == "label_key" else ""
            )
            findings.append(Finding(f"{path}:{n}: no {key!r} key in the row (it has {sorted(row)})", fix))
    if not findings and max_prompt_len is not None and tokenizer_json is not None:
        findings += _prompt_lengths(path, rows, input_key, max_prompt_len, tokenizer_json)
    return findings


def _sample_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every row of a small file; the first and last rows of a large one (or a parquet file's columns as a row)."""
    if path.suffix == ".parquet":
        return _parquet_head(path)
    if path.stat().st_size <= FULL_CHECK_BYTES:
        return list(read_rows(path))
    first = next(read_rows(path), None)
    return [first, _last_jsonl_row(path)] if first is not None else []


def _parquet_head(path: Path) -> list[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a file that is not parquet
        raise DatasetError(f"{path}: cannot read it as parquet ({exc})") from None
    if meta.metadata.num_rows == 0:
        return []
    return [(1, dict.fromkeys(meta.schema_arrow.names))]


def _last_jsonl_row(path: Path) -> tuple[int, dict[str, Any]]:
    """The last non-blank line of a large JSON-lines file, parsed (its number is counted from the end)."""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 2**20))
        tail = fh.read().splitlines()
    lines = [line for line in tail if line.strip()]
    where = f"{path}: last row"
    try:
        row = json.loads(lines[-1].decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    return -1, row


def _prompt_lengths(
    path: Path, rows: list[tuple[int, dict[str, Any]]], input_key: str, max_prompt_len: int, tokenizer_json: Path
) -> list[Finding]:
    """A finding when every prompt (of a file small enough to count) is longer than max_prompt_len tokens."""
    if len(rows) > TOKEN_CHECK_ROWS or not tokenizer_json.is_file():
        return []
    from tokenizers import Tokenizer

    texts = [_prompt_text(row[input_key]) for _, row in rows]
    lengths = [len(enc.ids) for enc in Tokenizer.from_file(str(tokenizer_json)).encode_batch(texts)]
    if min(lengths) <= max_prompt_len:
        return []
    return [
        Finding(
            f"every prompt is longer than max_prompt_len {max_prompt_len} tokens (the shortest has "
            f"{min(lengths)}), so no prompt would be left",
            f"rollout.max_prompt_len={min(lengths) * 2} or more, or null",
        )
    ]


def _prompt_text(prompt: Any) -> str:
    """The text of a prompt as written (a string, or chat messages joined), for a lower bound on its tokens."""
    if isinstance(prompt, list):
        return "".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


# ------------------------------------------------------------------------------------------ model folders
def read_json_file(path: Path) -> tuple[Any, Finding | None]:
    """A JSON file's content, or a finding saying why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except json.JSONDecodeError as exc:
        return None, Finding(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})", "repair or replace it")
    except (OSError, UnicodeDecodeError) as exc:
        return None, Finding(f"{path} cannot be read ({exc})", "fix its permissions, or replace it")


def inspect_hf_folder(folder: Path, families: tuple[str, ...]) -> list[Finding]:
    """A HuggingFace model folder: config.json with the fields rlpipe needs and a family it converts, a
    tokenizer.json, and weights (every shard an index names)."""
    if not folder.exists():
        return [Finding("folder does not exist", "point it at a HuggingFace model folder")]
    if not folder.is_dir():
        return [Finding("is a file, not a model folder", "point it at the folder holding config.json")]
    findings = []
    config_path = folder / "config.json"
    if not config_path.is_file():
        findings.append(Finding("has no config.json", "point it at a HuggingFace model folder"))
    else:
        config, finding = read_json_file(config_path)
        if finding is not None:
            findings.append(finding)
        elif not isinstance(config, dict):
            findings.append(Finding(f"{config_path} is not a JSON object", "replace it with the model's config"))
        else:
            findings += _config_fields(config_path, config, families)
    if not (folder / "tokenizer.json").is_file():
        findings.append(
            Finding(
                "has no tokenizer.json (rlpipe loads the fast tokenizer saved with the model)",
                "save one there with tokenizer.save_pretrained(...)",
            )
        )
    findings += _weights(folder)
    return findings


def _config_fields(path: Path, config: dict[str, Any], families: tuple[str, ...]) -> list[Finding]:
    missing = [k for k in HF_REQUIRED_FIELDS if config.get(k) is None]
    if missing:
        return [Finding(f"{path} lacks {', '.join(missing)}", "use the config.json the model was saved with")]
    if config["model_type"] not in families:
        return [
            Finding(
                f"{path}: model_type {config['model_type']!r} is not a family rlpipe converts",
                "use a model of one of: " + ", ".join(families),
            )
        ]
    return []


def _weights(folder: Path) -> list[Finding]:
    for index_name in WEIGHT_INDEXES:
        index_path = folder / index_name
        if index_path.is_file():
            index, finding = read_json_file(index_path)
            if finding is not None:
                return [finding]
            shards = sorted(set((index or {}).get("weight_map", {}).values()))
            absent = [s for s in shards if not (folder / s).is_file()]
            if absent:
                return [Finding(f"{index_path} names shards that are missing: {', '.join(absent[:5])}", "copy them")]
            return []
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        return [
            Finding(
                "has no weights (*.safetensors or pytorch_model*.bin)",
                "copy the model's weight files into it",
            )
        ]
    return []


# ------------------------------------------------------------------------------------ Megatron checkpoints
TRACKER_FILE = "latest_checkpointed_iteration.txt"  # Megatron-LM's name for the file naming the newest iter_*


def inspect_checkpoint_folder(folder: Path) -> list[Finding]:
    """A torch_dist checkpoint folder with a tracker: the tracker names an iteration folder that holds
    Megatron's metadata. A folder without a tracker has nothing to inspect (no checkpoint yet)."""
    tracker = folder / TRACKER_FILE
    if not tracker.exists():
        return []
    try:
        text = tracker.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding(f"{tracker} cannot be read ({exc})", "fix its permissions")]
    if not text.isdigit():
        return [
            Finding(
                f"{tracker} holds {text[:40]!r}, not an iteration number",
                "write the number of the newest iter_* folder into it, or remove the folder to start fresh",
            )
        ]
    iteration = folder / f"iter_{int(text):07d}"
    if not iteration.is_dir():
        return [
            Finding(
                f"{tracker} names {iteration.name}, which is missing",
                "write the number of an existing iter_* folder into the tracker, or remove it to start fresh",
            )
        ]
    absent = [name for name in ("metadata.json", ".metadata", "common.pt") if not (iteration / name).is_file()]
    if absent:
        return [
            Finding(
                f"{iteration} is not a complete torch_dist checkpoint (no {', '.join(absent)}): an interrupted "
                "copy, or Megatron's legacy per-rank format",
                "point the tracker at a complete iter_* folder, or convert the checkpoint with Megatron-LM",
            )
        ]
    return []


# ------------------------------------------------------------------------------------------------ outputs
def not_creatable_in(folder: Path) -> str | None:
    """Why nothing can be created in `folder` (made with its missing parents), or None: the nearest existing
    ancestor must be a writable folder."""
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None
