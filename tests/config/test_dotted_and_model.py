"""Dotted-path functions are imported and signature-checked at load; the model group is checked against
the checkpoint's config.json (drift listed field by field, `model=auto` filled from it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_folders import write_hf_folder

from rlpipe.config import load

# config.json of Qwen/Qwen2.5-0.5B (the fields rlpipe reads), matching conf/model/qwen2.5-0.5B.yaml.
QWEN25_05B = {
    "model_type": "qwen2",
    "num_hidden_layers": 24,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
}


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    """Write `name.py` into tmp_path and put tmp_path on sys.path (undone after the test)."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


# ------------------------------------------------------------------------------------------------ dotted
@pytest.mark.parametrize(
    ("key", "path", "words"),
    [
        ("rollout.dynamic_sampling_filter_path", "cfgtest_no_such_module.keep", "does not import"),
        ("rollout.dynamic_sampling_filter_path", "json.no_such_function", "has no attribute `no_such_function`"),
        ("rollout.dynamic_sampling_filter_path", "keep", "not a dotted path"),
        ("rollout.dynamic_sampling_filter_path", "json.JSONDecodeError.msg", "does not import"),
        ("rollout.buffer_filter_path", "json.dumps", "expected f(cfg, rollout_id, buffer, num_groups)"),
        ("rollout.rollout_function_path", "math.pi", "is not callable"),
        ("rollout.custom_rm_path", "cfgtest_no_such_reward.score", "not found"),
    ],
)
def test_dotted_path_that_does_not_work(key: str, path: str, words: str, recipe, problems) -> None:
    (found,) = problems([*recipe, f"{key}={path}"])
    assert (found.key, found.value) == (key, path)
    assert words in found.message, found.render()
    missing_module = "not found (is it on PYTHONPATH?)" in found.message  # the user's module may be elsewhere
    assert ("put its folder on PYTHONPATH" if missing_module else "fix the dotted path") in found.fix


def test_a_module_not_here_is_a_warning_when_only_printing(recipe) -> None:
    run = load([*recipe, "rollout.custom_rm_path=cfgtest_no_such_reward.score"], check_paths=False)
    assert any(w.startswith("rollout.custom_rm_path: does not import") for w in run.warnings)


def test_filter_with_wrong_signature(tmp_path, monkeypatch, recipe, problems) -> None:
    _module(tmp_path, monkeypatch, "cfgtest_filters_wrong", "def keep(cfg):\n    return True\n")
    (found,) = problems([*recipe, "rollout.dynamic_sampling_filter_path=cfgtest_filters_wrong.keep"])
    assert found.key == "rollout.dynamic_sampling_filter_path"
    assert "has signature (cfg); expected f(cfg, samples) -> bool" in found.message


def test_module_that_raises_on_import(tmp_path, monkeypatch, recipe, problems) -> None:
    _module(tmp_path, monkeypatch, "cfgtest_filters_broken", "raise RuntimeError('needs a GPU')\n")
    (found,) = problems([*recipe, "rollout.dynamic_sampling_filter_path=cfgtest_filters_broken.keep"])
    assert "importing it raised RuntimeError: needs a GPU" in found.message


def test_custom_reward_with_wrong_signature(tmp_path, monkeypatch, recipe, problems) -> None:
    _module(tmp_path, monkeypatch, "cfgtest_reward_wrong", "def score(sample):\n    return 1.0\n")
    (found,) = problems([*recipe, "rollout.custom_rm_path=cfgtest_reward_wrong.score"])
    assert found.key == "rollout.custom_rm_path"
    assert "has signature (sample); expected (sample, ctx) -> float" in found.message


def test_good_dotted_paths_resolve(tmp_path, monkeypatch, recipe) -> None:
    """Every pluggable function of the right shape loads, including ones in the user's own module."""
    source = (
        "def keep(cfg, samples):\n    return True\n"
        "def pick(cfg, rollout_id, buffer, num_samples):\n    return buffer[:num_samples]\n"
        "def generate(cfg, rollout_id, source, evaluation=False):\n    return []\n"
        "async def score(sample, ctx):\n    return 1.0\n"
        "def loss(cfg, inputs, **kwargs):\n    return 0.0, {}\n"
    )
    _module(tmp_path, monkeypatch, "cfgtest_plugins_good", source)
    run = load(
        [
            *recipe,
            "rollout.dynamic_sampling_filter_path=cfgtest_plugins_good.keep",
            "rollout.over_sampling_batch_size=32",
            "rollout.partial_rollout=true",
            "rollout.buffer_filter_path=cfgtest_plugins_good.pick",
            "rollout.rollout_function_path=cfgtest_plugins_good.generate",
            "rollout.custom_rm_path=cfgtest_plugins_good.score",
            "algo.custom_loss_function_path=cfgtest_plugins_good.loss",  # checked, though custom_loss is not built
        ]
    )
    assert run.cfg.rollout.buffer_filter_path == "cfgtest_plugins_good.pick"


def test_shipped_filter_resolves(recipe) -> None:
    run = load([*recipe, "rollout.dynamic_sampling_filter_path=rlpipe.rollout.filters.check_reward_nonzero_std"])
    assert run.cfg.rollout.dynamic_sampling_filter_path.endswith("check_reward_nonzero_std")


# ------------------------------------------------------------------------------------------------- model
def _checkpoint(tmp_path: Path, **changes: object) -> Path:
    return write_hf_folder(tmp_path / "qwen", {**QWEN25_05B, **changes})


def test_matching_model_passes_and_fills_unset_fields(tmp_path, recipe) -> None:
    ckpt = _checkpoint(tmp_path)
    run = load([*recipe, "model=qwen2.5-0.5B", f"ckpt.hf_checkpoint={ckpt}"])
    assert run.cfg.model.max_position_embeddings == 32768  # not in the YAML: taken from config.json
    assert run.reason("model.max_position_embeddings") == f"from {ckpt}/config.json"
    assert run.reason("model.hidden_size") is None  # set by the YAML and agreeing: nothing derived


def test_drift_lists_every_field_with_both_values_and_a_fix_that_works(tmp_path, recipe, problems) -> None:
    ckpt = _checkpoint(tmp_path, num_hidden_layers=12, rope_theta=10000.0, tie_word_embeddings=False)
    base = [*recipe, "model=qwen2.5-0.5B", f"ckpt.hf_checkpoint={ckpt}"]
    found = problems(base)
    by_key = {p.key: p for p in found}
    assert sorted(by_key) == ["model.num_layers", "model.rotary_base", "model.untie_embeddings_and_output_weights"]
    layers = by_key["model.num_layers"]
    assert layers.value == 24 and "config.json, which says 12" in layers.message
    assert layers.fix == "model.num_layers=12"
    assert by_key["model.rotary_base"].value == 1000000.0 and "says 10000.0" in by_key["model.rotary_base"].message
    # Each fix is an override; applying them all makes the config load.
    run = load([*base, *(p.fix for p in found)])
    assert (run.cfg.model.num_layers, run.cfg.model.rotary_base) == (12, 10000.0)
    assert run.cfg.model.untie_embeddings_and_output_weights is True


def test_padded_vocabulary_is_not_drift(tmp_path, recipe) -> None:
    ckpt = _checkpoint(tmp_path, vocab_size=151665)  # Megatron pads the vocabulary up; the YAML says 151936
    assert load([*recipe, "model=qwen2.5-0.5B", f"ckpt.hf_checkpoint={ckpt}"]).cfg.model.vocab_size == 151936


def test_model_auto_takes_the_architecture_from_config_json(tmp_path, recipe) -> None:
    layout5 = {k: v for k, v in QWEN25_05B.items() if k != "rope_theta"} | {"rope_parameters": {"rope_theta": 5e5}}
    folder = write_hf_folder(tmp_path / "qwen", layout5)  # the transformers 5 layout of the RoPE base
    run = load([*recipe, "model=auto", f"ckpt.hf_checkpoint={folder}"])
    model = run.cfg.model
    assert (model.num_layers, model.hidden_size, model.ffn_hidden_size) == (24, 896, 4864)
    assert (model.num_attention_heads, model.num_query_groups, model.kv_channels) == (14, 2, 64)  # 896 / 14
    assert (model.vocab_size, model.rotary_base, model.norm_epsilon) == (151936, 5e5, 1e-6)
    assert model.untie_embeddings_and_output_weights is False  # tie_word_embeddings: true
    assert (model.add_qkv_bias, model.swiglu, model.normalization) == (True, True, "RMSNorm")  # the qwen2 family
    assert run.reason("model.num_layers") == f"from {folder}/config.json"


def test_model_auto_with_an_explicit_field_checks_it(tmp_path, recipe, problems) -> None:
    ckpt = _checkpoint(tmp_path)
    (found,) = problems([*recipe, "model=auto", f"ckpt.hf_checkpoint={ckpt}", "model.hidden_size=1024"])
    assert (found.key, found.value, found.fix) == ("model.hidden_size", 1024, "model.hidden_size=896")


def test_experts_read_from_either_spelling_of_config_json() -> None:
    """transformers 5 saves Qwen3-MoE's expert count as num_local_experts; the hub's files say num_experts."""
    from rlpipe.config.hf import hf_architecture

    assert hf_architecture({"model_type": "qwen3_moe", "num_local_experts": 4})["num_experts"] == 4
    assert hf_architecture({"model_type": "qwen3_moe", "num_experts": 128})["num_experts"] == 128
