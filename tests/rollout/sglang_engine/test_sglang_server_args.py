"""The sglang.extra rule: every key must be a ServerArgs field of the pinned SGLang (checked-in list, or the
installed SGLang) and not one rlpipe sets itself; the FP8-rollout warning."""

from __future__ import annotations

from pathlib import Path

from rlpipe.config import load
from rlpipe.rollout.sglang.server_args import PINNED_LIST, server_arg_names, unknown_key_message
from tests.config.hf_folders import TINY_CONFIG, write_hf_folder


def test_checked_in_list_has_the_fields_rlpipe_uses() -> None:
    names = server_arg_names("0.5.23")
    assert PINNED_LIST.read_text().startswith("# SGLang 0.5.23 ServerArgs")
    assert len(names) == 546
    for field in ("model_path", "tp_size", "mem_fraction_static", "enable_memory_saver", "cuda_graph_backend_prefill"):
        assert field in names
    assert "disable_piecewise_cuda_graph" not in names  # removed by 0.5.15
    assert server_arg_names("0.5.13") is None  # no list for other versions without SGLang installed


def test_did_you_mean() -> None:
    names = server_arg_names("0.5.23")
    assert unknown_key_message("enable_dp_attention", names) is None
    message = unknown_key_message("enable_dp_atention", names)
    assert message is not None and "did you mean 'enable_dp_attention'" in message


def test_unknown_and_owned_extra_keys_are_config_errors(recipe: list[str], problems) -> None:
    found = problems([*recipe, "+sglang.extra.mem_fraction_statik=0.5", "+sglang.extra.tp_size=2"])
    by_key = {p.key: p for p in found}
    assert set(by_key) == {"sglang.extra.mem_fraction_statik", "sglang.extra.tp_size"}
    assert "did you mean 'mem_fraction_static'" in by_key["sglang.extra.mem_fraction_statik"].message
    assert "sglang.rollout_num_gpus_per_engine" in by_key["sglang.extra.tp_size"].message


def test_known_extra_keys_pass(recipe: list[str]) -> None:
    resolved = load([*recipe, "+sglang.extra.enable_dp_attention=true", "+sglang.extra.chunked_prefill_size=4096"])
    assert resolved.cfg.sglang.extra == {"enable_dp_attention": True, "chunked_prefill_size": 4096}


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
