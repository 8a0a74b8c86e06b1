"""The list generator: its `ast` parser on tiny synthetic server_args.py sources (both SGLang layouts), the list
format round trip, and agreement with the installed-SGLang path (argparse) on the same source. Offline. (That the
checked-in lists are what the wheels give is the generator's own business: rerunning it reproduces each file.)"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from rlpipe.rollout.sglang import server_args
from rlpipe.rollout.sglang.server_args import flag_table, read_list
from rlpipe.rollout.sglang.server_args_gen import SERVER_ARGS, parse_server_args, render

# 0.5.15-0.5.19 layout: a dataclass with A[T, ...] fields, plus flags registered by hand in add_cli_args.
DATACLASS_SOURCE = """
import argparse
import dataclasses
from typing import ClassVar
from sglang.srt.arg_groups.arg_utils import A, Arg, add_cli_args_from_dataclass

@dataclasses.dataclass
class ServerArgs:
    VERSION_NOTE: ClassVar[str] = "not a field"
    model_path: A[str, Arg(help="The model.", aliases=["--model"])] = ""
    ep_size: A[int, "Expert parallel size."] = 1
    fp8_gemm_runner_backend: A[str, Arg(help="FP8 GEMM.", cli_name="--fp8-gemm-backend")] = "auto"
    lora_strict: A[bool, Arg(help="Strict.", action=argparse.BooleanOptionalAction)] = True
    internal: A[bool, Arg(no_cli=True)] = False
    plain: int = 0
    cuda_graph_max_bs_decode: A[int, f"Max {'bs'}."] = 0
    reasoning_parser: str = "auto"

    @staticmethod
    def add_cli_args(parser):
        add_cli_args_from_dataclass(parser, ServerArgs)
        parser.add_argument("--reasoning-parser", type=str, default=ServerArgs.reasoning_parser)
        parser.add_argument("--expert-parallel-size", "--ep", dest="ep_size", type=int)
        parser.add_argument("--cuda-graph-max-bs", dest="cuda_graph_max_bs_decode", action=DeprecatedAliasStoreAction)
        parser.add_argument("--config", type=str)
        parser.add_argument("--old-knob", action=DeprecatedAction)
"""
DATACLASS_FIELDS = [
    "model_path",
    "ep_size",
    "fp8_gemm_runner_backend",
    "lora_strict",
    "internal",
    "plain",
    "cuda_graph_max_bs_decode",
    "reasoning_parser",
]
DATACLASS_FLAGS = {
    "model": ("model_path", "alias"),
    "fp8_gemm_backend": ("fp8_gemm_runner_backend", "primary"),
    "no_lora_strict": ("lora_strict", "no"),
    "expert_parallel_size": ("ep_size", "alias"),
    "ep": ("ep_size", "alias"),
    "cuda_graph_max_bs": ("cuda_graph_max_bs_decode", "deprecated"),
}

# 0.5.20+ layout: msgspec namespace classes in arg_groups/fields/, collected through _INPUT_NAMESPACES.
NAMESPACE_SOURCES = {
    SERVER_ARGS: """
from sglang.srt.arg_groups.fields.parallel import Parallel
from sglang.srt.arg_groups.fields.model import Model as ModelNamespace

class ServerArgs:
    def add_cli_args(parser):
        parser.add_argument("--enable-dp-attention", action=DeprecatedStoreTrueAction)

_INPUT_NAMESPACES = [ModelNamespace, Parallel]
""",
    "sglang/srt/arg_groups/fields/model.py": """
class Model(msgspec.Struct):
    _NS_PATH = "model"
    model_path: A[str, Arg(help="The model.", aliases=["--model"])] = ""
    gpu_id = Derived(doc="runtime only, not a field")
""",
    "sglang/srt/arg_groups/fields/parallel.py": """
class Parallel(msgspec.Struct):
    tp_size: A[int, Arg(help="TP.", aliases=["--tensor-parallel-size"])] = 1
    enable_dp_attention: A[bool, Arg(no_cli=True)] = False
    _explicitly_set: A[bool, Arg(no_cli=True)] = False
""",
}


def test_parser_reads_a_dataclass_server_args() -> None:
    fields, registrations = parse_server_args({SERVER_ARGS: DATACLASS_SOURCE})
    assert fields == DATACLASS_FIELDS  # declaration order; the ClassVar is not a field
    rows, unflagged = flag_table(fields, registrations)
    assert {flag: (field, kind) for flag, field, kind in rows} == DATACLASS_FLAGS  # --config, --old-knob set no field
    assert unflagged == ["internal", "plain"]  # no_cli, and no A[T, help] metadata


def test_parser_reads_msgspec_namespaces() -> None:
    fields, registrations = parse_server_args(NAMESPACE_SOURCES)
    assert fields == ["model_path", "tp_size", "enable_dp_attention", "_explicitly_set"]  # _INPUT_NAMESPACES order
    rows, unflagged = flag_table(fields, registrations)
    assert rows == [
        ("model", "model_path", "alias"),
        ("tensor_parallel_size", "tp_size", "alias"),
        ("enable_dp_attention", "enable_dp_attention", "deprecated"),  # its only flag is a deprecated one
    ]
    assert unflagged == ["_explicitly_set"]


def test_rendered_list_reads_back(tmp_path: Path) -> None:
    fields, registrations = parse_server_args({SERVER_ARGS: DATACLASS_SOURCE})
    path = tmp_path / "server_args_9_9_9.txt"
    path.write_text(render("9.9.9", "sglang-9.9.9-py3-none-any.whl", fields, registrations))
    assert path.read_text().startswith("# SGLang 9.9.9 ServerArgs: 8 fields; 6 launch_server flags")
    names = read_list(path)
    assert (names.version, names.fields, names.flags) == ("9.9.9", frozenset(DATACLASS_FIELDS), DATACLASS_FLAGS)
    assert names.unflagged == {"internal", "plain"} and names.canonical("fp8_gemm_runner_backend") == "fp8_gemm_backend"


def test_installed_sglang_gives_the_same_table_as_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same kind of source, executed as if SGLang were installed: argparse's view equals the ast parser's."""
    source = """
import argparse
import dataclasses

class DeprecatedAliasStoreAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)

@dataclasses.dataclass
class ServerArgs:
    model_path: str = ""
    ep_size: int = 1
    cuda_graph_max_bs_decode: int = 0
    lora_strict: bool = True
    plain: int = 0

    @staticmethod
    def add_cli_args(parser):
        parser.add_argument("--model-path", "--model")
        parser.add_argument("--ep-size", "--expert-parallel-size", type=int)
        parser.add_argument("--cuda-graph-max-bs-decode", type=int)
        parser.add_argument("--cuda-graph-max-bs", dest="cuda_graph_max_bs_decode", action=DeprecatedAliasStoreAction)
        parser.add_argument("--lora-strict", action=argparse.BooleanOptionalAction)
        parser.add_argument("--config")
"""
    for name in ("sglang", "sglang.srt", "sglang.srt.server_args"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    exec(compile(source, "server_args.py", "exec"), sys.modules["sglang.srt.server_args"].__dict__)
    monkeypatch.setattr(server_args.importlib.metadata, "version", lambda name: "0.0.1")
    installed = server_args.installed_names()
    fields, registrations = parse_server_args({SERVER_ARGS: source})
    rows, unflagged = flag_table(fields, registrations)
    assert installed.fields == set(fields) and installed.unflagged == set(unflagged) == {"plain"}
    assert installed.flags == {flag: (field, kind) for flag, field, kind in rows}
    assert installed.flags["no_lora_strict"] == ("lora_strict", "no") and installed.source.endswith("SGLang 0.0.1")
