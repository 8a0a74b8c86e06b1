"""Table-driven tests for every resolution rule in rlpipe.config.resolve.

Each row starts from the blank recipe (conftest `recipe`: experiment=none, files in tmp_path, CPU) and adds
the overrides that exercise one rule. `{tmp}` in an override is the test's tmp_path. Good rows list what
must be derived (value and the words of its reason), what must be left as set, and the exact warnings.
Bad rows list every problem the config must produce, no more and no fewer, each with the words its
message and its fix must contain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hf_folders import TINY_CONFIG, write_hf_folder

from rlpipe.config import Resolved, load

KNOBS = ("batch_size", "n_samples", "global_batch_size", "num_steps_per_rollout")


@dataclass(frozen=True)
class Good:
    name: str
    overrides: list[str]
    derived: dict[str, tuple[object, str]] = field(default_factory=dict)  # key -> (value, words of the reason)
    final: dict[str, object] = field(default_factory=dict)  # key -> resolved value that was set, not derived
    not_derived: tuple[str, ...] = ()
    warns: tuple[str, ...] = ()  # words of each expected warning; no other warning may appear


@dataclass(frozen=True)
class Bad:
    name: str
    overrides: list[str]
    expect: list[tuple[str, str, str]]  # (key, words of the message, words of the fix), exactly these


GOOD = [
    # ---- four knobs: any three fill the fourth, all four are checked
    Good(
        "knobs-fill-global_batch_size",
        [],
        {"rollout.global_batch_size": (128, "derived: batch_size 16 x n_samples 8 / num_steps_per_rollout 1")},
    ),
    Good(
        "knobs-fill-num_steps_per_rollout",
        ["rollout.num_steps_per_rollout=null", "rollout.global_batch_size=32"],
        {"rollout.num_steps_per_rollout": (4, "batch_size 16 x n_samples 8 / global_batch_size 32")},
    ),
    Good(
        "knobs-fill-batch_size",
        ["rollout.batch_size=null", "rollout.global_batch_size=64", "rollout.num_steps_per_rollout=2"],
        {"rollout.batch_size": (16, "global_batch_size 64 x num_steps_per_rollout 2 / n_samples 8")},
    ),
    Good(
        "knobs-fill-n_samples",
        ["rollout.n_samples=null", "rollout.global_batch_size=64"],
        {"rollout.n_samples": (4, "global_batch_size 64 x num_steps_per_rollout 1 / batch_size 16")},
    ),
    Good(
        "knobs-all-four-consistent",
        ["rollout.global_batch_size=64", "rollout.num_steps_per_rollout=2"],
        final={"rollout.global_batch_size": 64, "rollout.num_steps_per_rollout": 2},
        not_derived=tuple(f"rollout.{k}" for k in KNOBS),
    ),
    # ---- run length: num_epoch derives num_rollout from the dataset's row count (10 rows)
    Good(
        "num_epoch-derives-num_rollout",
        ["rollout.num_rollout=null", "rollout.num_epoch=3", "rollout.batch_size=4", "rollout.global_batch_size=32"],
        {"rollout.num_rollout": (6, "10 prompts // batch_size 4 = 2 rollouts per epoch x num_epoch 3")},
    ),
    Good(
        "num_epoch-after-derived-batch_size",
        ["rollout.num_rollout=null", "rollout.num_epoch=1", "rollout.batch_size=null", "rollout.global_batch_size=40"],
        {
            "rollout.batch_size": (5, "/ n_samples 8"),
            "rollout.num_rollout": (2, "10 prompts // batch_size 5 = 2 rollouts per epoch x num_epoch 1"),
        },
    ),
    # ---- colocate
    Good(
        "not-colocated",
        [],
        {"cluster.offload_train": (False, "not colocated"), "cluster.offload_rollout": (False, "not colocated")},
        final={"sglang.extra": {}},
        not_derived=("cluster.rollout_num_gpus", "sglang.mem_fraction_static"),
    ),
    Good(
        "colocate-derives-offload-gpus-and-sglang-flags",
        ["cluster.backend=ray", "cluster.colocate=true"],
        {
            "cluster.offload_train": (True, "colocate"),
            "cluster.offload_rollout": (True, "colocate"),
            "cluster.rollout_num_gpus": (1, "rollout shares the actor's 1 x 1 GPUs"),
            "sglang.mem_fraction_static": (0.8, "colocate"),
            "sglang.extra.cuda_graph_backend_prefill": ("disabled", "SGLang 0.5.23"),
        },
        final={"topology.rollout_gpus": 1},
    ),
    Good(
        "colocate-keeps-explicit-offload",
        [
            "cluster.backend=ray",
            "cluster.colocate=true",
            "cluster.offload_train=false",
            "sglang.mem_fraction_static=0.6",
        ],
        {"cluster.offload_rollout": (True, "colocate")},
        final={"cluster.offload_train": False, "sglang.mem_fraction_static": 0.6},
        not_derived=("cluster.offload_train", "sglang.mem_fraction_static"),
    ),
    Good(
        "colocate-ignores-rollout_num_gpus",
        [
            "cluster.backend=ray",
            "cluster.colocate=true",
            "cluster.actor_num_gpus_per_node=4",
            "cluster.rollout_num_gpus=2",
        ],
        {"cluster.rollout_num_gpus": (4, "1 x 4 GPUs")},
        final={"topology.rollout_gpus": 4},
        warns=("cluster.rollout_num_gpus: ignored under colocate: rollout uses the 4 actor GPUs",),
    ),
    *(
        Good(
            f"colocate-sglang-{version}",
            ["cluster.backend=ray", "cluster.colocate=true", f"sglang.version={version}"],
            {f"sglang.extra.{flag}": (value, f"SGLang {version}")},
            final={"sglang.extra": {flag: value}},
        )
        for version, flag, value in [
            ("0.5.9", "disable_piecewise_cuda_graph", True),
            ("0.5.13", "disable_piecewise_cuda_graph", True),
            ("0.5.13.post1", "disable_piecewise_cuda_graph", True),
            ("0.5.14", "cuda_graph_backend_prefill", "disabled"),
            ("0.5.14rc1", "cuda_graph_backend_prefill", "disabled"),
            ("0.6.0", "cuda_graph_backend_prefill", "disabled"),
        ]
    ),
    Good(
        "colocate-keeps-explicit-sglang-flag",
        [
            "cluster.backend=ray",
            "cluster.colocate=true",
            "sglang.version=0.5.13",
            "sglang.extra.disable_piecewise_cuda_graph=false",
        ],
        final={"sglang.extra": {"disable_piecewise_cuda_graph": False}},
        not_derived=("sglang.extra.disable_piecewise_cuda_graph",),
    ),
    # ---- eval inheritance: dataset > eval > rollout
    Good(
        "eval-inherits-dataset-then-eval-then-rollout",
        [
            "eval.datasets.own.path={tmp}/train.jsonl",
            "eval.datasets.own.top_p=0.5",
            "eval.datasets.own.n_samples=4",
            "eval.datasets.bare.path={tmp}/train.jsonl",
            "eval.top_p=0.7",
            "rollout.top_p=0.9",
            "eval.temperature=0.3",
            "rollout.temperature=0.8",
            "rollout.max_response_len=24",
            "rollout.top_k=20",
        ],
        {
            "eval.datasets.own.temperature": (0.3, "inherited from eval.temperature"),
            "eval.datasets.own.max_response_len": (24, "inherited from rollout.max_response_len"),
            "eval.datasets.own.top_k": (20, "inherited from rollout.top_k"),
            "eval.datasets.own.rm_type": ("math", "inherited from rollout.rm_type"),
            "eval.datasets.bare.top_p": (0.7, "inherited from eval.top_p"),
            "eval.datasets.bare.n_samples": (1, "inherited from eval.n_samples"),
            "eval.datasets.bare.input_key": ("prompt", "inherited from rollout.input_key"),
        },
        final={"eval.datasets.own.top_p": 0.5, "eval.datasets.own.n_samples": 4},
        not_derived=("eval.datasets.own.top_p", "eval.datasets.own.n_samples"),
    ),
    # ---- perf
    Good(
        "perf-tp2-pairs-sequence-parallel",
        ["cluster.accelerator=cuda", "perf.tensor_parallel=2", "cluster.actor_num_gpus_per_node=2"],
        {
            "perf.sequence_parallel": (True, "paired with tensor_parallel > 1"),
            "topology.data_parallel": (1, "2 actor GPUs / (TP x PP x CP = 2)"),
        },
    ),
    Good("perf-tp1-cuda", ["cluster.accelerator=cuda"], {"perf.sequence_parallel": (False, "tensor_parallel 1")}),
    Good(
        "perf-moe-expert-tp-follows-tp",
        ["model.num_experts=8", "perf.tensor_parallel=2", "cluster.actor_num_gpus_per_node=2"],
        {
            "perf.expert_tensor_parallel": (2, "megatron's default: tensor_parallel"),
            "perf.sequence_parallel": (True, "paired"),
        },
    ),
    Good(
        "perf-tp2-cpu-pairs-sequence-parallel-too",
        ["perf.tensor_parallel=2", "cluster.actor_num_gpus_per_node=2"],
        {"perf.sequence_parallel": (True, "paired")},
    ),
    Good(
        "perf-tp2-without-sequence-parallel-warns",
        ["perf.tensor_parallel=2", "cluster.actor_num_gpus_per_node=2", "perf.sequence_parallel=false"],
        not_derived=("perf.sequence_parallel",),
        warns=("perf.sequence_parallel: TP > 1 without sequence parallel keeps full activations",),
    ),
    Good(
        "perf-sequence-parallel-at-tp1-is-turned-off",
        ["cluster.accelerator=cuda", "perf.sequence_parallel=true"],
        {"perf.sequence_parallel": (False, "nothing to shard over")},
        warns=("perf.sequence_parallel: has no effect at tensor_parallel 1",),
    ),
    Good(
        "perf-dynamic-batching-makes-micro_batch_size-irrelevant",
        ["perf.use_dynamic_batch_size=true", "perf.max_tokens_per_gpu=2048"],
        {"perf.micro_batch_size": (1, "irrelevant")},
    ),
    Good(
        "perf-response-longer-than-micro-batch-warns-oom",
        [
            "perf.use_dynamic_batch_size=true",
            "perf.max_tokens_per_gpu=16",
            "perf.context_parallel=2",
            "cluster.actor_num_gpus_per_node=2",
            "rollout.max_response_len=48",
        ],
        warns=("a sample can reach 48 tokens but one micro-batch holds 16 x CP 2 = 32",),
    ),
    Good(
        "perf-context-parallel-widens-the-budget",
        [
            "perf.use_dynamic_batch_size=true",
            "perf.max_tokens_per_gpu=16",
            "perf.context_parallel=2",
            "cluster.actor_num_gpus_per_node=2",
            "rollout.max_response_len=32",
        ],
    ),
    Good(
        "perf-engine-count",
        [
            "cluster.accelerator=cuda",
            "rollout.engine=sglang",
            "perf.tensor_parallel=2",
            "cluster.actor_num_gpus_per_node=4",
            "cluster.rollout_num_gpus=8",
            "sglang.rollout_num_gpus_per_engine=2",
        ],
        {
            "topology.num_engines": (4, "8 rollout GPUs / 2 GPUs per engine"),
            "topology.data_parallel": (2, "4 actor GPUs / (TP x PP x CP = 2)"),
        },
        final={"topology.rollout_gpus": 8, "topology.actor_gpus": 4},
    ),
    # ---- algo
    Good(
        "algo-kl-coef-0-is-monitor",
        ["algo.use_kl_loss=true", "ckpt.ref_load={tmp}/hf"],
        {"algo.kl_loss_coef": (0.0, "monitor")},
    ),
    Good(
        "algo-kl-coef-positive",
        ["algo.use_kl_loss=true", "ckpt.ref_load={tmp}/hf", "algo.kl_loss_coef=0.01"],
        final={"algo.kl_loss_coef": 0.01},
        not_derived=("algo.kl_loss_coef",),
    ),
    Good(
        "algo-eps_clip_high-defaults-to-eps_clip",
        ["algo.eps_clip=0.15", "algo.eps_clip_high=null"],
        {"algo.eps_clip_high": (0.15, "defaults to eps_clip")},
    ),
    Good("algo-eps_clip_high-set", [], final={"algo.eps_clip_high": 0.28}, not_derived=("algo.eps_clip_high",)),
    Good(
        "algo-partial-rollout-multi-step-without-tis-warns",
        ["rollout.partial_rollout=true", "rollout.num_steps_per_rollout=2"],
        warns=(
            "rollout.partial_rollout: resumed samples are off-policy and num_steps_per_rollout > 1 reuses them; "
            "set algo.use_tis=true",
        ),
    ),
    Good(
        "algo-partial-rollout-with-tis",
        ["rollout.partial_rollout=true", "rollout.num_steps_per_rollout=2", "algo.use_tis=true"],
    ),
    Good("algo-partial-rollout-one-step", ["rollout.partial_rollout=true"]),
    Good(
        "algo-non-group-estimator-allows-one-sample",
        ["algo.advantage_estimator=reinforce_plus_plus", "rollout.n_samples=1"],
        {"rollout.global_batch_size": (16, "n_samples 1")},
    ),
    Good("algo-over-sampling-equal-to-batch", ["rollout.over_sampling_batch_size=16"]),
    # ---- ppo critic, on-policy distillation teacher
    Good(
        "ppo-critic_lr-defaults-to-lr",
        ["algo.advantage_estimator=ppo", "optim.lr=2e-6"],
        {"optim.critic_lr": (2e-6, "defaults to optim.lr")},
    ),
    Good(
        "ppo-critic_lr-set",
        ["algo.advantage_estimator=ppo", "optim.critic_lr=1e-5", "ckpt.critic_load={tmp}/hf"],
        final={"optim.critic_lr": 1e-5},
        not_derived=("optim.critic_lr",),
    ),
    Good(
        "critic-fields-ignored-without-ppo",
        ["algo.num_critic_only_steps=3", "optim.critic_lr=1e-5"],
        warns=("algo.num_critic_only_steps: only ppo trains a critic", "optim.critic_lr: only ppo trains a critic"),
    ),
    Good("opd-with-teacher", ["algo.advantage_estimator=on_policy_distillation", "algo.opd_teacher_load={tmp}/hf"]),
    Good("opd-teacher-ignored-by-grpo", ["algo.opd_teacher_load={tmp}/hf"], warns=("algo.opd_teacher_load: ignored",)),
    # ---- execution modes: debug halves of the loop, rollout dumps
    Good(
        "debug-load-implies-train-only",
        ["debug.load_rollout_data='{tmp}/r_{{rollout_id}}.pkl'"],
        {"debug.train_only": (True, "saved rollouts replace generation")},
    ),
    Good(
        "debug-rollout-only-saves", ["debug.rollout_only=true", "debug.save_rollout_data='{tmp}/r_{{rollout_id}}.pkl'"]
    ),
    Good(
        "debug-train-only-skips-eval",
        ["debug.load_rollout_data='{tmp}/r_{{rollout_id}}.pkl'", "eval.interval=5"],
        {"debug.train_only": (True, "load_rollout_data")},
        warns=("no engine to evaluate with",),
    ),
    # ---- the SFT job (algo.loss_type=sft_loss)
    Good(
        "lora-kl-reference-is-the-base",  # LoRA: the frozen base is the KL reference; no ckpt.ref_load needed
        ["lora.rank=8", "lora.target_modules='q_proj,v_proj'", "algo.use_kl_loss=true"],
        {},
        {"lora.rank": 8, "algo.use_kl_loss": True},
    ),
    Good(
        "sft-job",
        ["algo.loss_type=sft_loss", "rollout.n_samples=1"],
        {
            "rollout.rollout_function_path": ("rlpipe.rollout.sft.generate_rollout", "the next conversations"),
            "rollout.apply_chat_template": (True, "renders each conversation with the chat template"),
            "rollout.global_batch_size": (16, "batch_size 16 x n_samples 1"),
        },
    ),
    Good(
        "sft-job-without-engine",  # Miles' --debug-train-only SFT: no saved rollouts needed, async is prefetch
        ["algo.loss_type=sft_loss", "rollout.n_samples=1", "debug.train_only=true", "rollout.mode=async"],
        {},
        {"debug.train_only": True, "rollout.mode": "async"},
    ),
]


GOOD += [
    Good(
        "pipeline-uneven-last-stage",
        [
            "cluster.accelerator=cuda",
            "ckpt.hf_checkpoint={tmp}/seven-layers",
            "model.num_layers=7",
            "perf.pipeline_parallel=3",
            "cluster.actor_num_gpus_per_node=3",
            "perf.decoder_last_pipeline_num_layers=1",
        ],
    ),
    Good(
        "pipeline-uneven-both-ends",
        [
            "cluster.accelerator=cuda",
            "ckpt.hf_checkpoint={tmp}/seven-layers",
            "model.num_layers=7",
            "perf.pipeline_parallel=3",
            "cluster.actor_num_gpus_per_node=3",
            "perf.decoder_first_pipeline_num_layers=2",
            "perf.decoder_last_pipeline_num_layers=2",
        ],
    ),
]

BAD = [
    # ---- four knobs
    Bad(
        "knobs-three-missing",
        ["rollout.batch_size=null", "rollout.n_samples=null"],
        [
            (
                "rollout",
                "1 of the four batch knobs are set; missing: batch_size, n_samples, global_batch_size",
                "rollout.num_steps_per_rollout=1",
            )
        ],
    ),
    Bad(
        "knobs-three-missing-but-one-other",
        [
            "rollout.batch_size=null",
            "rollout.n_samples=null",
            "rollout.num_steps_per_rollout=null",
            "rollout.global_batch_size=64",
        ],
        [
            (
                "rollout",
                "1 of the four batch knobs are set; missing: batch_size, n_samples, num_steps_per_rollout",
                "set three of",
            )
        ],
    ),
    Bad(
        "knobs-all-four-inconsistent",
        ["rollout.global_batch_size=48"],
        [
            (
                "rollout.global_batch_size",
                "batch_size 16 x n_samples 8 = 128 samples produced per rollout, but global_batch_size 48 x "
                "num_steps_per_rollout 1 = 48 consumed",
                "set one knob to null",
            )
        ],
    ),
    Bad(
        "knobs-fill-global_batch_size-not-whole",
        ["rollout.num_steps_per_rollout=3"],
        [
            (
                "rollout.global_batch_size",
                "batch_size 16 x n_samples 8 / num_steps_per_rollout 3 = 42.6667 is not a whole number",
                "exact",
            )
        ],
    ),
    Bad(
        "knobs-fill-num_steps-not-whole",
        ["rollout.num_steps_per_rollout=null", "rollout.global_batch_size=96"],
        [
            (
                "rollout.num_steps_per_rollout",
                "batch_size 16 x n_samples 8 / global_batch_size 96 = 1.33333 is not a whole number",
                "exact",
            )
        ],
    ),
    Bad(
        "knobs-fill-batch_size-not-whole",
        ["rollout.batch_size=null", "rollout.global_batch_size=20"],
        [
            (
                "rollout.batch_size",
                "global_batch_size 20 x num_steps_per_rollout 1 / n_samples 8 = 2.5 is not a whole number",
                "exact",
            )
        ],
    ),
    Bad(
        "knobs-fill-n_samples-not-whole",
        ["rollout.n_samples=null", "rollout.global_batch_size=40"],
        [
            (
                "rollout.n_samples",
                "global_batch_size 40 x num_steps_per_rollout 1 / batch_size 16 = 2.5 is not a whole number",
                "exact",
            )
        ],
    ),
    # ---- run length
    Bad(
        "run-length-both",
        ["rollout.num_epoch=2"],
        [("rollout.num_epoch", "both num_rollout and num_epoch", "only one")],
    ),
    Bad("run-length-none", ["rollout.num_rollout=null"], [("rollout.num_rollout", "not set", "rollout.num_epoch=1")]),
    # ---- colocate
    Bad(
        "colocate-async",
        ["cluster.backend=ray", "cluster.colocate=true", "rollout.mode=async"],
        [("rollout.mode", "colocated GPUs cannot", "rollout.mode=sync, or cluster.colocate=false")],
    ),
    Bad(
        "colocate-sglang-version-unreadable",
        ["cluster.backend=ray", "cluster.colocate=true", "sglang.version=latest"],
        [("sglang.version", "is not a version number", "sglang.version=0.5.23")],
    ),
    # ---- perf and placement
    Bad(
        "perf-dynamic-batching-without-budget",
        ["perf.use_dynamic_batch_size=true"],
        [("perf.max_tokens_per_gpu", "dynamic batching", "perf.max_tokens_per_gpu=")],
    ),
    Bad(
        "perf-recompute-full-without-method",
        ["perf.recompute_granularity=full"],
        [("perf.recompute_method", "full recompute", "perf.recompute_method=uniform")],
    ),
    Bad(
        "perf-expert-parallel-without-moe",
        ["perf.expert_parallel=2"],
        [("perf.expert_parallel", "MoE", "perf.expert_parallel=1")],
    ),
    Bad(
        "perf-expert-layout-must-fit-a-stage",
        ["model.num_experts=8", "perf.expert_parallel=4", "cluster.actor_num_gpus_per_node=2"],
        [("perf.expert_parallel", "EP 4 x expert TP 1 = 4 does not divide the 2 GPUs", "expert_parallel x")],
    ),
    Bad(
        "perf-expert-tp-must-follow-tp-without-expert-parallel",
        [
            "model.num_experts=8",
            "perf.tensor_parallel=2",
            "cluster.actor_num_gpus_per_node=2",
            "perf.expert_tensor_parallel=1",
        ],
        [("perf.expert_tensor_parallel", "differs from tensor_parallel 2", "perf.expert_tensor_parallel=2")],
    ),
    Bad(
        "perf-moe-at-tp2-needs-sequence-parallel",
        [
            "model.num_experts=8",
            "perf.tensor_parallel=2",
            "cluster.actor_num_gpus_per_node=2",
            "perf.sequence_parallel=false",
        ],
        [("perf.sequence_parallel", "MoE model at tensor_parallel 2", "perf.sequence_parallel=true")],
    ),
    Bad(
        "gpus-not-divisible-by-tp",
        ["cluster.accelerator=cuda", "perf.tensor_parallel=2", "cluster.actor_num_gpus_per_node=3"],
        [
            (
                "cluster.actor_num_gpus_per_node",
                "1 node(s) x 3 GPUs = 3 actor GPUs, not divisible by TP 2 x PP 1 x CP 1 = 2",
                "multiple",
            )
        ],
    ),
    Bad(
        "gpus-not-divisible-by-pp-x-cp",
        [
            "cluster.accelerator=cuda",
            "perf.pipeline_parallel=2",
            "perf.context_parallel=2",
            "cluster.actor_num_nodes=2",
            "cluster.actor_num_gpus_per_node=3",
        ],
        [
            (
                "cluster.actor_num_gpus_per_node",
                "2 node(s) x 3 GPUs = 6 actor GPUs, not divisible by TP 1 x PP 2 x CP 2 = 4",
                "multiple",
            )
        ],
    ),
    # ---- pipeline stages: an even share of the layers, or Miles' uneven ends with the rest shared evenly
    Bad(
        "pipeline-stages-uneven-without-ends",
        [
            "cluster.accelerator=cuda",
            "ckpt.hf_checkpoint={tmp}/seven-layers",
            "model.num_layers=7",
            "perf.pipeline_parallel=3",
            "cluster.actor_num_gpus_per_node=3",
        ],
        [
            (
                "perf.pipeline_parallel",
                "does not divide the model's 7 layers",
                "uneven stages: perf.decoder_last_pipeline_num_layers=3",
            )
        ],
    ),
    Bad(
        "pipeline-end-leaves-uneven-middle",
        [
            "cluster.accelerator=cuda",
            "ckpt.hf_checkpoint={tmp}/seven-layers",
            "model.num_layers=7",
            "perf.pipeline_parallel=3",
            "cluster.actor_num_gpus_per_node=3",
            "perf.decoder_last_pipeline_num_layers=2",
        ],
        [
            (
                "perf.decoder_last_pipeline_num_layers",
                "leaves 5 of the model's 7 layers to the other 2 pipeline stage(s)",
                "perf.decoder_last_pipeline_num_layers=1",
            )
        ],
    ),
    Bad(
        "pipeline-ends-fill-every-layer",
        [
            "cluster.accelerator=cuda",
            "ckpt.hf_checkpoint={tmp}/seven-layers",
            "model.num_layers=7",
            "perf.pipeline_parallel=3",
            "cluster.actor_num_gpus_per_node=3",
            "perf.decoder_first_pipeline_num_layers=3",
            "perf.decoder_last_pipeline_num_layers=4",
        ],
        [
            (
                "perf.decoder_first_pipeline_num_layers",
                "leaves 0 of the model's 7 layers to the other 1 pipeline stage(s)",
                "perf.decoder_first_pipeline_num_layers=2",
            )
        ],
    ),
    Bad(
        "pipeline-end-without-pipeline",
        ["perf.decoder_first_pipeline_num_layers=1"],
        [("perf.decoder_first_pipeline_num_layers", "pipeline_parallel is 1", "=null")],
    ),
    Bad(
        "global-batch-not-divisible-by-dp",
        ["cluster.actor_num_gpus_per_node=3"],
        [("rollout.global_batch_size", "128 samples do not split evenly over 3 data-parallel ranks", "multiple of 3")],
    ),
    Bad(
        "rollout-gpus-not-divisible-by-engine",
        [
            "cluster.accelerator=cuda",
            "rollout.engine=sglang",
            "cluster.rollout_num_gpus=6",
            "sglang.rollout_num_gpus_per_engine=4",
        ],
        [("cluster.rollout_num_gpus", "6 rollout GPUs do not split into engines of 4 GPUs", "multiple of 4")],
    ),
    Bad(
        "sglang-without-rollout-gpus",
        ["cluster.accelerator=cuda", "rollout.engine=sglang"],
        [("cluster.rollout_num_gpus", "GPUs of their own", "cluster.rollout_num_gpus=")],
    ),
    Bad(
        "sglang-on-cpu",
        ["rollout.engine=sglang", "cluster.rollout_num_gpus=2"],
        [("rollout.engine", "GPUs only", "rollout.engine=hf")],
    ),
    # ---- algo
    Bad("kl-without-ref_load", ["algo.use_kl_loss=true"], [("ckpt.ref_load", "use_kl_loss", "algo.use_kl_loss=false")]),
    Bad(
        "fp8-ref_load-by-name",
        ["ckpt.ref_load={tmp}/Qwen3-4B-FP8"],
        [("ckpt.ref_load", "FP8 checkpoint", "BF16")],
    ),
    Bad(
        "fp8-ref_load-by-quantization-config",
        ["ckpt.ref_load={tmp}/ref-quantized"],
        [("ckpt.ref_load", "FP8 checkpoint", "BF16")],
    ),
    Bad(
        "opd-without-teacher",
        ["algo.advantage_estimator=on_policy_distillation"],
        [("algo.opd_teacher_load", "needs the teacher", "algo.opd_teacher_load=")],
    ),
    Bad(
        "opd-teacher-missing",
        ["algo.advantage_estimator=on_policy_distillation", "algo.opd_teacher_load={tmp}/noteacher"],
        [("algo.opd_teacher_load", "folder does not exist", "teacher")],
    ),
    Bad(
        "opd-teacher-other-tokenizer",
        ["algo.advantage_estimator=on_policy_distillation", "algo.opd_teacher_load={tmp}/teacher-other-tokenizer"],
        [("algo.opd_teacher_load", "another tokenizer", "shares the policy's tokenizer")],
    ),
    Bad(
        "ppo-critic_load-missing",
        ["algo.advantage_estimator=ppo", "ckpt.critic_load={tmp}/nocritic"],
        [("ckpt.critic_load", "folder does not exist", "HF folder")],
    ),
    Bad("grpo-one-sample", ["rollout.n_samples=1"], [("rollout.n_samples", "grpo compares samples", "n_samples=8")]),
    Bad(
        "gspo-one-sample",
        ["algo=gspo", "rollout.n_samples=1"],
        [("rollout.n_samples", "gspo compares samples", "n_samples=8")],
    ),
    Bad(
        "over-sampling-below-batch",
        ["rollout.over_sampling_batch_size=8"],
        [("rollout.over_sampling_batch_size", "smaller than batch_size 16", "rollout.over_sampling_batch_size=32")],
    ),
    Bad(
        "custom-loss-without-path",
        ["algo.loss_type=custom_loss"],
        [
            ("algo.custom_loss_function_path", "custom_loss", "algo.custom_loss_function_path="),
            ("algo.loss_type", "not built yet", "sft_loss (the SFT job)"),
        ],
    ),
    # ---- reward
    Bad("unknown-rm_type", ["rollout.rm_type=nope"], [("rollout.rm_type", "unknown reward type", "math")]),
    Bad(
        "unknown-eval-rm_type",
        ["eval.datasets.d.path={tmp}/train.jsonl", "eval.datasets.d.rm_type=nope"],
        [("eval.datasets.d.rm_type", "unknown reward type", "deepscaler")],
    ),
    Bad("no-reward", ["rollout.rm_type=null"], [("rollout.rm_type", "no reward", "rollout.rm_type=")]),
    # ---- paths
    Bad(
        "hf_checkpoint-unset",
        ["ckpt.hf_checkpoint=null"],
        [("ckpt.hf_checkpoint", "no HuggingFace checkpoint", "ckpt.hf_checkpoint=")],
    ),
    Bad(
        "hf_checkpoint-missing",
        ["ckpt.hf_checkpoint={tmp}/nowhere"],
        [("ckpt.hf_checkpoint", "folder does not exist", "HuggingFace model folder")],
    ),
    Bad(
        "prompt_data-unset",
        ["rollout.prompt_data=null"],
        [("rollout.prompt_data", "no prompt dataset", "rollout.prompt_data=")],
    ),
    Bad(
        "prompt_data-missing",
        ["rollout.prompt_data={tmp}/nowhere.jsonl"],
        [("rollout.prompt_data", "file does not exist", ".jsonl")],
    ),
    Bad(
        "prompt_data-wrong-type",
        ["rollout.prompt_data={tmp}/prompts.csv"],
        [("rollout.prompt_data", "unsupported file type", ".parquet")],
    ),
    Bad(
        "eval-path-missing",
        ["eval.datasets.aime.path={tmp}/nowhere.jsonl"],
        [("eval.datasets.aime.path", "file does not exist", "point it at a .jsonl")],
    ),
    Bad("ref_load-missing", ["ckpt.ref_load={tmp}/noref"], [("ckpt.ref_load", "folder does not exist", "reference")]),
    Bad(
        "model-auto-without-config-json",
        ["model=auto", "ckpt.hf_checkpoint={tmp}/no-config"],
        [("ckpt.hf_checkpoint", "has no config.json", "HuggingFace model folder")],
    ),
    # ---- all problems at once
    # ---- execution modes
    Bad(
        "async-offload-rollout",
        ["rollout.mode=async", "cluster.offload_rollout=true"],
        [("cluster.offload_rollout", "cannot be offloaded", "cluster.offload_rollout=false")],
    ),
    Bad(
        "debug-train-only-without-data",
        ["debug.train_only=true"],
        [("debug.train_only", "none are given", "debug.load_rollout_data=")],
    ),
    Bad(
        "debug-dump-path-without-rollout-id",
        ["debug.save_rollout_data={tmp}/r.pkl"],
        [("debug.save_rollout_data", "needs {rollout_id}", "rollout_{rollout_id}.pkl")],
    ),
    Bad(
        "debug-both-halves",
        ["debug.rollout_only=true", "debug.load_rollout_data='{tmp}/r_{{rollout_id}}.pkl'"],
        [("debug.rollout_only", "exclude each other", "keep one")],
    ),
    Bad(
        "debug-with-async",
        ["debug.rollout_only=true", "rollout.mode=async"],
        [("rollout.mode", "a debug mode runs only one", "rollout.mode=sync")],
    ),
    Bad(
        "several-rules-at-once",
        [
            "rollout.global_batch_size=48",
            "algo.use_kl_loss=true",
            "cluster.backend=ray",
            "cluster.colocate=true",
            "rollout.mode=async",
            "rollout.rm_type=nope",
            "perf.use_dynamic_batch_size=true",
        ],
        [
            ("rollout.global_batch_size", "48 consumed", "null"),
            ("ckpt.ref_load", "use_kl_loss", "ckpt.ref_load="),
            ("rollout.mode", "colocated", "rollout.mode=sync"),
            ("rollout.rm_type", "unknown reward type", "math"),
            ("perf.max_tokens_per_gpu", "unset", "perf.max_tokens_per_gpu="),
        ],
    ),
    # ---- LoRA
    Bad(
        "lora-unknown-projection",
        ["lora.rank=8", "lora.target_modules='q_proj,qkv'"],
        [("lora.target_modules", "qkv: not a projection", "lora.target_modules=all-linear")],
    ),
    Bad(
        "lora-excludes-everything",
        ["lora.rank=8", "lora.target_modules=q_proj", "lora.exclude_modules=q_proj"],
        [("lora.exclude_modules", "leaves no projection", "exclude fewer")],
    ),
    Bad(
        "lora-with-ppo-and-a-missing-adapter",
        ["lora.rank=8", "algo.advantage_estimator=ppo", "lora.adapter_path={tmp}/nothing"],
        [
            ("lora.rank", "not ppo's critic", "lora.rank=0"),
            ("lora.adapter_path", "no adapter_config.json", "save_pretrained"),
        ],
    ),
    Bad(
        "lora-adapter-path-without-lora",
        ["lora.adapter_path={tmp}"],
        [("lora.rank", "LoRA is off", "lora.rank=<the adapter's rank>")],
    ),
    # ---- the SFT job
    Bad(
        "sft-groups",
        ["algo.loss_type=sft_loss", "rollout.n_samples=4"],
        [("rollout.n_samples", "trains on each conversation once", "rollout.n_samples=1")],
    ),
    Bad(
        "sft-with-rl-terms",
        [
            "algo.loss_type=sft_loss",
            "rollout.n_samples=1",
            "algo.kl_coef=0.1",
            "ckpt.ref_load={tmp}/hf",
            "rollout.partial_rollout=true",
        ],
        [
            ("algo.kl_coef", "has no reward to put a KL penalty in", "algo.kl_coef=0"),
            ("rollout.partial_rollout", "generates nothing to resume", "rollout.partial_rollout=false"),
        ],
    ),
    Bad(
        "sft-streamed",
        ["algo.loss_type=sft_loss", "rollout.n_samples=1", "rollout.stream_prompt_data=true"],
        [("rollout.stream_prompt_data", "reads its conversations at start", "rollout.stream_prompt_data=false")],
    ),
    Bad(
        "sft-rollout-in-an-rl-run",
        ["rollout.rollout_function_path=rlpipe.rollout.sft.generate_rollout"],
        [("rollout.rollout_function_path", "serves conversations", "algo.loss_type=sft_loss")],
    ),
]


@pytest.fixture
def overrides(recipe: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Expand `{tmp}` and add the files a few rows point at (an FP8 folder, a quantized ref, a .csv, a teacher
    with another tokenizer, a 7-layer model for pipeline stages)."""
    write_hf_folder(tmp_path / "Qwen3-4B-FP8", TINY_CONFIG)
    write_hf_folder(tmp_path / "ref-quantized", TINY_CONFIG | {"quantization_config": {"quant_method": "fp8"}})
    (tmp_path / "prompts.csv").write_text("prompt,label\nq,a\n")
    write_hf_folder(tmp_path / "teacher-other-tokenizer", TINY_CONFIG, tokenizer='{"model": "another"}')
    write_hf_folder(tmp_path / "no-config", None)
    write_hf_folder(tmp_path / "seven-layers", TINY_CONFIG | {"num_hidden_layers": 7})

    # The rules judge GPU layouts the same on any machine: the cuda rows see a GPU and an installed sglang (the
    # checks of the machine itself are rows of tests/config/test_bad_input_table.py).
    monkeypatch.setattr("rlpipe.config.limits.gpu_visible", lambda: True)
    monkeypatch.setattr("rlpipe.config.support.installed", lambda package: True)

    def expand(extra: list[str]) -> list[str]:
        """The recipe with the row's overrides (a row's key replaces the recipe's); a layout of several trainer
        ranks runs on Ray unless the row says otherwise (the local backend runs one trainer process)."""
        given = {o.split("=", 1)[0].lstrip("+") for o in extra}
        base = [o for o in recipe if o.split("=", 1)[0] not in given]
        several = any(o.startswith("cluster.actor_num_") and not o.endswith("=1") for o in extra)
        backend = ["cluster.backend=ray"] if several and "cluster.backend" not in given else []
        return [*base, *backend, *(o.format(tmp=tmp_path) for o in extra)]

    return expand


def _derived(run: Resolved) -> dict[str, tuple[object, str]]:
    return {d.key: (d.value, d.reason) for d in run.derivations}


def _value_at(run: Resolved, key: str) -> object:
    node: object = run.cfg.model_dump() | {"topology": run.topology.model_dump()}
    for part in key.split("."):
        assert isinstance(node, dict), f"{key}: `{part}` is not under a mapping"
        node = node[part]
    return node


@pytest.mark.parametrize("case", GOOD, ids=[c.name for c in GOOD])
def test_rule_resolves(case: Good, overrides) -> None:
    run = load(overrides(case.overrides))
    derived = _derived(run)
    for key, (value, reason) in case.derived.items():
        assert key in derived, f"{key} not derived; derived: {sorted(derived)}"
        assert derived[key][0] == value and type(derived[key][0]) is type(value), (key, derived[key])
        assert reason in derived[key][1], (key, derived[key][1])
        if not key.startswith("topology."):  # the derived value is the one the run receives
            assert _value_at(run, key) == value
    for key, value in case.final.items():
        assert _value_at(run, key) == value, key
    for key in case.not_derived:
        assert key not in derived, f"{key} was derived ({derived.get(key)}) but the config sets it"
    assert len(run.warnings) == len(case.warns), run.warnings
    for words in case.warns:
        assert any(words in w for w in run.warnings), (words, run.warnings)


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_rule_rejects(case: Bad, overrides, problems) -> None:
    found = problems(overrides(case.overrides))
    assert sorted(p.key for p in found) == sorted(key for key, _, _ in case.expect), [p.render() for p in found]
    for key, message, fix in case.expect:
        matches = [p for p in found if p.key == key and message in p.message and fix in p.fix]
        assert matches, f"no problem on {key} saying {message!r} with fix {fix!r}: {[p.render() for p in found]}"


def test_every_problem_renders_key_and_fix(overrides, problems) -> None:
    """What the user sees: a count, then each key with its value, the rule and a `fix:` line."""
    from rlpipe.config import ConfigError

    found = problems(overrides(["rollout.global_batch_size=48", "rollout.over_sampling_batch_size=8"]))
    text = ConfigError(found).render()
    assert text.startswith("rlpipe: the config has 2 problems:")
    assert "  - rollout.over_sampling_batch_size (got 8): smaller than batch_size 16" in text
    assert text.count("\n      fix: ") == 2


def test_paths_are_warnings_when_only_printing(overrides) -> None:
    """check_paths=False (`--cfg job`, `--miles`): a plan for another machine; missing files warn instead."""
    extra = ["ckpt.hf_checkpoint={tmp}/nowhere", "rollout.prompt_data={tmp}/nowhere.jsonl", "ckpt.ref_load={tmp}/no"]
    run = load(overrides(extra), check_paths=False)
    assert sorted(w.split(":")[0] for w in run.warnings) == [
        "ckpt.hf_checkpoint",
        "ckpt.ref_load",
        "rollout.prompt_data",
    ]


def test_num_epoch_counts_parquet_rows(recipe, tmp_path: Path) -> None:
    """A .parquet prompt file is counted from its footer: 7 rows // batch_size 4 = 1 rollout per epoch, x 2."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(7)], "label": ["a"] * 7}), path)
    extra = [f"rollout.prompt_data={path}", "rollout.num_rollout=null", "rollout.num_epoch=2", "rollout.batch_size=4"]
    run = load([*recipe, *extra])
    assert run.cfg.rollout.num_rollout == 2
    assert run.reason("rollout.num_rollout") == (
        "derived: 7 prompts // batch_size 4 = 1 rollouts per epoch x num_epoch 2 (Miles' rule)"
    )
