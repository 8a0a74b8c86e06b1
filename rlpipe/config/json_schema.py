"""JSON schemas of the config YAMLs, generated from the pydantic schema, for editor completion and checking.

One schema per config group (`rlpipe/schemas/<group>.schema.json`: the body of a `conf/<group>/*.yaml` file)
and `experiment.schema.json` for `conf/experiment/*.yaml` and `conf/config.yaml` (both set keys of any group
from the top level). Every shipped YAML names its schema in a `# yaml-language-server: $schema=...` line.

A YAML file sets only part of the config (Hydra composes the rest), so nothing is required; any leaf value may
be a Hydra interpolation (`${...}`) or the missing marker `???`; a `defaults` list may open any file.

    python -m rlpipe.config.json_schema --write   # regenerate after a schema change
    python -m rlpipe.config.json_schema --check   # exit 1 naming stale files
    python -m rlpipe.config.json_schema           # print the experiment schema
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from rlpipe.config.schema import GROUPS, RunConfig

DRAFT = "https://json-schema.org/draft/2020-12/schema"
EXPERIMENT = "experiment.schema.json"

INTERPOLATION = {
    "description": "A Hydra interpolation such as ${demo.task} (resolved when the config is composed), "
    "or ??? (a value that must be given on the command line).",
    "type": "string",
    "pattern": r"^\?\?\?$|\$\{.*\}",
}
DEFAULTS = {
    "description": "Hydra's defaults list: config names (`_self_`, `grpo`) or one-key mappings "
    "(`model: tiny`, `override /model: tiny`, `optional group: option`).",
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {
                    "anyOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {"type": "string"}}]
                },
            },
        ]
    },
}
_ANNOTATIONS = ("description", "default", "miles")  # on a property's outer schema, where editors show them
_REF = "#/$defs/"


def schema_dir() -> Path:
    """The folder the schema files live in, inside the installed package (the YAML headers point here)."""
    return Path(__file__).resolve().parents[1] / "schemas"


def _refs(node: Any) -> set[str]:
    """The `$defs` names a schema fragment references directly."""
    if isinstance(node, dict):
        own = {node["$ref"].removeprefix(_REF)} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _is_model(node: dict[str, Any], models: set[str]) -> bool:
    """The schema holds a nested model (possibly nullable): its own keys are checked, it is not a leaf."""
    return any(b.get("$ref", "").removeprefix(_REF) in models for b in node.get("anyOf", [node]))


def _split(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what editors show on hover: description, default, the Miles flag where there is one; the constraints),
    pydantic's generated title ("N Samples") dropped."""
    notes = {k: node[k] for k in _ANNOTATIONS if k in node and (k == "default" or node[k] is not None)}
    return notes, {k: v for k, v in node.items() if k not in (*_ANNOTATIONS, "title")}


def _contents(node: dict[str, Any], models: set[str]) -> dict[str, Any]:
    """`node` with a list's items and a map's values post-processed as properties in their own right."""
    keys = ("items", "additionalProperties")
    return {k: _property(v, models) if k in keys and isinstance(v, dict) else v for k, v in node.items()}


def _property(node: dict[str, Any], models: set[str]) -> dict[str, Any]:
    """One property's schema. A nested model stays a reference (its default, the model's own field defaults, is
    not repeated); a map of models (eval.datasets) keeps each entry checked; anything else is a leaf, which also
    accepts an interpolation or `???`."""
    notes, constraints = _split(node)
    if _is_model(node, models):
        return {k: v for k, v in notes.items() if k != "default" or v is None} | constraints
    values = node.get("additionalProperties")
    if isinstance(values, dict) and _is_model(values, models):
        return notes | constraints
    branches = constraints["anyOf"] if set(constraints) == {"anyOf"} else [constraints]
    return notes | {"anyOf": [*(_contents(b, models) for b in branches), {"$ref": _REF + "Interpolation"}]}


def _object(model: dict[str, Any], models: set[str]) -> dict[str, Any]:
    """A model's schema with every key optional (a file sets part of the config) and each property
    post-processed; unknown keys stay forbidden (or allowed) as the pydantic model says."""
    out = {k: v for k, v in model.items() if k not in ("properties", "required", "title")}
    out["properties"] = {name: _property(prop, models) for name, prop in model["properties"].items()}
    return out


def _used(root: dict[str, Any], defs: dict[str, dict[str, Any]]) -> list[str]:
    """The definitions `root` needs, directly or through other definitions, sorted."""
    used: set[str] = set()
    todo = _refs(root)
    while todo:
        name = todo.pop()
        used.add(name)
        todo |= _refs(defs.get(name, {})) - used
    return sorted(used & set(defs))


def _document(title: str, model: dict[str, Any], defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A schema file: `model` at the top with Hydra's `defaults` allowed, and the definitions it uses."""
    root = _object(model, set(defs))
    root["properties"] = {"defaults": {"$ref": _REF + "Defaults"}, **root["properties"]}
    table = {"Defaults": DEFAULTS, "Interpolation": INTERPOLATION}
    table |= {name: _object(defs[name], set(defs)) for name in _used(root, defs)}
    return copy.deepcopy({"$schema": DRAFT, "title": title, **root, "$defs": table})  # no parts shared


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema: one per config group, and the experiment schema (also the root config.yaml's)."""
    full = RunConfig.model_json_schema()
    defs = full.pop("$defs")
    out = {}
    for group in sorted(GROUPS):
        model = defs[full["properties"][group]["$ref"].removeprefix(_REF)]
        out[f"{group}.schema.json"] = _document(f"rlpipe config group {group} (conf/{group}/*.yaml)", model, defs)
    title = "rlpipe whole config (conf/config.yaml, and conf/experiment/*.yaml with # @package _global_)"
    out[EXPERIMENT] = _document(title, full, defs)
    return out


def render(schema: dict[str, Any]) -> str:
    """A schema file's text: the generator's stable key order, two-space indent, a trailing newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stale(folder: Path) -> list[str]:
    """The schema files in `folder` that are not what the generator produces now: changed, missing, left over."""
    expected = {name: render(schema) for name, schema in schemas().items()}
    present = {p.name for p in folder.glob("*.schema.json")}
    differ = {n for n, text in expected.items() if n not in present or (folder / n).read_text("utf-8") != text}
    return sorted(differ | (present - set(expected)))


def write(folder: Path) -> list[str]:
    """Bring `folder` up to date (left-over schema files removed); the names of the files changed."""
    changed = stale(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = schemas()
    for name in changed:
        if name in expected:
            (folder / name).write_text(render(expected[name]), encoding="utf-8")
        else:
            (folder / name).unlink()
    return changed


def main(argv: list[str] | None = None, prog: str = "python -m rlpipe.config.json_schema") -> int:
    """`--write` regenerates, `--check` exits 1 naming stale files, `--dir` prints where they are (for an editor's
    settings), `NAME` prints one schema (a group, or experiment: the default)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    names = sorted(n.removesuffix(".schema.json") for n in schemas())
    parser.add_argument("name", nargs="?", default="experiment", choices=names, help="the schema to print")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dir", action="store_true", help="print the folder of the installed schema files")
    mode.add_argument("--write", action="store_true", help="regenerate the schema files in the package")
    mode.add_argument("--check", action="store_true", help="exit 1 naming the files --write would change")
    args = parser.parse_args(argv)
    folder = schema_dir()
    if args.write:
        for name in write(folder):
            print(f"rlpipe: updated {folder / name}", file=sys.stderr)
        return 0
    if args.check:
        names = stale(folder)
        if names:
            print(f"rlpipe: stale JSON schemas in {folder}: {', '.join(names)}", file=sys.stderr)
            print("rlpipe: regenerate them: python -m rlpipe.config.json_schema --write", file=sys.stderr)
        return 1 if names else 0
    if args.dir:
        print(folder)
        return 0
    print(render(schemas()[f"{args.name}.schema.json"]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
