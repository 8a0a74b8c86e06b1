"""Megatron-LM's flag list (rlpipe/config/miles/megatron_flags.txt): how `classify` uses it, and the generator that
writes it, run here on a small synthetic Megatron-LM tree (offline: nothing is fetched)."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from rlpipe.config.miles.flags import MEGATRON_FLAGS_PATH, _megatron_names, classify
from rlpipe.config.miles.megatron_flags_gen import ARGUMENTS_PY, main, open_source, parse_flags, render


@pytest.mark.parametrize(
    "flag",
    [
        "--decoder-last-pipeline-num-layers",
        "--fp8-format",
        "--moe-token-dispatcher-type",
        "--num-layers-per-virtual-pipeline-stage",
        "--spec",
        "--attention-backend",  # from TransformerConfig through ArgumentGroupFactory
        "--no-gradient-accumulation-fusion",  # a `--no-x` as written
        "--no-rl-partial-rollouts",  # argparse.BooleanOptionalAction's derived `--no-x`
        "--override-opt_param-scheduler",  # spelled with an underscore by Megatron itself
        "--beta-fast",  # radixark/Megatron-LM (Miles' fork); NVIDIA's calls it --yarn-beta-fast
    ],
)
def test_megatron_flags_classify_as_megatron(flag: str) -> None:
    assert classify(flag) == ("megatron", "a Megatron-LM flag with no rlpipe field")


def test_miles_flags_are_checked_first() -> None:
    assert "distributed-backend" in _megatron_names()  # both define it; Miles' wins
    assert classify("--distributed-backend")[0] == "miles"


def test_unknown_flags_keep_their_did_you_mean() -> None:
    kind, reason = classify("--rollout-batch-sise")
    assert kind == "unknown"
    assert "did you mean --rollout-batch-size?" in reason
    # only the spellings Megatron's parser accepts count: no `--no-` of a store_true flag, no `_` for `-`
    assert classify("--no-swiglu")[0] == "unknown"
    assert classify("--fp8_format")[0] == "unknown"
    assert classify("--decoder-last-pipeline-num-layer") == (
        "unknown",
        "not a Miles, slime or Megatron flag; did you mean --decoder-last-pipeline-num-layers?",
    )


def test_checked_in_list_is_sorted_unique_and_names_its_sources() -> None:
    lines = MEGATRON_FLAGS_PATH.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    flags = [line for line in lines if not line.startswith("#")]
    assert lines[: len(header)] == header  # the header comes first
    assert any("NVIDIA/Megatron-LM at commit " in line for line in header)
    assert f"({len(flags)})" in header[0]
    assert flags == sorted(set(flags)) and all(f and not f.startswith("-") and f.strip() == f for f in flags)
    assert len(flags) > 800


# --------------------------------------------------------------------------------------------------- generator
ARGUMENTS = """
import argparse
from megatron.core.transformer import TransformerConfig
from megatron.training.argument_utils import ArgumentGroupFactory


def add_megatron_arguments(parser):
    parser = _add_network_size_args(parser)
    return parser


def _add_network_size_args(parser):
    exclude = ["timers", "num_moe_experts"]
    ArgumentGroupFactory(TransformerConfig, exclude=exclude).build_group(parser, "transformer configuration")
    group = parser.add_argument_group(title="network size")
    group.add_argument("--num-layers-per-virtual-pipeline-stage", type=int, default=None)
    group.add_argument("--no-masked-softmax-fusion", action="store_false", dest="masked_softmax_fusion")
    group.add_argument("--seq-length", "--seq-len", type=int)
    group.add_argument("--rl-partial-rollouts", action=argparse.BooleanOptionalAction, default=False)
    return parser


def _add_training_args(parser):
    from megatron.training.config import TrainingConfig

    ArgumentGroupFactory(TrainingConfig, exclude=["skipped"]).build_group(parser, "training")
    return parser
"""
TREE = {
    "megatron/core/transformer/__init__.py": "from .transformer_config import TransformerConfig\n",
    "megatron/core/model_parallel_config.py": """
        from dataclasses import dataclass

        @dataclass
        class ModelParallelConfig:
            tensor_model_parallel_size: int = 1
            gradient_accumulation_fusion: bool = True
            timers: object = None
    """,
    "megatron/core/transformer/transformer_config.py": """
        from dataclasses import dataclass, field
        from typing import ClassVar, Literal, Optional

        from ..model_parallel_config import ModelParallelConfig

        @dataclass
        class TransformerConfig(ModelParallelConfig):
            num_layers: int = field(default=0, metadata={"argparse_meta": {"default": None}})
            fp8: Optional[Literal["e4m3", "hybrid"]] = field(
                default=None, metadata={"argparse_meta": {"arg_names": ["--fp8-format"]}}
            )
            add_bias_linear: bool = field(
                default=True, metadata={"argparse_meta": {"arg_names": ["--disable-bias-linear"]}}
            )
            swiglu: bool = False
            qk_layernorm: Optional[bool] = None
            moe_token_dispatcher_type: Literal["allgather", "alltoall"] = "allgather"
            num_moe_experts: Optional[int] = None
            registry: ClassVar[dict] = {}
    """,
    "megatron/training/config/__init__.py": "from megatron.training.config.training_config import TrainingConfig\n",
    "megatron/training/config/training_config.py": """
        from dataclasses import dataclass, field

        @dataclass
        class TrainingConfig:
            train_iters: int | None = None
            exit_on_missing_checkpoint: bool | None = False
            lr_decay_steps: int | None = field(init=False, default=None)
            skipped: int = 0
    """,
}
EXPECTED = [
    "--disable-bias-linear",  # argparse_meta's arg_names
    "--disable-gradient-accumulation-fusion",  # a base dataclass's bool field defaulting to True
    "--disable-qk-layernorm",  # Optional[bool] = None is not False: store_false
    "--exit-on-missing-checkpoint",  # bool | None = False: store_true
    "--fp8-format",
    "--moe-token-dispatcher-type",
    "--no-gradient-accumulation-fusion",
    "--no-masked-softmax-fusion",
    "--no-qk-layernorm",
    "--no-rl-partial-rollouts",  # BooleanOptionalAction
    "--num-layers",
    "--num-layers-per-virtual-pipeline-stage",
    "--rl-partial-rollouts",
    "--seq-len",
    "--seq-length",
    "--swiglu",
    "--tensor-model-parallel-size",
    "--train-iters",
]


def _tree(root: Path) -> Path:
    for rel, text in {ARGUMENTS_PY: ARGUMENTS, **TREE}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root / ARGUMENTS_PY


def test_generator_reads_add_argument_and_factory_flags() -> None:
    sources = {rel: textwrap.dedent(text) for rel, text in TREE.items()}
    assert parse_flags(ARGUMENTS, sources.get) == EXPECTED  # excluded, init=False and ClassVar fields: no flag


def test_generator_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="option string"):
        parse_flags("p.add_argument(NAME, type=int)\n", {}.get)
    with pytest.raises(ValueError, match="cannot find the source of class 'Missing'"):
        parse_flags("ArgumentGroupFactory(Missing)\n", {}.get)
    with pytest.raises(ValueError, match="exclude"):
        parse_flags("from m import C\nArgumentGroupFactory(C, exclude=names())\n", {"m.py": "class C: ...\n"}.get)


def test_generator_writes_the_list_from_an_arguments_py_path(tmp_path: Path) -> None:
    arguments_py = _tree(tmp_path / "Megatron-LM")
    out = tmp_path / "megatron_flags.txt"
    assert main([f"NVIDIA/Megatron-LM={arguments_py}", "--output", str(out)]) == 0
    text = out.read_text()
    assert text == render([(replace(open_source(str(arguments_py)), repo="NVIDIA/Megatron-LM"), EXPECTED)])
    assert "#   NVIDIA/Megatron-LM at commit unknown (unknown): 18 flags" in text  # not a git checkout
    assert text.splitlines()[-len(EXPECTED) :] == [flag.removeprefix("--") for flag in EXPECTED]
