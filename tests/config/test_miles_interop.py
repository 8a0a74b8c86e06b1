"""Miles/slime interop a user can trust: each finding of the interop review, as a named test.

An imported script keeps the flags rlpipe does not model (`miles.extra_args`) and the export writes them back;
values Miles forces, units Miles uses and Miles' own derivations are what an import means and an export says.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlpipe.config import CONF_DIR, ConfigError, Resolved, load
from rlpipe.config.miles import export_miles, import_miles, miles_arrays, to_experiment_yaml
from rlpipe.config.miles.flags import Unmapped

TRAIN = (
    "python3 train.py --hf-checkpoint /root/Qwen3-4B --prompt-data /root/dapo.jsonl --label-key label --rm-type math "
    "--actor-num-gpus-per-node 4 --rollout-num-gpus 4 "
    "--rollout-batch-size 8 --n-samples-per-prompt 4 --global-batch-size 32 --num-rollout 5 "
)


def load_imported(text: str, tmp_path: Path, check_paths: bool = False, **kwargs: object) -> Resolved:
    """Import `text` as conf/experiment/imported.yaml (in a copy of conf/) and load it as a user would."""
    result = import_miles(text, base_dir=None, **kwargs)  # type: ignore[arg-type]
    conf = tmp_path / "conf"
    if not conf.exists():
        shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "imported.yaml").write_text(to_experiment_yaml(result, "imported"))
    return load(["experiment=imported"], conf_dir=conf, check_paths=check_paths)


def test_flags_rlpipe_does_not_model_are_kept_and_exported_again(tmp_path: Path) -> None:
    kept = [
        "--spec", "miles_plugins.models.glm4", "get_glm_spec", "--no-rope-fusion",
        "--moe-router-score-function", "softmax", "--moe-token-dispatcher-type", "alltoall",
        "--attention-backend", "flash",
    ]  # fmt: skip
    run = load_imported(TRAIN + " ".join(kept) + "\n", tmp_path)
    assert run.cfg.miles.extra_args == kept
    misc = miles_arrays(run)["MISC_ARGS"]
    start = misc.index("--spec")
    assert misc[start : start + len(kept)] == kept  # verbatim, in order
    assert "rlpipe runs without (kept for --miles)" in " ".join(run.warnings)


def test_uneven_pipeline_stages_import_resolve_and_export_again(tmp_path: Path) -> None:
    model = "--num-layers 61 --hidden-size 64 --num-attention-heads 4 --ffn-hidden-size 128 "
    flags = "--pipeline-model-parallel-size 4 --decoder-last-pipeline-num-layers 13\n"
    run = load_imported(TRAIN + model + flags, tmp_path)
    assert run.cfg.perf.decoder_last_pipeline_num_layers == 13  # 16 + 16 + 16 + 13 = 61
    perf = miles_arrays(run)["PERF_ARGS"]
    assert perf[perf.index("--decoder-last-pipeline-num-layers") + 1] == "13"
    with pytest.raises(ConfigError, match="decoder_last_pipeline_num_layers"):
        load_imported(TRAIN + model + flags.replace("13", "12"), tmp_path)


def test_token_in_a_flag_name_is_not_a_secret() -> None:
    assert str(Unmapped("--moe-token-dispatcher-type", ("alltoall",), "megatron", "x")).startswith(
        "--moe-token-dispatcher-type alltoall"
    )


def test_a_secret_flag_is_kept_as_an_environment_reference_not_its_value(tmp_path: Path) -> None:
    result = import_miles(TRAIN + "--wandb-key s3cr3t-value --use-wandb\n", base_dir=None)
    text = to_experiment_yaml(result, "imported")
    assert "s3cr3t-value" not in text
    assert "${oc.env:RLPIPE_SECRET_WANDB_KEY,''}" in text
    assert any("export RLPIPE_SECRET_WANDB_KEY" in note for note in result.notes)


def test_max_response_len_1024_is_exported_miles_default_is_unbounded() -> None:
    run = load(["experiment=glm4-9b-dapo", "rollout.max_response_len=1024"], check_paths=False)
    rollout = miles_arrays(run)["ROLLOUT_ARGS"]
    assert rollout[rollout.index("--rollout-max-response-len") + 1] == "1024"


def test_an_import_without_a_response_length_says_what_rlpipe_uses() -> None:
    result = import_miles(TRAIN + "\n", base_dir=None)
    assert any("--rollout-max-response-len is unset" in note for note in result.notes)


def test_num_epoch_is_exported_without_the_num_rollout_derived_from_it(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join('{"prompt": "q", "label": "a"}\n' for _ in range(1000)))
    epochs = ["rollout.num_rollout=null", "rollout.num_epoch=3", "rollout.batch_size=128", "rollout.n_samples=2"]
    run = load(
        ["experiment=glm4-9b-dapo", f"rollout.prompt_data={data}", *epochs, "rollout.global_batch_size=256"],
        check_paths=False,
    )
    assert run.cfg.rollout.num_rollout == 21  # slime's rule: 1000 // 128 = 7 rollouts per epoch, x 3
    rollout = miles_arrays(run)["ROLLOUT_ARGS"]
    assert "--num-epoch" in rollout and "--num-rollout" not in rollout


def test_values_miles_forces_are_what_an_import_means(tmp_path: Path) -> None:
    adam = load_imported(TRAIN + "--optimizer adam\n", tmp_path)
    assert adam.cfg.perf.bf16 and adam.cfg.perf.use_distributed_optimizer  # Miles sets both, whatever the flags
    sgd = load_imported(TRAIN + "--optimizer sgd\n", tmp_path)
    assert sgd.cfg.perf.bf16 and not sgd.cfg.perf.use_distributed_optimizer  # Megatron's is for Adam only


def test_an_export_of_what_miles_would_force_differently_says_so() -> None:
    run = load(["experiment=glm4-9b-dapo", "perf.bf16=false"], check_paths=False)
    text = export_miles(run)
    assert "--bf16" not in miles_arrays(run)["PERF_ARGS"]
    assert "perf.bf16 = False, but Miles trains with True whatever the flags say" in text


def test_update_weight_buffer_size_is_bytes_in_miles(tmp_path: Path) -> None:
    run = load_imported(TRAIN + "--update-weight-buffer-size 1073741824\n", tmp_path)
    assert run.cfg.cluster.weight_sync_bucket_mb == 1024
    perf = miles_arrays(run)["PERF_ARGS"]
    assert perf[perf.index("--update-weight-buffer-size") + 1] == "1073741824"
    default = load(["experiment=glm4-9b-dapo"], check_paths=False)
    assert "--update-weight-buffer-size" not in miles_arrays(default)["PERF_ARGS"]  # 512 MiB: Miles' default


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        ("--multi-latent-attention --q-lora-rank 1536 --kv-lora-rank 512", "multi-latent attention"),
        ("--mtp-num-layers 1", "multi-token prediction"),
        ("--hybrid-override-pattern M-M-M*-", "Mamba"),
        ("--position-embedding-type none", "RoPE only"),
        ("--fp8-format e4m3", "FP8 training"),
        ("--moe-layer-freq [0]*1+[1]*35", "MoE on some layers only"),
        ("--moe-layer-freq 2", "MoE on some layers only"),
        ("--custom-generate-function-path generate_with_tau.generate", "custom generate function"),
        ("--use-opd --opd-type megatron --opd-teacher-load /root/teacher", "on-policy distillation term"),
    ],
)
def test_a_model_rlpipe_cannot_train_is_refused_but_can_be_printed_and_exported(
    flags: str, what: str, tmp_path: Path
) -> None:
    printed = load_imported(TRAIN + flags + "\n", tmp_path)  # --cfg job / --miles: a warning
    assert any(what in w for w in printed.warnings)
    assert flags.split()[0] in miles_arrays(printed)["MISC_ARGS"]
    with pytest.raises(ConfigError) as info:
        load_imported(TRAIN + flags + "\n", tmp_path, check_paths=True)
    problem = next(p for p in info.value.problems if p.key == "miles.extra_args")
    assert what in problem.message and "--miles" in problem.fix


@pytest.mark.parametrize("value", ["1", "[1]*36", "'[1,1,1,1]'", "[0]*0+[1]*36"])
def test_moe_on_every_layer_is_what_rlpipe_builds(value: str, tmp_path: Path) -> None:
    run = load_imported(TRAIN + f"--moe-layer-freq {value}\n", tmp_path)
    assert not any("MoE on some layers" in w for w in run.warnings)


@pytest.mark.parametrize("package", ["slime", "miles"])
def test_miles_and_slime_plugins_become_rlpipe_s_own(package: str, tmp_path: Path) -> None:
    filters = f"{package}.rollout.filter_hub.dynamic_sampling_filters"
    flags = f"--over-sampling-batch-size 16 --dynamic-sampling-filter-path {filters}.check_reward_nonzero_std\n"
    run = load_imported(TRAIN + flags, tmp_path)
    assert run.cfg.rollout.dynamic_sampling_filter_path == "rlpipe.rollout.filters.check_reward_nonzero_std"
    asynchronous = load_imported(
        TRAIN + f"--rollout-function-path {package}.rollout.fully_async_rollout.FullyAsyncRolloutFn\n", tmp_path
    )
    assert asynchronous.cfg.rollout.mode == "async" and asynchronous.cfg.rollout.rollout_function_path is None


def test_a_plugin_or_reward_rlpipe_lacks_is_named_with_what_to_do(tmp_path: Path) -> None:
    result = import_miles(
        TRAIN.replace("--rm-type math", "--rm-type gemma_math")
        + "--rollout-function-path miles.rollout.generate_hub.multi_turn.generate\n",
        base_dir=None,
    )
    reasons = {u.flag: u.reason for u in result.unmapped}
    assert "rollout.env" in reasons["--rollout-function-path"]
    assert "no gemma_math" in reasons["--rm-type"] and "rollout.custom_rm_path" in reasons["--rm-type"]
    kept = result.config["miles"]["extra_args"]
    assert kept[kept.index("--rm-type") + 1] == "gemma_math"  # kept for the export
    assert kept[kept.index("--rollout-function-path") + 1] == "miles.rollout.generate_hub.multi_turn.generate"
    assert import_miles(TRAIN.replace("math", "remote_rm"), base_dir=None).config["rollout"]["rm_type"] == "remote"


def test_slime_s_own_sglang_flags_are_not_passed_to_the_server(tmp_path: Path) -> None:
    flags = "--sglang-server-concurrency 256 --sglang-router-policy round_robin --sglang-tp-size 2 "
    run = load_imported(TRAIN + flags + "--sglang-expert-parallel-size 2 --rollout-num-gpus-per-engine 2\n", tmp_path)
    assert run.cfg.sglang.rollout_num_gpus_per_engine == 2  # --sglang-tp-size: the same setting
    assert run.cfg.sglang.extra == {"ep_size": 2}  # SGLang's alias, renamed
    assert run.cfg.sglang.server_concurrency == 256  # the rollout manager's requests in flight per engine
    assert run.cfg.miles.extra_args[:2] == ["--sglang-router-policy", "round_robin"]
    clash = import_miles(TRAIN + "--rollout-num-gpus-per-engine 4 --sglang-tp-size 2\n", base_dir=None)
    assert any(u.flag == "--sglang-tp-size" and u.kind == "invalid" for u in clash.unmapped)


def test_sglang_flags_of_an_older_release_choose_that_release(tmp_path: Path) -> None:
    """slime's scripts use --sglang-cuda-graph-bs, which SGLang dropped at 0.5.20: the import picks the newest
    release that still has it, so the script resolves."""
    run = load_imported(TRAIN + "--sglang-cuda-graph-bs 1 2 4 8 --sglang-mem-fraction-static 0.7\n", tmp_path)
    assert run.cfg.sglang.version == "0.5.19"
    assert run.cfg.sglang.extra["cuda_graph_bs"] == [1, 2, 4, 8]
    current = import_miles(TRAIN + "--sglang-enable-dp-attention\n", base_dir=None)
    assert "version" not in current.config.get("sglang", {})  # the newest list knows it: rlpipe's default stays


@pytest.mark.parametrize(
    "function",
    [
        "slime.backends.megatron_utils.loss.icepop_function",
        "miles.backends.training_utils.loss_hub.corrections.icepop_function",
    ],
)
def test_icepop_tis_function_is_rlpipe_s_masked_tis(function: str, tmp_path: Path) -> None:
    flags = f"--use-tis --tis-clip-low 0.5 --tis-clip 2.0 --custom-tis-function-path {function}\n"
    run = load_imported(TRAIN + flags, tmp_path)
    assert (run.cfg.algo.use_tis, run.cfg.algo.tis_mode, run.cfg.algo.tis_clip_low) == (True, "mask", 0.5)
    grpo = miles_arrays(run)["GRPO_ARGS"]  # and back: Miles' own IcePop function
    assert grpo[grpo.index("--custom-tis-function-path") + 1].endswith("corrections.icepop_function")
    assert "algo.tis_mode" not in export_miles(run)  # expressed by the flag, not left as a note
    own = import_miles(TRAIN + "--use-tis --custom-tis-function-path mypkg.mis.weights\n", base_dir=None)
    assert "custom TIS function" in {u.flag: u.reason for u in own.unmapped}["--custom-tis-function-path"]


def test_slime_s_cispo_estimator_is_a_policy_loss_over_grpo(tmp_path: Path) -> None:
    run = load_imported(TRAIN.replace("--advantage-estimator grpo", "") + "--advantage-estimator cispo\n", tmp_path)
    assert (run.cfg.algo.advantage_estimator, run.cfg.algo.policy_loss) == ("grpo", "cispo")


SFT_SCRIPT = (
    "python3 train_async.py --hf-checkpoint /root/Qwen3-4B-Base --ref-load /root/Qwen3-4B-Base_torch_dist "
    "--rollout-function-path {package}.rollout.sft_rollout.generate_rollout --prompt-data /root/openhermes2_5.parquet "
    "--input-key messages --rollout-shuffle --num-epoch 3 --rollout-batch-size 128 --global-batch-size 128 "
    "--loss-type sft_loss --calculate-per-token-loss --disable-compute-advantages-and-returns --debug-train-only "
    "--loss-mask-type qwen3 --actor-num-gpus-per-node 8\n"
)


@pytest.mark.parametrize("package", ["slime", "miles"])
def test_an_sft_script_imports_as_the_sft_job(package: str, tmp_path: Path) -> None:
    """slime's and Miles' SFT recipe (scripts/run-qwen3-4B-base-sft.sh): their SFT rollout becomes rlpipe's, the
    flags the SFT job makes unnecessary are named as such, and it resolves with no engine (train-only)."""
    text = SFT_SCRIPT.format(package=package)
    reasons = {u.flag: u.reason for u in import_miles(text, base_dir=None).unmapped}
    assert "computes no advantages" in reasons["--disable-compute-advantages-and-returns"]
    assert "chat template" in reasons["--loss-mask-type"]
    run = load_imported(text, tmp_path)
    ro = run.cfg.rollout
    assert run.cfg.algo.loss_type == "sft_loss" and run.cfg.algo.calculate_per_token_loss
    assert ro.rollout_function_path == "rlpipe.rollout.sft.generate_rollout" and ro.input_key == "messages"
    assert (ro.n_samples, ro.batch_size, ro.mode, run.cfg.debug.train_only) == (1, 128, "async", True)


def test_miles_lora_flags_import_and_export_again(tmp_path: Path) -> None:
    """Miles' LoRA flags (examples/lora): the lora group, and back to the same flags."""
    flags = "--lora-rank 32 --lora-alpha 32 --target-modules q_proj,k_proj,v_proj,o_proj --exclude-modules k_proj\n"
    run = load_imported(TRAIN + flags, tmp_path)
    lo = run.cfg.lora
    assert (lo.rank, lo.alpha, lo.target_modules, lo.exclude_modules) == (
        32,
        32.0,
        "q_proj,k_proj,v_proj,o_proj",
        "k_proj",
    )
    script = export_miles(run)
    for words in ("--lora-rank 32", "--target-modules q_proj,k_proj,v_proj,o_proj", "--exclude-modules k_proj"):
        assert words in script
