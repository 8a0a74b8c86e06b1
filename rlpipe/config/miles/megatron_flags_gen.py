"""Write the checked-in list of Megatron-LM's command-line flags (`megatron_flags.txt`), not importing Megatron.

    python -m rlpipe.config.miles.megatron_flags_gen ~/Megatron-LM/megatron/training/arguments.py
    python -m rlpipe.config.miles.megatron_flags_gen \\
        NVIDIA/Megatron-LM=/src/Megatron-LM.git radixark/Megatron-LM=/src/radixark-Megatron-LM.git@main

Each SOURCE is `[NAME=]PATH[@REV]`. PATH is a Megatron-LM `megatron/training/arguments.py` (the other files are read
from the same work tree, two folders up), a work tree holding one, or a git directory (bare or not), whose files are
read at REV (default HEAD) with `git show`. NAME is the repository the header names (default: the folder's name).
The commit and date in the header come from git (`unknown` outside a git checkout). The list is the union of the
sources' flags: the checked-in one reads NVIDIA/Megatron-LM and radixark/Megatron-LM, the fork Miles runs (which
keeps flags NVIDIA's has renamed, e.g. `--beta-fast` for `--yarn-beta-fast`, and adds its own, e.g. `--dsv4-*`).

`megatron/training/arguments.py` is parsed with `ast`; nothing is imported (Megatron needs torch). Its parser gets
its flags two ways, and both are read:

* every `*.add_argument('--x', '--no-x', ...)` call in the file: each option string, as written;
* every `ArgumentGroupFactory(Config, exclude=[...])` there (megatron/training/argument_utils.py), which adds one
  flag per field of the config dataclass `Config` (its dataclass bases' fields included) that is neither in
  `exclude` nor `init=False`: `--field-name`, or `--no-field-name --disable-field-name` for a `bool` /
  `Optional[bool]` field whose default is not False, unless the field's
  `metadata={"argparse_meta": {"arg_names": [...]}}` names the flags itself;

and `action=argparse.BooleanOptionalAction` (in either) adds the `--no-x` argparse derives for each `--x`. Flags
added only when an optional package is present (Kitchen's) are listed too: they are Megatron's flags all the same.
The dataclasses are found by following the imports of arguments.py (and the re-exports of the modules they name) to
their source files. A construct the parser cannot read (an option string that is not a literal, an `exclude` or
`metadata` that is not a literal, a config class it cannot find) stops the run with an error naming it, rather than
leaving flags out.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ARGUMENTS_PY = "megatron/training/arguments.py"
FACTORY = "ArgumentGroupFactory"
LIST_PATH = Path(__file__).with_name("megatron_flags.txt")

# A relative path in the checkout ("megatron/core/model_parallel_config.py") -> its text, or None when absent.
Reader = Callable[[str], str | None]


def parse_flags(arguments_source: str, read: Reader, module: str = "megatron.training.arguments") -> list[str]:
    """Every flag (with its leading `--`) the parser built by `arguments_source` defines, sorted. `read` gives the
    other files of the checkout, by relative path, for the config dataclasses the factories expand."""
    tree = ast.parse(arguments_source)
    flags = set(_add_argument_flags(tree))
    modules = _Modules(read)
    modules.cache[module] = (tree, False)
    for call, scope in _factory_calls(tree):
        if not call.args:
            raise ValueError(f"line {call.lineno}: {FACTORY}() without a config class")
        cls, cls_module = modules.resolve_expr(call.args[0], module)
        exclude = _exclude(call, scope)
        flags.update(_dataclass_flags(cls, cls_module, exclude, modules))
    return sorted(flags)


@dataclass(frozen=True)
class Source:
    """One Megatron-LM tree: the repository the header names, its commit and commit date, and its files."""

    repo: str
    commit: str
    date: str
    read: Reader

    def flags(self) -> list[str]:
        source = self.read(ARGUMENTS_PY)
        if source is None:
            raise FileNotFoundError(f"{self.repo}: no {ARGUMENTS_PY}")
        return parse_flags(source, self.read)


def open_source(spec: str) -> Source:
    """A Source from `[NAME=]PATH[@REV]` (see the module docstring)."""
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = "", spec
    path, at, rev = rest.rpartition("@")
    if not at or not Path(path).exists():
        path, rev = rest, ""
    where = Path(path).resolve()
    if where.is_file():  # .../megatron/training/arguments.py
        where = where.parents[2]
    if rev or not (where / ARGUMENTS_PY).is_file():
        rev = rev or "HEAD"
        read: Reader = lambda rel: _git(where, "show", f"{rev}:{rel}")  # noqa: E731
    else:
        read = lambda rel: (where / rel).read_text() if (where / rel).is_file() else None  # noqa: E731
    log = (_git(where, "log", "-1", "--format=%H %cs", rev or "HEAD") or "unknown unknown").split()
    return Source(name or where.name, log[0], log[1], read)


def render(sources: list[tuple[Source, list[str]]]) -> str:
    """The list's text: a header naming each source, then the union of their flags, one a line without `--`."""
    flags = sorted({flag for _, found in sources for flag in found})
    header = [
        f"# Megatron-LM command-line flags ({len(flags)}), without the leading `--`: every option string that the",
        f"# parser of {ARGUMENTS_PY} defines (add_argument calls, ArgumentGroupFactory dataclasses) in any of:",
        *(f"#   {s.repo} at commit {s.commit} ({s.date}): {len(found)} flags" for s, found in sources),
        "# Generated by `python -m rlpipe.config.miles.megatron_flags_gen`; do not edit.",
    ]
    return "\n".join([*header, *(flag.removeprefix("--") for flag in flags)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="[NAME=]PATH[@REV] of a Megatron-LM tree")
    parser.add_argument("--output", type=Path, default=LIST_PATH, help=f"where to write (default: {LIST_PATH})")
    args = parser.parse_args(argv)
    sources = [(source, source.flags()) for source in map(open_source, args.sources)]
    args.output.write_text(render(sources))
    for source, found in sources:
        print(f"{source.repo} {source.commit}: {len(found)} flags")
    print(f"-> {args.output}")
    return 0


# ------------------------------------------------------------------------------------------------ internals
def _add_argument_flags(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            options = []
            for arg in node.args:
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    raise ValueError(f"line {node.lineno}: add_argument option string {ast.unparse(arg)!r}")
                options.append(arg.value)
            action = next((kw.value for kw in node.keywords if kw.arg == "action"), None)
            yield from _with_negations(options, action)


def _with_negations(options: list[str], action: ast.expr | None) -> list[str]:
    """The `--` option strings, plus the `--no-x` that argparse.BooleanOptionalAction adds for each `--x`."""
    flags = [o for o in options if o.startswith("--")]
    if action is not None and _name(action) == "BooleanOptionalAction":
        flags += [f"--no-{flag[2:]}" for flag in flags]
    return flags


def _factory_calls(tree: ast.Module) -> Iterator[tuple[ast.Call, ast.AST]]:
    """Each `ArgumentGroupFactory(...)` call, with the function (or module) it sits in."""

    def walk(node: ast.AST, scope: ast.AST) -> Iterator[tuple[ast.Call, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
            if isinstance(child, ast.Call) and _name(child.func) == FACTORY:
                yield child, scope
            yield from walk(child, inner)

    return walk(tree, tree)


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _exclude(call: ast.Call, scope: ast.AST) -> set[str]:
    node = next((kw.value for kw in call.keywords if kw.arg == "exclude"), call.args[1] if len(call.args) > 1 else None)
    return set() if node is None else set(_str_list(node, scope, call.lineno))


def _str_list(node: ast.expr, scope: ast.AST, lineno: int) -> list[str]:
    """The strings of a literal list / tuple / set, a `+` of them, or a name assigned one earlier in `scope`."""
    if isinstance(node, ast.Constant) and node.value is None:
        return []
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _str_list(node.left, scope, lineno) + _str_list(node.right, scope, lineno)
    if isinstance(node, ast.Name):
        assigned = [
            stmt.value
            for stmt in ast.walk(scope)
            if isinstance(stmt, ast.Assign)
            and stmt.lineno < lineno
            and any(isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets)
        ]
        if assigned:
            return _str_list(assigned[-1], scope, lineno)
    raise ValueError(f"line {lineno}: {FACTORY} exclude {ast.unparse(node)!r} is not a literal list of names")


class _Modules:
    """Parsed modules of the checkout by dotted name, and class lookup through their imports."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.cache: dict[str, tuple[ast.Module, bool] | None] = {}

    def get(self, module: str) -> tuple[ast.Module, bool] | None:
        """(tree, is_package) of `module`, or None when the checkout has no such file."""
        if module not in self.cache:
            base = module.replace(".", "/")
            found = None
            for rel, is_package in ((f"{base}.py", False), (f"{base}/__init__.py", True)):
                source = self.read(rel)
                if source is not None:
                    found = (ast.parse(source), is_package)
                    break
            self.cache[module] = found
        return self.cache[module]

    def resolve_expr(self, node: ast.expr, module: str) -> tuple[ast.ClassDef, str]:
        found = self.find_class(node.id, module) if isinstance(node, ast.Name) else None
        if found is None:
            raise ValueError(f"{module}: cannot find the source of class {ast.unparse(node)!r}")
        return found

    def find_class(self, name: str, module: str, depth: int = 0) -> tuple[ast.ClassDef, str] | None:
        """The class `name` as seen from `module` (defined there, or imported / re-exported into it)."""
        parsed = self.get(module)
        if parsed is None or depth > 20:
            return None
        tree, is_package = parsed
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                return stmt, module
        for node in ast.walk(tree):  # arguments.py imports its configs inside functions too
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        source = _absolute(node, module, is_package)
                        found = self.find_class(alias.name, source, depth + 1)
                        if found is not None:
                            return found
        return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    package = parts if is_package else parts[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_dataclass(cls: ast.ClassDef) -> bool:
    for deco in cls.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if _name(target) == "dataclass":
            return True
    return False


def _dataclass_fields(cls: ast.ClassDef, module: str, modules: _Modules) -> dict[str, ast.AnnAssign]:
    """The init fields of a dataclass and of its dataclass bases, as `dataclasses.fields` orders and overrides them."""
    fields: dict[str, ast.AnnAssign] = {}
    for base in cls.bases:
        found = modules.find_class(base.id, module) if isinstance(base, ast.Name) else None
        if found is not None and _is_dataclass(found[0]):
            fields.update(_dataclass_fields(*found, modules))
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and not _is_pseudo_field(stmt):
            fields[stmt.target.id] = stmt
    return {name: stmt for name, stmt in fields.items() if _field_kwarg(stmt, "init") is not False}


def _is_pseudo_field(stmt: ast.AnnAssign) -> bool:
    """ClassVar and InitVar annotations are not fields."""
    ann = stmt.annotation.value if isinstance(stmt.annotation, ast.Subscript) else stmt.annotation
    return _name(ann) in ("ClassVar", "InitVar")


def _field_call(stmt: ast.AnnAssign) -> ast.Call | None:
    value = stmt.value
    return value if isinstance(value, ast.Call) and _name(value.func) == "field" else None


def _field_kwarg(stmt: ast.AnnAssign, key: str) -> object:
    """A `field(...)` keyword's literal value (None when absent); `init=False` -> False."""
    call = _field_call(stmt)
    node = next((kw.value for kw in call.keywords if kw.arg == key), None) if call else None
    return node.value if isinstance(node, ast.Constant) else node


def _dataclass_flags(cls: ast.ClassDef, module: str, exclude: set[str], modules: _Modules) -> Iterator[str]:
    for name, stmt in _dataclass_fields(cls, module, modules).items():
        if name in exclude:
            continue
        arg_names, action = _argparse_meta(stmt, module)
        if arg_names is None:
            store_false = _is_bool(stmt.annotation) and not _defaults_false(stmt)
            arg_names = [_flag(f"no_{name}"), _flag(f"disable_{name}")] if store_false else [_flag(name)]
        yield from _with_negations(arg_names, action)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argparse_meta(stmt: ast.AnnAssign, module: str) -> tuple[list[str] | None, ast.expr | None]:
    """The field's `metadata={"argparse_meta": {...}}`: its `arg_names` and its `action` (None when absent)."""
    metadata = _field_kwarg(stmt, "metadata")
    if metadata is None:
        return None, None
    where = f"{module}: field {ast.unparse(stmt.target)}"
    if not isinstance(metadata, ast.Dict):
        raise ValueError(f"{where}: metadata {ast.unparse(metadata)!r} is not a literal dict")  # type: ignore[arg-type]
    meta = _dict_get(metadata, "argparse_meta")
    if meta is None:
        return None, None
    if not isinstance(meta, ast.Dict):
        raise ValueError(f"{where}: argparse_meta {ast.unparse(meta)!r} is not a literal dict")
    names, action = _dict_get(meta, "arg_names"), _dict_get(meta, "action")
    if names is None:
        return None, action
    if not (
        isinstance(names, (ast.List, ast.Tuple))
        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in names.elts)
    ):
        raise ValueError(f"{where}: arg_names {ast.unparse(names)!r} is not a literal list")
    return [e.value for e in names.elts], action  # type: ignore[attr-defined]


def _dict_get(node: ast.Dict, key: str) -> ast.expr | None:
    for k, v in zip(node.keys, node.values, strict=True):
        if isinstance(k, ast.Constant) and k.value == key:
            return v
    return None


def _is_bool(ann: ast.expr) -> bool:
    """`bool`, `Optional[bool]`, `Union[bool, None]` or `bool | None`: what the factory turns into a switch."""
    if isinstance(ann, ast.Name):
        return ann.id == "bool"
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return _is_bool(ann.left) and _is_none(ann.right)
    if isinstance(ann, ast.Subscript):
        kind = _name(ann.value)
        if kind == "Optional":
            return _is_bool(ann.slice)
        if kind == "Union" and isinstance(ann.slice, ast.Tuple) and len(ann.slice.elts) == 2:
            return _is_bool(ann.slice.elts[0]) and _is_none(ann.slice.elts[1])
    return False


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _defaults_false(stmt: ast.AnnAssign) -> bool:
    """The field's default `== False` (then the factory adds a store_true `--x`; otherwise `--no-x`)."""
    call = _field_call(stmt)
    default = next((kw.value for kw in call.keywords if kw.arg == "default"), None) if call else stmt.value
    return isinstance(default, ast.Constant) and default.value is not None and default.value == False  # noqa: E712


def _git(root: Path, *args: str) -> str | None:
    """`git -C root ARGS`'s output, or None when it fails (not a git tree, no such file at that revision)."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout if out.returncode == 0 and out.stdout else None


if __name__ == "__main__":
    sys.exit(main())
