"""The SGLang ServerArgs field names `sglang.extra` keys are checked against, without importing SGLang needlessly.

With SGLang installed the names come from its own `ServerArgs` (a dataclass before 0.5.23, a msgspec Struct
from 0.5.23 on); otherwise from the checked-in list for the pinned version (`server_args_0_5_23.txt`, generated
from the sglang==0.5.23 wheel) when the config names that version; other versions go unchecked without SGLang.
`sglang.Engine(**kwargs)` rejects unknown keywords and `launch_server` rejects unknown flags, so a typo found
here saves a GPU job that would die minutes into its start.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
from pathlib import Path

PINNED_VERSION = "0.5.23"
PINNED_LIST = Path(__file__).with_name("server_args_0_5_23.txt")
# ServerArgs fields rlpipe sets from its own config; sglang.extra may not set them (the config rule says so).
OWNED_FIELDS = {
    "model_path": "ckpt.hf_checkpoint",
    "host": "the launcher",
    "port": "the launcher",
    "tp_size": "sglang.rollout_num_gpus_per_engine",
    "base_gpu_id": "the launcher (engine layout)",
    "mem_fraction_static": "sglang.mem_fraction_static",
    "context_length": "sglang.context_length",
    "log_level": "sglang.log_level",
    "enable_memory_saver": "cluster.offload_rollout",
}


@functools.cache
def server_arg_names(version: str) -> frozenset[str] | None:
    """Field names of the installed SGLang's ServerArgs; else of the checked-in list when `version` (the config's
    sglang.version) is the pinned one; else None: there is nothing to check against."""
    if importlib.util.find_spec("sglang") is not None:
        from sglang.srt.server_args import ServerArgs  # heavy, and only where SGLang is installed

        if dataclasses.is_dataclass(ServerArgs):
            return frozenset(f.name for f in dataclasses.fields(ServerArgs))
        return frozenset(ServerArgs.__struct_fields__)  # msgspec.Struct (0.5.23+)
    if version != PINNED_VERSION:
        return None
    lines = PINNED_LIST.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def unknown_key_message(key: str, names: frozenset[str]) -> str | None:
    """None if `key` is a ServerArgs field; else a message with the closest field names."""
    if key in names:
        return None
    close = difflib.get_close_matches(key, sorted(names), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no similar field"
    return f"{key!r} is not a field of SGLang's ServerArgs ({hint})"
