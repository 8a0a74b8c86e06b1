"""Write the checked-in SGLang ServerArgs lists (`server_args_<version>.txt`) from sglang wheels, not importing SGLang.

    python -m rlpipe.rollout.sglang.server_args_gen 0.5.15.post1 0.5.16 0.5.23   # pip download --no-deps each
    python -m rlpipe.rollout.sglang.server_args_gen ~/wheels/sglang-0.5.23-*.whl  # or read wheels already here

The wheel's `sglang/srt/server_args.py` is parsed with `ast`. Fields: the annotated names of `class ServerArgs` (a
dataclass up to 0.5.19) or, from 0.5.20 on, of the msgspec namespace classes named in `_INPUT_NAMESPACES`
(declared in `sglang/srt/arg_groups/fields/*.py`); ClassVars are not fields. Flags: the ones
`add_cli_args_from_dataclass` derives from each field's `A[T, "help"]` / `A[T, Arg(...)]` annotation (its
`cli_name`, `aliases`, `no_cli`, `action`), plus every `parser.add_argument(...)` in `ServerArgs.add_cli_args`.
`server_args.flag_table` turns those into the list's `[flags]` and `[unflagged]` sections.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlpipe.rollout.sglang.server_args import Registration, flag_table, list_path

SERVER_ARGS = "sglang/srt/server_args.py"
FIELDS_DIR = "sglang/srt/arg_groups/fields/"


def wheel_sources(wheel: Path) -> dict[str, str]:
    """The files the parser reads, by their path in the wheel: server_args.py and the namespace field modules."""
    with zipfile.ZipFile(wheel) as zf:
        wanted = [n for n in zf.namelist() if n == SERVER_ARGS or (n.startswith(FIELDS_DIR) and n.endswith(".py"))]
        return {name: zf.read(name).decode() for name in wanted}


def parse_server_args(sources: Mapping[str, str]) -> tuple[list[str], list[Registration]]:
    """The ServerArgs field names in declaration order, and launch_server's flag registrations."""
    module = ast.parse(sources[SERVER_ARGS])
    server_args = _class(module, "ServerArgs")
    fields: dict[str, ast.expr] = {}
    for cls in [*_namespace_classes(module, sources), server_args]:
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and not _is_classvar(stmt):
                fields.setdefault(stmt.target.id, stmt.annotation)
    auto = [reg for name, annotation in fields.items() if (reg := _auto_registration(name, annotation))]
    return list(fields), auto + _manual_registrations(server_args)


def render(version: str, wheel_name: str, fields: list[str], registrations: list[Registration]) -> str:
    """The list's text: a header naming the wheel, then `[fields]`, `[flags]` and `[unflagged]`."""
    rows, unflagged = flag_table(fields, registrations)
    header = [
        f"# SGLang {version} ServerArgs: {len(fields)} fields; {len(rows)} launch_server flags other than plain "
        f"--field-name; {len(unflagged)} fields without a flag.",
        f"# Generated from {wheel_name} (PyPI) by `python -m rlpipe.rollout.sglang.server_args_gen`; do not edit.",
        "# [flags]: `flag -> field kind`, kind primary / alias / deprecated / no (see server_args.flag_table).",
    ]
    body = ["[fields]", *fields, "[flags]", *(" ".join((f, "->", to, k)) for f, to, k in rows), "[unflagged]"]
    return "\n".join([*header, *body, *unflagged]) + "\n"


def write_list(wheel: Path) -> Path:
    """Parse one wheel and write its list next to server_args.py; the path written."""
    version = wheel.name.split("-")[1]
    fields, registrations = parse_server_args(wheel_sources(wheel))
    path = list_path(version)
    path.write_text(render(version, wheel.name, fields, registrations))
    return path


def download(version: str, into: Path) -> Path:
    """The sglang==`version` wheel, fetched with `pip download --no-deps` (nothing is installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"sglang=={version}"]
    subprocess.run([*cmd, "-d", str(into)], check=True)
    return next(into.glob(f"sglang-{version}-*.whl"))


def _class(module: ast.Module, name: str) -> ast.ClassDef:
    found = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == name]
    if not found:
        raise ValueError(f"no class {name} at the top level of the module")
    return found[0]


def _namespace_classes(module: ast.Module, sources: Mapping[str, str]) -> list[ast.ClassDef]:
    """The classes `_INPUT_NAMESPACES = [Model, ...]` names (0.5.20+), found through the module's imports."""
    listed = [
        elt.id
        for node in module.body
        if isinstance(node, ast.Assign) and any(_name(t) == "_INPUT_NAMESPACES" for t in node.targets)
        for elt in getattr(node.value, "elts", [])
        if isinstance(elt, ast.Name)
    ]
    origin = {  # local name -> (module path in the wheel, name there)
        alias.asname or alias.name: (node.module.replace(".", "/") + ".py", alias.name)
        for node in module.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    return [_class(ast.parse(sources[origin[name][0]]), origin[name][1]) for name in listed]


def _auto_registration(field: str, annotation: ast.expr) -> Registration | None:
    """The flag add_cli_args_from_dataclass makes for a field: `--field-name` (or Arg's cli_name) plus Arg's aliases;
    None for a field without A[T, "help"] / A[T, Arg(...)] metadata, or with no_cli=True."""
    meta = _cli_metadata(annotation)
    if meta is None or meta.get("no_cli"):
        return None
    primary = meta.get("cli_name") or "--" + field.replace("_", "-")
    return Registration((primary, *(meta.get("aliases") or ())), field, meta.get("action") or "store")


def _cli_metadata(annotation: ast.expr) -> dict[str, Any] | None:
    """Arg(...)'s keywords from `A[T, Arg(...)]` (a help string alone gives {}); None without either."""
    if not (isinstance(annotation, ast.Subscript) and _name(annotation.value) in ("A", "Annotated")):
        return None
    extras = annotation.slice.elts[1:] if isinstance(annotation.slice, ast.Tuple) else []
    for extra in extras:
        if isinstance(extra, ast.Call) and _name(extra.func) == "Arg":
            return {kw.arg: _value(kw.value) for kw in extra.keywords if kw.arg}
        if isinstance(extra, ast.JoinedStr | ast.BinOp) or (
            isinstance(extra, ast.Constant) and isinstance(extra.value, str)
        ):
            return {}
    return None


def _manual_registrations(server_args: ast.ClassDef) -> list[Registration]:
    """Every `parser.add_argument("--flag", ..., dest=..., action=...)` in ServerArgs.add_cli_args."""
    found = [n for n in server_args.body if isinstance(n, ast.FunctionDef) and n.name == "add_cli_args"]
    registrations = []
    for call in (n for fn in found for n in ast.walk(fn) if isinstance(n, ast.Call)):
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument"):
            continue
        options = tuple(a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
        keywords = {kw.arg: kw.value for kw in call.keywords if kw.arg}
        longs = [o for o in options if o.startswith("--")]
        if not longs:
            continue
        dest = _value(keywords["dest"]) if "dest" in keywords else longs[0][2:].replace("-", "_")
        registrations.append(Registration(options, dest, _value(keywords.get("action")) or "store"))
    return registrations


def _is_classvar(stmt: ast.AnnAssign) -> bool:
    annotation = stmt.annotation.value if isinstance(stmt.annotation, ast.Subscript) else stmt.annotation
    return _name(annotation) == "ClassVar"


def _name(node: ast.AST | None) -> str:
    """A Name's or Attribute's last name (`argparse.BooleanOptionalAction` -> `BooleanOptionalAction`)."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _value(node: ast.expr | None) -> Any:
    """A literal's value, or for a class name its name (action=DeprecatedStoreTrueAction); None otherwise."""
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _name(node) or None


def main(argv: list[str]) -> None:
    """Write the list of each version (downloaded) or wheel path given."""
    if not argv:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        for arg in argv:
            wheel = Path(arg) if arg.endswith(".whl") else download(arg, Path(tmp))
            print(write_list(wheel))


if __name__ == "__main__":
    main(sys.argv[1:])
