"""What an `sglang.extra` key means at the config's SGLang version, without importing SGLang needlessly.

rlpipe passes each `sglang.extra` key to `sglang.launch_server` as `--key-with-dashes` (and the Miles export as
`--sglang-key-with-dashes`), so a key must name a launch_server flag that sets a ServerArgs field. For nearly every
field that flag is the field's own name; SGLang also registers other names: aliases (`--expert-parallel-size` for
`ep_size`), a flag named otherwise (`--fp8-gemm-backend` for `fp8_gemm_runner_backend`), deprecated spellings
(`--cuda-graph-max-bs` for `cuda_graph_max_bs_decode` at 0.5.15.post1), `--no-x` for BooleanOptionalAction flags;
and a few fields have no flag at all. Field and flag names change between versions, so the table is per version:

* SGLang installed: its own ServerArgs fields and `ServerArgs.add_cli_args` parser win (exact);
* else the checked-in list `server_args_<version>.txt` for `sglang.version` (exact);
* else the nearest older list (not exact: the config rule reports what it finds as warnings, saying which
  version it checked against, since newer SGLang may have added the field);
* else (older than every list) nothing: the keys go unchecked.

The lists are written by `server_args_gen.py` from the sglang wheels on PyPI. `sglang.launch_server` rejects unknown
flags, so a typo found here saves a GPU job that would die minutes into its start.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib.metadata
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

LIST_DIR = Path(__file__).parent
LIST_GLOB = "server_args_*.txt"
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
FLAG_LINE = re.compile(r"(\w+) -> (\w+) (\w+)")  # a [flags] line: flag -> field kind
FlagRow = tuple[str, str, str]  # (flag, field, kind), flag and field with underscores


@dataclass(frozen=True)
class Registration:
    """One `parser.add_argument` of launch_server's parser: its option strings, the field it sets (argparse's
    dest), and its action's class name (`Deprecated*` actions warn; BooleanOptionalAction adds `--no-x`)."""

    options: tuple[str, ...]
    dest: str
    action: str = "store"

    def names(self) -> list[str]:
        """The long option strings, underscored: `--expert-parallel-size` -> `expert_parallel_size`."""
        return [o[2:].replace("-", "_") for o in self.options if o.startswith("--")]

    def deprecated(self) -> bool:
        return self.action.startswith("Deprecated")


@dataclass(frozen=True)
class ServerArgNames:
    """One SGLang version's ServerArgs fields and the launch_server flags named otherwise than their field.

    `flags` maps a flag (underscored) to (its field, its kind); `unflagged` fields have no flag at all. `exact`:
    the table is for the config's own version (or the installed SGLang), not the nearest older one."""

    version: str
    source: str
    fields: frozenset[str]
    flags: dict[str, tuple[str, str]]
    unflagged: frozenset[str]
    exact: bool = True

    def canonical(self, field: str) -> str:
        """The key rlpipe passes for `field`: its flag's name when that is not the field's own (`primary`)."""
        return next((f for f, (to, kind) in self.flags.items() if to == field and kind == "primary"), field)


@dataclass(frozen=True)
class KeyCheck:
    """What one sglang.extra key is: the field it sets (None: unknown), the key rlpipe should pass (`use`), and
    why it was rewritten (`reason`), what is wrong (`problem`) or worth a warning (`warning`)."""

    field: str | None
    use: str
    reason: str = ""
    problem: str = ""
    warning: str = ""


def flag_table(fields: Iterable[str], registrations: Iterable[Registration]) -> tuple[list[FlagRow], list[str]]:
    """The (flag, field, kind) rows for flags not named as their field, and the fields without any flag.

    Kinds: `primary` (the field's flag, named otherwise: `fp8_gemm_backend`), `alias` (another name of a flag that
    sets the field the same way: `expert_parallel_size`), `deprecated` (a flag SGLang warns about; it may set a
    constant, not the value: `disable_piecewise_cuda_graph`), `no` (BooleanOptionalAction's `--no-x`). Flags
    that set no field (`--config`, no-op deprecated flags) are left out. Shared by the generator and the installed
    SGLang's parser, so both give the same table."""
    fields = list(fields)
    registrations = [r for r in registrations if r.dest in set(fields)]
    # fields with a (non-deprecated) flag of their own name; a field without one gets its first other name as primary
    named = {r.dest for r in registrations if r.dest in r.names() and not r.deprecated()}
    rows: list[FlagRow] = []
    for reg in registrations:
        for name in reg.names():
            if reg.deprecated():
                rows.append((name, reg.dest, "deprecated"))
            elif name != reg.dest:
                rows.append((name, reg.dest, "alias" if reg.dest in named else "primary"))
                named.add(reg.dest)
        if reg.action == "BooleanOptionalAction":
            rows += [(f"no_{name}", reg.dest, "no") for name in reg.names()]
    flagged = {r.dest for r in registrations}
    return rows, [f for f in fields if f not in flagged]


def version_key(version: str) -> Version | None:
    """`version` as a comparable Version (its leading digits if it is not PEP 440, e.g. `0.5.16-miles`)."""
    try:
        return Version(version)
    except InvalidVersion:
        match = re.match(r"\d+(\.\d+)*", version)
        return Version(match.group()) if match else None


def list_path(version: str) -> Path:
    """The checked-in list for `version`: server_args_0_5_15_post1.txt for 0.5.15.post1."""
    return LIST_DIR / f"server_args_{version.replace('.', '_')}.txt"


def known_versions() -> list[str]:
    """The versions with a checked-in list, oldest first."""
    names = (p.stem.removeprefix("server_args_").replace("_", ".") for p in LIST_DIR.glob(LIST_GLOB))
    return sorted(names, key=lambda v: version_key(v) or Version("0"))


def read_list(path: Path, *, exact: bool = True) -> ServerArgNames:
    """Parse a checked-in list: `[fields]`, `[flags]` (`flag -> field kind`) and `[unflagged]` sections."""
    sections: dict[str, list[str]] = {"fields": [], "flags": [], "unflagged": []}
    current = "fields"
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        else:
            sections[current].append(line)
    flags = {m[1]: (m[2], m[3]) for line in sections["flags"] if (m := FLAG_LINE.fullmatch(line))}
    version = path.stem.removeprefix("server_args_").replace("_", ".")
    fields, unflagged = frozenset(sections["fields"]), frozenset(sections["unflagged"])
    return ServerArgNames(version, f"SGLang {version}'s list ({path.name})", fields, flags, unflagged, exact)


def installed_names() -> ServerArgNames:
    """The table of the installed SGLang: its ServerArgs fields, and the flags of the parser its add_cli_args
    builds (heavy imports; only called where SGLang is installed)."""
    from sglang.srt.server_args import ServerArgs

    if dataclasses.is_dataclass(ServerArgs):
        fields = [f.name for f in dataclasses.fields(ServerArgs)]
    else:
        fields = list(ServerArgs.__struct_fields__)  # msgspec.Struct (0.5.20+)
    parser = argparse.ArgumentParser(add_help=False)
    ServerArgs.add_cli_args(parser)
    rows, unflagged = flag_table(fields, [_registration(action) for action in parser._actions])
    version = importlib.metadata.version("sglang")
    flags = {flag: (field, kind) for flag, field, kind in rows}
    return ServerArgNames(version, f"the installed SGLang {version}", frozenset(fields), flags, frozenset(unflagged))


def _registration(action: argparse.Action) -> Registration:
    """An argparse action as a Registration, less the `--no-x` BooleanOptionalAction added (flag_table adds it)."""
    kind = type(action).__name__
    options = [o for o in action.option_strings if not (kind == "BooleanOptionalAction" and o.startswith("--no-"))]
    return Registration(tuple(options), action.dest, kind)


@functools.cache
def server_arg_names(version: str) -> ServerArgNames | None:
    """The table for `version` (the config's sglang.version): the installed SGLang's; else the exact list; else the
    nearest older list (exact=False); else None, when every list is newer: there is nothing to check against."""
    if importlib.util.find_spec("sglang") is not None:
        return installed_names()
    if list_path(version).is_file():
        return read_list(list_path(version))
    wanted = version_key(version)
    older = [v for v in known_versions() if wanted is not None and version_key(v) <= wanted]  # <=: 0.5.16-miles
    return read_list(list_path(older[-1]), exact=False) if older else None


def did_you_mean(key: str, names: ServerArgNames) -> str:
    """The closest field or flag names to `key`, as a hint."""
    close = difflib.get_close_matches(key, sorted(names.fields | names.flags.keys()), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no similar name"


def check_key(key: str, names: ServerArgNames) -> KeyCheck:
    """What `key` is at `names`' version: a field passed under its own flag; an alias or a field whose flag is
    named otherwise (rewritten to the flag rlpipe should pass); a deprecated or `--no-x` flag (kept); a field
    without a flag, or nothing SGLang knows (a problem, with the closest names)."""
    at = f"SGLang {names.version}"
    if key in names.flags:
        field, kind = names.flags[key]
        if kind == "alias":
            use = names.canonical(field)
            return KeyCheck(field, use, reason=f"{key!r} is {at}'s alias of {field!r}; passed as --{_dashed(use)}")
        if kind == "deprecated":
            note = f"is deprecated in {at} (launch_server warns; a later SGLang may drop it)"
            return KeyCheck(field, key, warning=note if field == key else f"{note}; it sets {field!r}: set that")
        return KeyCheck(field, key)  # primary, or BooleanOptionalAction's --no-x
    if key in names.unflagged:
        return KeyCheck(key, key, problem=f"is a ServerArgs field that {at}'s launch_server has no flag for")
    if key in names.fields:
        use = names.canonical(key)
        reason = f"{at}'s launch_server flag for the ServerArgs field {key!r} is --{_dashed(use)}"
        return KeyCheck(key, use, reason=reason if use != key else "")
    hint = did_you_mean(key, names)
    return KeyCheck(None, key, problem=f"is not a ServerArgs field or launch_server flag of {at} ({hint})")


def _dashed(key: str) -> str:
    return key.replace("_", "-")
