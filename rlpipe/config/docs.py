"""The config reference, generated from the schema (each field is documented once, where it is defined).

python -m rlpipe.config.docs > docs/config.md
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from rlpipe.config.keys import _model_class
from rlpipe.config.schema import RunConfig

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bounds(metadata: list[object]) -> str:
    """annotated-types constraints (Gt, Ge, Lt, Le) as `> 0, <= 1`."""
    parts = [f"{op} {getattr(m, attr)}" for m in metadata for attr, op in _BOUNDS.items() if hasattr(m, attr)]
    return ", ".join(parts)


def field_type(info: FieldInfo) -> str:
    """A field's readable type with its bounds: `int (> 0) | None`, `float (>= 0, <= 1)`."""
    bounds = _bounds(info.metadata)
    return _type_name(info.annotation) + (f" ({bounds})" if bounds else "")


def _type_name(annotation: object) -> str:
    """A readable type: `int (> 0) | None`, `'sync' | 'async'`, `dict[str, EvalDataset]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = _bounds(list(args[1:]))
        return f"{_type_name(args[0])} ({bounds})" if bounds else _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _rows(model: type[BaseModel], prefix: str) -> typing.Iterator[tuple[str, list[str]]]:
    """(section, table rows) for `model` and every nested group, depth first."""
    rows, nested = [], []
    for name, info in model.model_fields.items():
        sub = _model_class(info.annotation)
        if sub is not None:
            nested.append((f"{prefix}{name}", sub))
            continue
        mapped = [a for a in typing.get_args(info.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if typing.get_origin(info.annotation) is dict and mapped:  # eval.datasets: name -> EvalDataset
            nested.append((f"{prefix}{name}.<name>", mapped[0]))
        default = "required" if info.default is PydanticUndefined else f"`{info.default!r}`"
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = f"`{extra['miles']}`" if extra.get("miles") else ""
        kind = field_type(info).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {kind} | {default} | {info.description} | {flag} |")
    if rows:
        yield prefix.rstrip(".") or "top level", [model.__doc__ or "", *rows]
    for name, sub in nested:
        yield from _rows(sub, name + ".")


def render() -> str:
    out = [
        "# Config reference",
        "",
        "Generated from `rlpipe/config/schema.py` by `python -m rlpipe.config.docs`; do not edit by hand.",
        "`None` defaults are optional or derived (see `python launch.py --cfg job` for the reasons).",
    ]
    for section, (doc, *rows) in _rows(RunConfig, ""):
        out += ["", f"## {section}", "", doc, "", "| key | type | default | meaning | Miles flag |",
                "|---|---|---|---|---|", *rows]  # fmt: skip
    return "\n".join(line for line in out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
