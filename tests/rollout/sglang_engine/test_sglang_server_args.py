"""The sglang.extra rule: every key must be a launch_server flag of sglang.version's SGLang (checked-in list per
version, or the installed SGLang) that sets a ServerArgs field rlpipe does not set itself; aliases are renamed,
deprecated flags warned about; the FP8-rollout warning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rlpipe.config import load
from rlpipe.rollout.sglang.server_args import check_key, known_versions, list_path, read_list, server_arg_names
from tests.config.hf_folders import TINY_CONFIG, write_hf_folder

SLIME, MILES, PINNED = "0.5.15.post1", "0.5.16", "0.5.23"


def test_a_list_per_version_names_its_wheel_and_counts() -> None:
    assert {SLIME, MILES, PINNED} <= set(known_versions())
    for version in known_versions():
        names, text = read_list(list_path(version)), list_path(version).read_text()
        header = re.match(r"# SGLang (\S+) ServerArgs: (\d+) fields; (\d+) launch_server .*; (\d+) fields", text)
        assert header is not None and header[1] == version == names.version
        assert f"Generated from sglang-{version}-cp311-" in text.splitlines()[1]
        assert (len(names.fields), len(names.flags), len(names.unflagged)) == tuple(map(int, header.groups()[1:]))
        assert names.unflagged <= names.fields and {field for field, _ in names.flags.values()} <= names.fields


def test_pinned_list_has_the_fields_rlpipe_uses() -> None:
    names = server_arg_names(PINNED)
    assert names.exact and len(names.fields) == 546
    for field in ("model_path", "tp_size", "mem_fraction_static", "enable_memory_saver", "cuda_graph_backend_prefill"):
        assert field in names.fields
    assert "disable_piecewise_cuda_graph" not in names.fields | names.flags.keys()  # gone by 0.5.15


def test_cuda_graph_max_bs_is_slime_era_only() -> None:
    old = check_key("cuda_graph_max_bs", server_arg_names(SLIME))
    assert (old.field, old.use, old.problem) == ("cuda_graph_max_bs_decode", "cuda_graph_max_bs", "")
    assert "deprecated in SGLang 0.5.15.post1" in old.warning and "'cuda_graph_max_bs_decode'" in old.warning
    new = check_key("cuda_graph_max_bs", server_arg_names(PINNED))
    assert new.field is None and "did you mean 'cuda_graph_max_bs_decode'" in new.problem
    assert check_key("cuda_graph_max_bs_decode", server_arg_names(PINNED)) == check_key(
        "cuda_graph_max_bs_decode", server_arg_names(SLIME)
    )


@pytest.mark.parametrize("version", [SLIME, MILES, "0.5.19"])
def test_nsa_flags_until_0_5_19_then_dsa_only(version: str) -> None:
    old = check_key("nsa_prefill_backend", server_arg_names(version))
    assert old.field == "dsa_prefill_backend" and not old.problem and "'dsa_prefill_backend'" in old.warning
    new = check_key("nsa_prefill_backend", server_arg_names("0.5.20"))
    assert new.field is None and "did you mean 'dsa_prefill_backend'" in new.problem
    assert check_key("dsa_prefill_backend", server_arg_names(version)).use == "dsa_prefill_backend"


def test_did_you_mean() -> None:
    names = server_arg_names(PINNED)
    assert check_key("chunked_prefill_size", names).problem == ""
    assert "did you mean 'enable_dp_attention'" in check_key("enable_dp_atention", names).problem


def test_aliases_and_renamed_flags_resolve_to_the_flag_rlpipe_passes() -> None:
    names = server_arg_names(MILES)
    alias = check_key("expert_parallel_size", names)
    assert (alias.field, alias.use) == ("ep_size", "ep_size") and "alias of 'ep_size'" in alias.reason
    assert check_key("fp8_gemm_backend", names).use == "fp8_gemm_backend"  # the flag of fp8_gemm_runner_backend
    field = check_key("fp8_gemm_runner_backend", names)  # a field, but launch_server has no flag of that name
    assert (field.use, field.problem) == ("fp8_gemm_backend", "") and "--fp8-gemm-backend" in field.reason
    assert "no flag for" in check_key("stat_loggers", names).problem


def test_unknown_and_owned_extra_keys_are_config_errors(recipe: list[str], problems) -> None:
    found = problems([*recipe, "+sglang.extra.mem_fraction_statik=0.5", "+sglang.extra.tp_size=2"])
    by_key = {p.key: p for p in found}
    assert set(by_key) == {"sglang.extra.mem_fraction_statik", "sglang.extra.tp_size"}
    assert "did you mean 'mem_fraction_static'" in by_key["sglang.extra.mem_fraction_statik"].message
    assert "sglang.rollout_num_gpus_per_engine" in by_key["sglang.extra.tp_size"].message
    [owned] = problems([*recipe, "+sglang.extra.tensor_parallel_size=2"])  # an alias of an owned field
    assert owned.key == "sglang.extra.tensor_parallel_size" and "a launch_server flag for tp_size" in owned.message


def test_known_extra_keys_pass(recipe: list[str]) -> None:
    resolved = load([*recipe, "+sglang.extra.attn_dp_size=2", "+sglang.extra.chunked_prefill_size=4096"])
    assert resolved.cfg.sglang.extra == {"attn_dp_size": 2, "chunked_prefill_size": 4096}
    assert not [w for w in resolved.warnings if w.startswith("sglang.extra")]


def test_slime_keys_pass_at_slime_version_with_a_warning(recipe: list[str], problems) -> None:
    slime = ["+sglang.extra.cuda_graph_max_bs=256", "+sglang.extra.mamba_scheduler_strategy=no_buffer"]
    resolved = load([*recipe, f"sglang.version={SLIME}", *slime])
    assert resolved.cfg.sglang.extra == {"cuda_graph_max_bs": 256, "mamba_scheduler_strategy": "no_buffer"}
    assert any("cuda_graph_max_bs: is deprecated in SGLang 0.5.15.post1" in w for w in resolved.warnings)
    found = problems([*recipe, *slime])  # the default version, 0.5.23, has neither
    assert "did you mean 'cuda_graph_max_bs_decode'" in found[0].message
    assert "did you mean 'mamba_radix_cache_strategy'" in found[1].message


def test_alias_is_renamed_and_two_spellings_refused(recipe: list[str], problems) -> None:
    resolved = load([*recipe, "+sglang.extra.chunked_prefill_size=64", "+sglang.extra.expert_parallel_size=8"])
    assert resolved.cfg.sglang.extra == {"chunked_prefill_size": 64, "ep_size": 8}
    assert any(d.key == "sglang.extra.ep_size" and "alias" in d.reason for d in resolved.derivations)
    [both] = problems([*recipe, "+sglang.extra.ep_size=8", "+sglang.extra.expert_parallel_size=8"])
    assert both.key == "sglang.extra.expert_parallel_size" and "keep one" in both.fix


def test_version_without_a_list(recipe: list[str]) -> None:
    assert server_arg_names("0.5.13") is None  # older than every list: unchecked
    assert load([*recipe, "sglang.version=0.5.13", "+sglang.extra.no_such_flag=1"]).cfg.sglang.extra
    newer = server_arg_names("0.5.24")  # checked against the nearest older list, as warnings
    assert (newer.version, newer.exact) == (PINNED, False)
    warnings = load([*recipe, "sglang.version=0.5.24", "+sglang.extra.no_such_flag=1"]).warnings
    [warning] = [w for w in warnings if w.startswith("sglang.extra.no_such_flag: is not a ServerArgs field")]
    assert "checked against SGLang 0.5.23's list (server_args_0_5_23.txt), sglang.version is 0.5.24" in warning


def test_fp8_rollout_without_tis_warns(recipe: list[str], tmp_path: Path) -> None:
    fp8 = write_hf_folder(tmp_path / "Qwen3-4B-FP8", TINY_CONFIG | {"quantization_config": {"quant_method": "fp8"}})
    common = [
        *(o for o in recipe if not o.startswith(("ckpt.hf_checkpoint=", "cluster.accelerator="))),
        f"ckpt.hf_checkpoint={fp8}",
        "rollout.engine=sglang",
        "cluster.accelerator=cuda",
        "cluster.rollout_num_gpus=1",
    ]
    warning = "ckpt.hf_checkpoint: FP8 rollout without algo.use_tis: the precision mismatch is uncorrected"
    # planned for a GPU machine: this one has no GPU and no sglang
    assert warning in load(common, check_paths=False).warnings
    assert warning not in load([*common, "algo.use_tis=true"], check_paths=False).warnings
