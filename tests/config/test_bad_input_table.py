"""Every kind of bad input, as a user would type it: each case must exit with code 2, name the key or file at fault,
print no traceback, import nothing heavy (torch, megatron, ray, sglang, transformers) and write nothing.

All cases run in one fresh interpreter (`bad_input_runner.py`), each on top of a valid blank recipe whose files
live in a temporary folder; a control case proves that recipe itself resolves, so every failure is the case's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hf_folders import TINY_CONFIG, write_hf_folder

RUNNER = Path(__file__).with_name("bad_input_runner.py")


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]  # overrides on top of the blank recipe ({root} is the inputs folder)
    names: str  # what the message must name: the key or the file
    base: bool = True  # False: on top of the default experiment (the demo) instead of the blank recipe


BLANK = [
    "experiment=none", "ckpt.hf_checkpoint={root}/hf", "rollout.prompt_data={root}/train.jsonl",
    "rollout.rm_type=exact_match", "rollout.num_rollout=3", "rollout.max_response_len=16",
    "cluster.accelerator=cpu", "output_dir={root}/out",
]  # fmt: skip
DEMO = ["output_dir={root}/out", "demo.cache_dir={root}/cache", "cluster.accelerator=cpu"]
RAY = ["cluster.backend=ray"]


def K(key: str, value: str, *more: str, names: str | None = None) -> Case:
    """A case setting one key (plus `more` overrides), expected to name that key."""
    return Case(f"{key}={value}", [f"{key}={value}", *more], names or key)


CASES: list[Case] = [
    # ---------------------------------------------------------------- unknown keys, options, syntax, flags
    Case("typo-rollout", ["rollout.n_sample=8"], "rollout.n_samples"),
    Case("typo-model", ["model.num_layer=2"], "model.num_layers"),
    Case("typo-ckpt", ["ckpt.safe=/tmp/x"], "ckpt.save"),
    Case("typo-eval", ["eval.intervall=5"], "eval.interval"),
    Case("typo-perf", ["perf.tensor_paralel=2"], "perf.tensor_parallel"),
    Case("typo-algo", ["algo.eps_clipp=0.2"], "algo.eps_clip"),
    Case("typo-optim", ["optim.learning_rate=1e-6"], "optim.learning_rate"),
    Case("typo-sglang", ["sglang.mem_fraction=0.7"], "sglang.mem_fraction"),
    Case("typo-cluster", ["cluster.colocated=true"], "cluster.colocate"),
    Case("typo-log", ["log.tensorbord=true"], "log.tensorboard"),
    Case("typo-top-level", ["seeed=3"], "seeed"),
    Case("typo-eval-dataset-field", ["eval.datasets.d.pth={root}/train.jsonl"], "eval.datasets.d.path"),
    Case("deep-unknown", ["rollout.batch_size.x=1"], "rollout.batch_size.x"),
    Case("group-option-model", ["model=qwen9"], "model"),
    Case("group-option-algo", ["algo=ppo2"], "algo"),
    Case("group-option-experiment", ["experiment=nope"], "experiment"),
    Case("group-option-perf", ["perf=tp3"], "perf"),
    Case("hydra-runtime-key", ["hydra.run.dir=/tmp/x"], "hydra.run.dir"),
    Case("unparseable", ["rollout.n_samples=[1"], "rollout.n_samples=[1"),
    Case("unknown-flag", ["--fast"], "--fast"),
    Case("cfg-all", ["--cfg", "all"], "--cfg"),
    # ------------------------------------------------------------------------------ values: type and range
    K("rollout.batch_size", "0"),
    K("rollout.batch_size", "-4"),
    K("rollout.batch_size", "abc"),
    K("rollout.n_samples", "1.5"),
    K("rollout.n_samples", "0"),
    K("rollout.global_batch_size", "x"),
    K("rollout.num_steps_per_rollout", "0"),
    K("rollout.num_rollout", "0"),
    K("rollout.num_epoch", "-1"),
    K("rollout.max_response_len", "0"),
    K("rollout.max_prompt_len", "0"),
    K("rollout.temperature", "-0.5"),
    K("rollout.top_p", "0"),
    K("rollout.top_p", "1.5"),
    K("rollout.top_k", "-2"),
    K("rollout.top_k", "0"),
    K("rollout.seed", "-1"),
    K("rollout.stop_token_ids", "abc"),
    K("rollout.stop_token_ids", "[1,x]"),
    K("rollout.shuffle", "maybe"),
    K("rollout.mode", "fast"),
    K("rollout.engine", "vllm"),
    K("rollout.max_staleness", "0"),
    K("rollout.max_sampling_waves", "0"),
    K("rollout.reward_timeout_s", "0"),
    K("rollout.reward_failure", "retry"),
    K("rollout.over_sampling_batch_size", "0"),
    K("eval.interval", "0"),
    K("eval.n_samples", "0"),
    K("eval.temperature", "-1"),
    K("eval.top_p", "2"),
    K("eval.top_k", "0"),
    K("eval.datasets", "5"),
    K("algo.advantage_estimator", "foo"),
    K("algo.loss_type", "bar"),
    K("algo.kl_loss_type", "k9"),
    K("algo.kl_loss_coef", "-1"),
    K("algo.kl_coef", "-0.1"),
    K("algo.entropy_coef", "-1"),
    K("algo.eps_clip", "0"),
    K("algo.eps_clip", "1"),
    K("algo.eps_clip_high", "0"),
    K("algo.eps_clip_c", "0.5"),
    K("algo.tis_clip", "0"),
    K("algo.tis_clip_low", "-1"),
    K("algo.gamma", "2"),
    K("algo.lambd", "-0.1"),
    K("algo.value_clip", "0"),
    K("algo.num_critic_only_steps", "-1"),
    K("optim.optimizer", "lion"),
    K("optim.lr", "0"),
    K("optim.lr", "-1e-6"),
    K("optim.lr", "fast"),
    K("optim.min_lr", "-1"),
    K("optim.lr_decay_style", "step"),
    K("optim.lr_warmup_iters", "-5"),
    K("optim.lr_decay_iters", "0"),
    K("optim.weight_decay", "-0.1"),
    K("optim.adam_beta1", "1"),
    K("optim.adam_beta2", "1.5"),
    K("optim.adam_eps", "0"),
    K("optim.clip_grad", "-1"),
    K("perf.tensor_parallel", "0"),
    K("perf.pipeline_parallel", "0"),
    K("perf.context_parallel", "-1"),
    K("perf.micro_batch_size", "0"),
    K("perf.max_tokens_per_gpu", "0"),
    K("perf.recompute_granularity", "half"),
    K("perf.recompute_method", "random"),
    K("perf.bf16", "2"),
    K("sglang.mem_fraction_static", "1.0"),
    K("sglang.mem_fraction_static", "0"),
    K("sglang.rollout_num_gpus_per_engine", "0"),
    K("sglang.log_level", "trace"),
    K("cluster.backend", "slurm"),
    K("cluster.accelerator", "tpu"),
    K("cluster.weight_sync", "nccl"),
    K("cluster.actor_num_nodes", "0"),
    K("cluster.actor_num_gpus_per_node", "0"),
    K("cluster.weight_sync_bucket_mb", "0"),
    K("log.wandb_mode", "cloud"),
    K("model.num_layers", "0"),
    K("model.attention_dropout", "1"),
    K("model.rotary_percent", "0"),
    K("model.normalization", "BatchNorm"),
    K("resume", "maybe"),
    K("ckpt.save_interval", "0"),
    K("ckpt.keep_last", "0"),
    Case("demo-task", ["demo.task=mul", *DEMO], "demo.task", base=False),
    Case("demo-digits", ["demo.digits=9", *DEMO], "demo.digits", base=False),
    Case("warmup-steps", ["warmup.steps=0", *DEMO], "warmup.steps", base=False),
    # --------------------------------------------------------------------------- non-finite and huge numbers
    K("optim.lr", "inf"),
    K("rollout.temperature", "nan"),
    K("algo.eps_clip_high", "inf"),
    K("sglang.extra.some_factor", "inf"),
    K("rollout.batch_size", "99999999999"),
    K("rollout.max_response_len", "1099511627776"),
    K("seed", "-1"),
    K("seed", "1099511627776"),
    # ------------------------------------------------------------------------------------- cross-field rules
    Case(
        "knobs-disagree",
        [
            "rollout.batch_size=4",
            "rollout.n_samples=4",
            "rollout.global_batch_size=3",
            "rollout.num_steps_per_rollout=2",
        ],
        "rollout.global_batch_size",
    ),
    Case("knobs-two-missing", ["rollout.batch_size=null", "rollout.n_samples=null"], "rollout"),
    Case(
        "knobs-not-whole",
        [
            "rollout.batch_size=3",
            "rollout.n_samples=3",
            "rollout.global_batch_size=null",
            "rollout.num_steps_per_rollout=2",
        ],
        "rollout.global_batch_size",
    ),
    Case("num-rollout-and-epoch", ["rollout.num_epoch=2"], "rollout.num_epoch"),
    Case("no-run-length", ["rollout.num_rollout=null"], "rollout.num_rollout"),
    Case(
        "over-sampling-below-batch",
        ["rollout.batch_size=4", "rollout.over_sampling_batch_size=2"],
        "rollout.over_sampling_batch_size",
    ),
    Case("grpo-one-sample", ["rollout.n_samples=1"], "rollout.n_samples"),
    Case("kl-loss-without-ref", ["algo.use_kl_loss=true"], "ckpt.ref_load"),
    Case(
        "kl-coef-and-kl-loss", ["algo.use_kl_loss=true", "ckpt.ref_load={root}/hf", "algo.kl_coef=0.1"], "algo.kl_coef"
    ),
    Case("kl-coef-without-ref", ["algo.kl_coef=0.1"], "ckpt.ref_load"),
    Case("kl-loss-coef-unused", ["algo.kl_loss_coef=0.01"], "algo.kl_loss_coef"),
    Case("tis-low-above-high", ["algo.use_tis=true", "algo.tis_clip=1.5", "algo.tis_clip_low=2"], "algo.tis_clip_low"),
    Case("min-lr-above-lr", ["optim.lr=1e-6", "optim.min_lr=1e-5"], "optim.min_lr"),
    Case("warmup-not-shorter", ["optim.lr_warmup_iters=10", "optim.lr_decay_iters=10"], "optim.lr_warmup_iters"),
    Case("colocate-local", ["cluster.colocate=true"], "cluster.colocate"),
    Case("colocate-async", [*RAY, "cluster.colocate=true", "rollout.mode=async"], "rollout.mode"),
    Case("async-offload", ["rollout.mode=async", "cluster.offload_rollout=true"], "cluster.offload_rollout"),
    Case("cuda-on-cpu", ["cluster.accelerator=cuda"], "cluster.accelerator"),
    Case("sglang-on-cpu", ["rollout.engine=sglang", "cluster.rollout_num_gpus=2"], "rollout.engine"),
    Case(
        "tp-not-dividing-heads",
        [*RAY, "perf.tensor_parallel=3", "cluster.actor_num_gpus_per_node=3"],
        "perf.tensor_parallel",
    ),
    Case(
        "pp-beyond-layers",
        [*RAY, "perf.pipeline_parallel=4", "cluster.actor_num_gpus_per_node=4"],
        "perf.pipeline_parallel",
    ),
    Case(
        "gpus-not-divisible",
        [*RAY, "perf.tensor_parallel=2", "cluster.actor_num_gpus_per_node=3"],
        "cluster.actor_num_gpus_per_node",
    ),
    Case("local-many-ranks", ["cluster.actor_num_gpus_per_node=2"], "cluster.actor_num_gpus_per_node"),
    Case("gbs-not-split-over-dp", [*RAY, "cluster.actor_num_gpus_per_node=3"], "rollout.global_batch_size"),
    Case(
        "moe-tp-without-sp",
        [
            *RAY,
            "model.num_experts=4",
            "perf.tensor_parallel=2",
            "cluster.actor_num_gpus_per_node=2",
            "perf.sequence_parallel=false",
        ],
        "perf.sequence_parallel",
    ),
    Case(
        "ep-without-moe", [*RAY, "perf.expert_parallel=2", "cluster.actor_num_gpus_per_node=2"], "perf.expert_parallel"
    ),
    Case("full-recompute-no-method", ["perf.recompute_granularity=full"], "perf.recompute_method"),
    Case("dynamic-batching-no-budget", ["perf.use_dynamic_batch_size=true"], "perf.max_tokens_per_gpu"),
    Case("custom-loss-no-path", ["algo.loss_type=custom_loss"], "algo.custom_loss_function_path"),
    Case("train-only-no-data", ["debug.train_only=true"], "debug.train_only"),
    Case(
        "both-debug-halves",
        ["debug.train_only=true", "debug.rollout_only=true", "debug.load_rollout_data='{root}/r_{{rollout_id}}.pkl'"],
        "debug.rollout_only",
    ),
    Case("dump-without-rollout-id", ["debug.save_rollout_data={root}/dump.pkl"], "debug.save_rollout_data"),
    Case("async-debug", ["debug.rollout_only=true", "rollout.mode=async"], "rollout.mode"),
    Case("stop-id-outside-vocab", ["rollout.stop_token_ids=[5,99]"], "rollout.stop_token_ids"),
    Case("response-past-positions", ["rollout.max_response_len=64"], "rollout.max_response_len"),
    Case(
        "eval-response-past-positions",
        ["eval.datasets.d.path={root}/train.jsonl", "eval.datasets.d.max_response_len=100"],
        "eval.datasets.d.max_response_len",
    ),
    Case("label-needed", ["rollout.label_key=null"], "rollout.label_key"),
    Case("unknown-reward", ["rollout.rm_type=nope"], "rollout.rm_type"),
    Case("no-reward", ["rollout.rm_type=null"], "rollout.rm_type"),
    Case(
        "unknown-eval-reward",
        ["eval.datasets.d.path={root}/train.jsonl", "eval.datasets.d.rm_type=nope"],
        "eval.datasets.d.rm_type",
    ),
    Case("remote-reward-no-url", ["rollout.rm_type=remote"], "rollout.rm_url"),
    Case("opd-no-teacher", ["algo.advantage_estimator=on_policy_distillation"], "algo.opd_teacher_load"),
    Case("ppo-critic-missing", ["algo.advantage_estimator=ppo", "ckpt.critic_load={root}/nowhere"], "ckpt.critic_load"),
    Case("broadcast-local", ["cluster.weight_sync=broadcast"], "cluster.weight_sync"),
    Case("sglang-extra-unknown", ["sglang.extra.mem_fractio_static=0.5"], "sglang.extra.mem_fractio_static"),
    Case("sglang-extra-owned", ["sglang.extra.tp_size=2"], "sglang.extra.tp_size"),
    Case("demo-and-prompt-data", ["rollout.prompt_data={root}/train.jsonl", *DEMO], "rollout.prompt_data", base=False),
    Case("demo-and-eval-data", ["eval.datasets.mine.path={root}/train.jsonl", *DEMO], "eval.datasets", base=False),
    Case("demo-model-incomplete", ["model=auto", *DEMO], "model.num_layers", base=False),
    Case("fp8-reference", ["ckpt.ref_load={root}/Qwen3-4B-FP8", "algo.use_kl_loss=true"], "ckpt.ref_load"),
    # ----------------------------------------------------------------- train-inference consistency (issue 17)
    Case("tis-level-without-tis", ["algo.tis_level=sequence"], "algo.tis_level"),
    Case("tis-mode-without-tis", ["algo.tis_mode=mask"], "algo.tis_mode"),
    Case("tis-band-empty", ["algo.use_tis=true", "algo.tis_clip_low=2.0", "algo.tis_clip=2.0"], "algo.tis_clip_low"),
    Case("tis-level-unknown", ["algo.use_tis=true", "algo.tis_level=seq"], "algo.tis_level"),
    Case("cispo-with-gspo", ["algo.policy_loss=cispo", "algo.advantage_estimator=gspo"], "algo.policy_loss"),
    Case("cispo-with-dual-clip", ["algo.policy_loss=cispo", "algo.eps_clip_c=3"], "algo.eps_clip_c"),
    Case("cispo-with-sft", ["algo.policy_loss=cispo", "algo.loss_type=sft_loss"], "algo.policy_loss"),
    Case("fp8-training-on-cpu", ["perf.train_quantization=fp8"], "perf.train_quantization"),
    Case("fp8-rollout-on-cpu", ["sglang.rollout_quantization=fp8"], "sglang.rollout_quantization"),
    Case("fp4-training-unknown", ["perf.train_quantization=fp4"], "perf.train_quantization"),
    Case(
        "mxfp8-training-needs-mxfp8-rollout",
        ["cluster.accelerator=cuda", "perf.train_quantization=mxfp8", "sglang.rollout_quantization=fp8"],
        "perf.train_quantization",
    ),
    Case(
        "mxfp8-rollout-of-fp8-weights",
        [
            "cluster.accelerator=cuda",
            "rollout.engine=sglang",
            "ckpt.hf_checkpoint={root}/Qwen3-4B-FP8",
            "sglang.rollout_quantization=mxfp8",
        ],
        "sglang.rollout_quantization",
    ),
    Case(
        "rollout-quantization-disagrees-with-extra",
        [
            "cluster.accelerator=cuda",
            "rollout.engine=sglang",
            "sglang.rollout_quantization=fp8",
            "sglang.extra.quantization=mxfp4",
        ],
        "sglang.extra.quantization",
    ),
    Case(
        "quantized-rollout-on-the-hf-engine",
        ["cluster.accelerator=cuda", "sglang.rollout_quantization=fp8"],
        "sglang.rollout_quantization",
    ),
    # ------------------------------------------------------------------------------------------ prompt data
    K("rollout.prompt_data", "{root}/nowhere.jsonl"),
    K("rollout.prompt_data", "{root}/bad/a_folder.jsonl"),
    K("rollout.prompt_data", "{root}/bad/data.csv"),
    K("rollout.prompt_data", "{root}/bad/empty.jsonl"),
    K("rollout.prompt_data", "{root}/bad/blank.jsonl"),
    Case("data-malformed-first", ["rollout.prompt_data={root}/bad/malformed_first.jsonl"], "malformed_first.jsonl:1"),
    Case(
        "data-malformed-middle", ["rollout.prompt_data={root}/bad/malformed_middle.jsonl"], "malformed_middle.jsonl:3"
    ),
    Case("data-list-row", ["rollout.prompt_data={root}/bad/list_row.jsonl"], "list_row.jsonl:1"),
    Case("data-not-utf8", ["rollout.prompt_data={root}/bad/latin1.jsonl"], "latin1.jsonl:2"),
    Case("data-no-label", ["rollout.prompt_data={root}/bad/no_label.jsonl"], "no_label.jsonl:1"),
    Case("data-no-prompt", ["rollout.prompt_data={root}/bad/no_prompt.jsonl"], "no_prompt.jsonl:1"),
    Case("data-input-key", ["rollout.input_key=question"], "train.jsonl:1"),
    Case("data-corrupt-parquet", ["rollout.prompt_data={root}/bad/corrupt.parquet"], "corrupt.parquet"),
    Case("data-parquet-no-label", ["rollout.prompt_data={root}/bad/no_label.parquet"], "no_label.parquet"),
    Case(
        "data-all-too-long", ["rollout.max_prompt_len=2", "ckpt.hf_checkpoint={root}/hf_chars"], "rollout.prompt_data"
    ),
    Case("eval-data-missing", ["eval.datasets.d.path={root}/nowhere.jsonl"], "eval.datasets.d.path"),
    Case("eval-data-malformed", ["eval.datasets.d.path={root}/bad/malformed_first.jsonl"], "malformed_first.jsonl:1"),
    Case("data-tilde", ["rollout.prompt_data=~/prompts.jsonl"], "rollout.prompt_data"),
    # -------------------------------------------------------------------------------------- model folders
    K("ckpt.hf_checkpoint", "{root}/nowhere"),
    K("ckpt.hf_checkpoint", "{root}/bad/a_file"),
    Case("hf-no-config", ["ckpt.hf_checkpoint={root}/hf_noconfig"], "config.json"),
    Case("hf-bad-json", ["ckpt.hf_checkpoint={root}/hf_badjson"], "hf_badjson/config.json"),
    Case("hf-config-not-object", ["ckpt.hf_checkpoint={root}/hf_list"], "hf_list/config.json"),
    Case("hf-missing-fields", ["ckpt.hf_checkpoint={root}/hf_nofields"], "num_hidden_layers"),
    Case("hf-family", ["ckpt.hf_checkpoint={root}/hf_gpt2"], "gpt2"),
    Case("hf-no-tokenizer", ["ckpt.hf_checkpoint={root}/hf_notok"], "tokenizer.json"),
    Case("hf-no-weights", ["ckpt.hf_checkpoint={root}/hf_noweights"], "ckpt.hf_checkpoint"),
    Case("hf-missing-shard", ["ckpt.hf_checkpoint={root}/hf_shards"], "model-00002-of-00002.safetensors"),
    Case("hf-drift", ["ckpt.hf_checkpoint={root}/hf_drift"], "model.num_layers"),
    Case("ref-missing", ["ckpt.ref_load={root}/nowhere"], "ckpt.ref_load"),
    Case("ref-no-tokenizer", ["ckpt.ref_load={root}/hf_notok"], "ckpt.ref_load"),
    Case(
        "teacher-other-arch",
        ["algo.advantage_estimator=on_policy_distillation", "algo.opd_teacher_load={root}/hf_drift"],
        "algo.opd_teacher_load",
    ),
    # --------------------------------------------------------------------------------- checkpoints to resume
    Case("load-tracker-garbage", ["ckpt.load={root}/ck_garbage"], "latest_checkpointed_iteration.txt"),
    Case("load-tracker-missing-iter", ["ckpt.load={root}/ck_missing_iter"], "iter_0000005"),
    Case("load-incomplete", ["ckpt.load={root}/ck_incomplete"], "iter_0000001"),
    Case("load-is-file", ["ckpt.load={root}/bad/a_file"], "ckpt.load"),
    Case("load-absent", ["ckpt.load={root}/nowhere"], "ckpt.load"),
    Case("ref-torch-dist-incomplete", ["ckpt.ref_load={root}/ck_incomplete"], "iter_0000001"),
    Case(
        "fresh-but-load-has-checkpoint",
        ["resume=false", "ckpt.load={root}/ck_good", "ckpt.save={root}/out/c"],
        "ckpt.load",
    ),
    # ---------------------------------------------------------------------------------- where runs write
    Case("save-is-file", ["ckpt.save={root}/bad/a_file"], "ckpt.save"),
    Case("save-under-file", ["ckpt.save={root}/bad/a_file/ckpt"], "ckpt.save"),
    Case("save-on-proc", ["ckpt.save=/proc/rlpipe"], "ckpt.save"),
    Case("save-on-sys", ["ckpt.save=/sys/rlpipe"], "ckpt.save"),
    Case("save-tilde", ["ckpt.save=~/ckpt"], "ckpt.save"),
    Case("save-name-too-long", ["ckpt.save={root}/" + "n" * 300], "ckpt.save"),
    Case("save-path-too-long", ["ckpt.save={root}/" + "/".join(["d" * 200] * 22)], "ckpt.save"),
    Case("output-dir-is-file", ["output_dir={root}/bad/a_file"], "output_dir"),
    Case("output-dir-on-dev", ["output_dir=/dev/rlpipe"], "output_dir"),
    Case("save-hf-unknown-placeholder", ["ckpt.save_hf='{root}/hf_out/{{step}}'"], "ckpt.save_hf"),
    Case("save-hf-bad-brace", ["ckpt.save_hf='{root}/hf_out/{{rollout_id'"], "ckpt.save_hf"),
    Case("save-hf-is-file", ["ckpt.save_hf={root}/bad/a_file"], "ckpt.save_hf"),
    Case(
        "dump-is-folder",
        ["debug.save_rollout_data='{root}/bad/dump_{{rollout_id}}'"],
        "debug.save_rollout_data",
    ),
    Case(
        "dump-unknown-placeholder",
        ["debug.save_rollout_data='{root}/d/{{rollout_id}}_{{rank}}.pkl'"],
        "debug.save_rollout_data",
    ),
    Case(
        "demo-cache-is-file",
        ["demo.cache_dir={root}/bad/a_file", "output_dir={root}/out", "cluster.accelerator=cpu"],
        "demo.cache_dir",
        base=False,
    ),
    Case("run-name-slash", ["run_name=a/b"], "run_name"),
    Case("run-name-empty", ["run_name=''"], "run_name"),
    Case("run-name-dots", ["run_name=.."], "run_name"),
    Case("run-name-newline", ["run_name='a\\nb'"], "run_name"),
    Case("run-name-too-long", ["run_name=" + "r" * 300], "run_name"),
    Case("run-collision", ["output_dir={root}/collide", "run_name=run"], "optim.lr"),
    # --------------------------------------------------------------------------------------- plug-in paths
    Case("dotted-not-found", ["rollout.dynamic_sampling_filter_path=no_such_module.keep"], "no_such_module"),
    Case(
        "dotted-no-attribute",
        ["rollout.dynamic_sampling_filter_path=bad_plugins.nothing"],
        "rollout.dynamic_sampling_filter_path",
    ),
    Case(
        "dotted-not-callable",
        ["rollout.dynamic_sampling_filter_path=bad_plugins.NOT_CALLABLE"],
        "rollout.dynamic_sampling_filter_path",
    ),
    Case("dotted-signature", ["rollout.buffer_filter_path=bad_plugins.one_argument"], "rollout.buffer_filter_path"),
    Case("dotted-not-dotted", ["rollout.rollout_function_path=nodots"], "rollout.rollout_function_path"),
    Case(
        "dotted-raises",
        ["rollout.dynamic_sampling_filter_path=raises_on_import.keep"],
        "rollout.dynamic_sampling_filter_path",
    ),
    Case(
        "dotted-exits",
        ["rollout.dynamic_sampling_filter_path=exits_on_import.keep"],
        "rollout.dynamic_sampling_filter_path",
    ),
    Case("custom-reward-signature", ["rollout.custom_rm_path=bad_plugins.one_argument"], "rollout.custom_rm_path"),
    Case(
        "custom-loss-missing",
        ["algo.loss_type=custom_loss", "algo.custom_loss_function_path=bad_plugins.nothing"],
        "algo.custom_loss_function_path",
    ),
]

PLUGINS = {
    "bad_plugins.py": "NOT_CALLABLE = 3\n\n\ndef one_argument(x):\n    return x\n",
    "raises_on_import.py": "raise RuntimeError('broken at import')\n",
    "exits_on_import.py": "import sys\n\nsys.exit(3)\n",
}


def _inputs(root: Path) -> None:
    """The blank recipe's files, and every bad file the cases point at."""
    write_hf_folder(root / "hf", TINY_CONFIG)
    rows = [{"prompt": f"question {i}", "label": str(i)} for i in range(10)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = root / "bad"
    bad.mkdir()
    (bad / "a_file").write_text("not a folder")
    (bad / "a_folder.jsonl").mkdir()
    (bad / "dump_0").mkdir()  # where rollout 0's dump file would go
    (bad / "data.csv").write_text("prompt,label\nq,1\n")
    (bad / "empty.jsonl").write_text("")
    (bad / "blank.jsonl").write_text("\n\n")
    (bad / "malformed_first.jsonl").write_text('{"prompt": "q", \n')
    (bad / "malformed_middle.jsonl").write_text('{"prompt": "q", "label": "1"}\n\n{oops\n')
    (bad / "list_row.jsonl").write_text("[1, 2]\n")
    (bad / "latin1.jsonl").write_bytes(b'{"prompt": "q", "label": "1"}\n{"prompt": "caf\xe9", "label": "1"}\n')
    (bad / "no_label.jsonl").write_text('{"prompt": "q", "answer": "1"}\n')
    (bad / "no_prompt.jsonl").write_text('{"question": "q", "label": "1"}\n')
    (bad / "corrupt.parquet").write_text("this is not parquet")
    pq.write_table(pa.table({"prompt": ["q1", "q2"]}), bad / "no_label.parquet")
    # A real tokenizer for the max_prompt_len count: one token per character.
    write_hf_folder(root / "hf_chars", TINY_CONFIG, tokenizer=_char_tokenizer())
    write_hf_folder(root / "hf_noconfig", None)
    (write_hf_folder(root / "hf_badjson", TINY_CONFIG) / "config.json").write_text("{not json")
    (write_hf_folder(root / "hf_list", TINY_CONFIG) / "config.json").write_text("[1, 2]")
    write_hf_folder(root / "hf_nofields", {"model_type": "qwen2"})
    write_hf_folder(root / "hf_gpt2", TINY_CONFIG | {"model_type": "gpt2"})
    (write_hf_folder(root / "hf_notok", TINY_CONFIG) / "tokenizer.json").unlink()
    (write_hf_folder(root / "hf_noweights", TINY_CONFIG) / "model.safetensors").unlink()
    shards = write_hf_folder(root / "hf_shards", TINY_CONFIG)
    (shards / "model.safetensors").rename(shards / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    write_hf_folder(root / "hf_drift", TINY_CONFIG | {"num_hidden_layers": 4})
    write_hf_folder(root / "Qwen3-4B-FP8", TINY_CONFIG)
    _checkpoint(root / "ck_garbage", "abc", None)
    _checkpoint(root / "ck_missing_iter", "5", None)
    _checkpoint(root / "ck_incomplete", "1", [])
    _checkpoint(root / "ck_good", "1", ["metadata.json", ".metadata", "common.pt"])
    collide = root / "collide" / "run"  # an earlier run with another learning rate
    collide.mkdir(parents=True)
    (collide / "metrics.jsonl").write_text('{"phase": "train", "rollout_id": 0, "reward_mean": 0.5}\n')
    from rlpipe.config import load
    from rlpipe.config.identity import write_identity

    earlier = load([o.format(root=root) for o in BLANK] + ["optim.lr=3e-6"])
    write_identity(collide, earlier.cfg.model_dump())
    plugins = root / "plugins"
    plugins.mkdir()
    for name, text in PLUGINS.items():
        (plugins / name).write_text(text)


def _args(case: Case, root: Path) -> list[str]:
    """The case's overrides on the blank recipe's: a key the case sets replaces the recipe's (no key twice)."""
    base = {o.split("=", 1)[0]: o for o in (BLANK if case.base else [])}
    for override in case.args:
        base.pop(override.split("=", 1)[0], None)
    return [o.format(root=root) for o in [*base.values(), *case.args]]


def _char_tokenizer() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate("<>abcdefghijklmnopqrstuvwxyz 0123456789")}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return tokenizer.to_str()


def _checkpoint(folder: Path, tracker: str, files: list[str] | None) -> None:
    folder.mkdir()
    (folder / "latest_checkpointed_iteration.txt").write_text(tracker)
    if files is not None:
        iteration = folder / f"iter_{int(tracker):07d}"
        iteration.mkdir()
        for name in files:
            (iteration / name).write_text("")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("inputs")
    _inputs(root)
    control = Case("control: the blank recipe resolves", [], "")
    cases = [{"id": c.id, "args": _args(c, root)} for c in [control, *CASES]]
    env = {**os.environ, "PYTHONPATH": str(root / "plugins"), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(root)],
        input=json.dumps(cases), capture_output=True, text=True, cwd=root, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = {r["id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert len(found) == len(cases), done.stderr[-3000:]
    return found


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)  # every id names one case


def test_the_blank_recipe_itself_resolves(reports: dict[str, dict]) -> None:
    report = reports["control: the blank recipe resolves"]
    assert "ACCEPTED" in report["stderr"], report["stderr"][-2000:]
    assert report["heavy"] == [] and report["written"] == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_anything_starts(case: Case, reports: dict[str, dict]) -> None:
    report = reports[case.id]
    shown = report["stderr"][-3000:]
    assert report["code"] == 2, shown
    assert "Traceback" not in report["stderr"] and "ACCEPTED" not in report["stderr"], shown
    assert case.names in report["stderr"], shown
    assert report["heavy"] == [], report["heavy"]
    assert report["written"] == [] and report["removed"] == [], (report["written"], report["removed"])
