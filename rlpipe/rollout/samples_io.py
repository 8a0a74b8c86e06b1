"""Samples as plain data: for checkpoints (the partial-rollout buffer) and the debug rollout dumps.

A sample becomes a dict of its fields (status as its string), so a dump does not depend on the class
pickling the same way later. Dumps are pickle files (Miles' `--save-debug-rollout-data` writes torch.save'd
dicts, also pickle): `{"rollout_id": k, "samples": [dict, ...]}` at `path.format(rollout_id=k)`.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from rlpipe.data.sample import Sample, Status


def sample_to_dict(sample: Sample) -> dict[str, Any]:
    out = dataclasses.asdict(sample)
    out["status"] = str(sample.status)
    routes = sample.rollout_routed_experts
    if routes is not None:  # raw bytes and a shape: a checkpoint's torch.load(weights_only=True) takes those
        out["rollout_routed_experts"] = {"int32": routes.astype(np.int32).tobytes(), "shape": list(routes.shape)}
    return out


def sample_from_dict(data: dict[str, Any]) -> Sample:
    routes = data.get("rollout_routed_experts")
    if routes is not None:
        routes = np.frombuffer(routes["int32"], dtype=np.int32).reshape(routes["shape"]).copy()
    return Sample(**{**data, "status": Status(data["status"]), "rollout_routed_experts": routes})


def rollout_data_path(template: str, rollout_id: int) -> Path:
    return Path(template.format(rollout_id=rollout_id))


def save_rollout_data(template: str, rollout_id: int, samples: list[Sample]) -> Path:
    """Write one rollout's samples to `template.format(rollout_id=...)` (atomically: temp file, rename)."""
    path = rollout_data_path(template, rollout_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        pickle.dump({"rollout_id": rollout_id, "samples": [sample_to_dict(s) for s in samples]}, fh)
    tmp.replace(path)
    return path


def load_rollout_data(template: str, rollout_id: int) -> list[Sample]:
    """The samples `save_rollout_data` wrote for `rollout_id`."""
    path = rollout_data_path(template, rollout_id)
    if not path.is_file():
        raise FileNotFoundError(
            f"debug.load_rollout_data: no saved rollout {rollout_id} at {path}; save it first with "
            f"debug.save_rollout_data={template} (e.g. with debug.rollout_only=true), or lower rollout.num_rollout"
        )
    with path.open("rb") as fh:
        data = pickle.load(fh)
    return [sample_from_dict(s) for s in data["samples"]]
