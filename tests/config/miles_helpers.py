"""Helpers of the Miles interop tests: load an imported experiment as a user would, compare two resolved runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rlpipe.config import CONF_DIR, Resolved, load
from rlpipe.config.miles import MEGATRON_MODEL_SWITCHES, ImportResult, to_experiment_yaml


def load_imported(result: ImportResult, tmp_path: Path, name: str = "imported") -> Resolved:
    """Write the imported experiment into a copy of conf/ and load it the way users would."""
    conf = tmp_path / "conf"
    if not conf.exists():
        shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / f"{name}.yaml").write_text(to_experiment_yaml(result, name))
    return load([f"experiment={name}"], conf_dir=conf, check_paths=False)


def same_run(got: Resolved, want: Resolved, skip: tuple[str, ...] = (), differ: dict[str, Any] | None = None) -> None:
    """Every resolved value equal, except names, `skip`ped groups, the `differ` keys (which must hold the given
    values), and a model switch the original left to the HF checkpoint (None), which Megatron's flags can only
    state as Megatron's default."""
    a, b = got.cfg.model_dump(), want.cfg.model_dump()
    for key in ("run_name", "miles", *skip):  # miles.extra_args: what an import keeps for the export only
        a.pop(key), b.pop(key)
    a["model"].pop("name"), b["model"].pop("name")
    for key, value in (differ or {}).items():
        *parents, leaf = key.split(".")
        node_a, node_b = a, b
        for part in parents:
            node_a, node_b = node_a[part], node_b[part]
        assert node_a[leaf] == value, key
        node_a[leaf] = node_b[leaf]
    for name, default in MEGATRON_MODEL_SWITCHES.items():
        if b["model"][name] is None and a["model"][name] is not None:
            assert a["model"][name] == default, name
            a["model"][name] = None
    assert a == b, {k: (v, _flat(b).get(k)) for k, v in _flat(a).items() if _flat(b).get(k) != v}
    assert got.topology == want.topology


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, for a readable difference."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.removesuffix("."): node}
