"""The flag table of Miles interop: which schema field each Miles/slime/Megatron flag is, Miles' own defaults, the
flags rlpipe derives or fixes, and how a flag rlpipe has no field for is classified (Miles/slime, Megatron, unknown).

Export and import both read this table; nothing here reads or writes bash.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rlpipe.config.schema import RunConfig
from rlpipe.config.secrets import REDACTED, is_secret_key, redact, redact_text

ARRAYS: tuple[str, ...] = (
    "MODEL_ARGS",
    "CKPT_ARGS",
    "ROLLOUT_ARGS",
    "EVAL_ARGS",
    "PERF_ARGS",
    "GRPO_ARGS",
    "OPTIMIZER_ARGS",
    "SGLANG_ARGS",
    "LORA_ARGS",
    "MISC_ARGS",
    "WANDB_ARGS",
)
OPTIONAL_ARRAYS = ("LORA_ARGS", "MISC_ARGS", "WANDB_ARGS")  # written only when they hold something
GROUP_ARRAY = {
    "model": "MODEL_ARGS",
    "ckpt": "CKPT_ARGS",
    "rollout": "ROLLOUT_ARGS",
    "eval": "EVAL_ARGS",
    "perf": "PERF_ARGS",
    "algo": "GRPO_ARGS",
    "optim": "OPTIMIZER_ARGS",
    "sglang": "SGLANG_ARGS",
    "log": "WANDB_ARGS",
    "debug": "MISC_ARGS",
    "lora": "LORA_ARGS",  # Miles' examples/lora scripts
    "": "MISC_ARGS",  # top-level fields (seed)
}
# Where Miles' own scripts (scripts/run-glm4-9B.sh) put these, rather than by schema group.
KEY_ARRAY = {
    "model.attention_dropout": "MISC_ARGS",
    "model.hidden_dropout": "MISC_ARGS",
    "log.tensorboard": "MISC_ARGS",
}

# Miles' (or Megatron's, where Miles keeps it) default of each flag, from miles/utils/arguments.py and
# megatron/training/arguments.py. Export leaves a value out when it equals this; import writes this wherever the
# script leaves the flag out and rlpipe's composed default differs. Flags not listed are always spelled.
MILES_DEFAULTS: dict[str, Any] = {
    "seed": 1234,
    "model.rotary_percent": 1.0,
    "model.attention_dropout": 0.1,  # Megatron's; Miles' scripts pass 0.0 in MISC_ARGS
    "model.hidden_dropout": 0.1,
    "rollout.input_key": "input",
    "rollout.label_key": None,
    "rollout.metadata_key": "metadata",
    "rollout.seed": 42,
    "rollout.n_samples": 1,
    "rollout.global_batch_size": None,
    "rollout.num_steps_per_rollout": None,
    "rollout.top_p": 1.0,
    "rollout.top_k": -1,
    "rollout.max_turns": 16,  # --generate-max-turns (miles/utils/arguments.py)
    "eval.n_samples": 1,
    "perf.sequence_parallel": False,
    "perf.micro_batch_size": 1,
    "perf.bias_swiglu_fusion": True,  # Megatron's; --no-bias-swiglu-fusion turns it off
    "algo.loss_type": "policy_loss",
    "algo.kl_loss_type": "k1",
    "algo.kl_coef": 0.0,
    "algo.eps_clip_high": None,  # Miles then uses eps_clip
    "algo.tis_clip": 2.0,
    "algo.tis_clip_low": 0.0,
    "algo.gamma": 1.0,
    "algo.lambd": 1.0,
    "algo.value_clip": 0.2,
    "algo.num_critic_only_steps": 0,
    "optim.lr_decay_style": "linear",
    "optim.weight_decay": 0.01,
    "optim.min_lr": 0.0,
    "optim.lr_warmup_iters": 0,
    "optim.adam_beta2": 0.999,
    "optim.adam_eps": 1e-8,
    "optim.clip_grad": 1.0,
    "cluster.actor_num_gpus_per_node": 8,
    "cluster.rollout_num_gpus": None,
    "log.wandb_mode": "online",
    "sglang.server_concurrency": 512,  # slime/Miles' sglang_utils/arguments.py
}


def miles_forced(optimizer: str) -> dict[str, Any]:
    """What Miles trains with whatever its flags say (miles/backends/megatron_utils/arguments.py,
    set_default_megatron_args: bf16 unless --fp16, and Megatron's distributed optimizer for Adam): an import means
    these values, an export leaves them to Miles and says so where the run differs."""
    return {"perf.bf16": True, "perf.use_distributed_optimizer": optimizer == "adam"}


# A flag in other units than its field: flag -> (key, the flag's units per one of the field's).
SCALED_FLAGS: dict[str, tuple[str, int]] = {"--update-weight-buffer-size": ("cluster.weight_sync_bucket_mb", 2**20)}
# rlpipe-only fields whose value is fixed by running under Miles at all.
MILES_FIXED: dict[str, Any] = {"rollout.engine": "sglang", "cluster.backend": "ray", "cluster.accelerator": "cuda"}
# Exported only when changed from rlpipe's default (see the module docstring).
EXPORT_WHEN_CHANGED = frozenset({"sglang.log_level"})
# Fields written by hand below rather than by the generic one-flag rule.
SPECIAL_KEYS = frozenset(
    {
        "algo.grpo_std_normalization",
        "perf.bias_swiglu_fusion",
        "model.add_bias_linear",
        "eval.datasets",
        "sglang.extra",
        "cluster.offload_train",
        "cluster.offload_rollout",
        "cluster.weight_sync_bucket_mb",  # SCALED_FLAGS
        "miles.extra_args",
    }
)
# rlpipe-only fields the export expresses some other way (script name, flag) or that do not change the run.
EXPRESSED_OTHERWISE = frozenset(
    {"run_name", "output_dir", "model.name", "rollout.mode", "eval.before_train", "sglang.version", "log.progress"}
)
# Miles picks the weight-sync path from the layout, as rlpipe's `auto` does.
EXPRESSED_OTHERWISE |= {"cluster.weight_sync"}
# Flags rlpipe derives itself: accepted on import, reported as implied.
IMPLIED_FLAGS: dict[str, str] = {
    "--group-query-attention": "derived from model.num_query_groups < model.num_attention_heads",
    "--use-rotary-position-embeddings": "rlpipe models always use RoPE",
}
# Megatron's value for a model switch its flags leave out (store_true flags, and add_bias_linear unless
# --disable-bias-linear). Import applies these when the script spells the architecture (--num-layers).
MEGATRON_MODEL_SWITCHES: dict[str, bool] = {
    "swiglu": False,
    "untie_embeddings_and_output_weights": False,
    "add_qkv_bias": False,
    "qk_layernorm": False,
    "add_bias_linear": True,
}
REQUIRED_ARCH = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size")
DROPOUT_KEYS = ("model.attention_dropout", "model.hidden_dropout")

Key = tuple[str, ...]


@dataclass(frozen=True)
class FlagField:
    """One schema field exported as one flag: `key` is dotted, `annotation` carries the field's bounds."""

    key: str
    flag: str
    annotation: Any


def miles_flag(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    return extra.get("miles") if isinstance(extra, dict) else None  # type: ignore[return-value]


def schema_leaves() -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) for every field of the eight groups, cluster, log and the top level."""
    for name, info in RunConfig.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for leaf, leaf_info in sub.model_fields.items():
                yield f"{name}.{leaf}", leaf_info
        else:
            yield name, info


@cache
def flag_fields() -> dict[str, FlagField]:
    """Flag -> field for every field mapped by the generic rule (one flag; bool -> bare flag)."""
    table: dict[str, FlagField] = {}
    for key, info in schema_leaves():
        flag = miles_flag(info)
        if flag is None or key in SPECIAL_KEYS:
            continue
        if flag in table:
            raise RuntimeError(f"schema maps {flag} twice: {table[flag].key} and {key}")
        table[flag] = FlagField(
            key, flag, Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        )
    return table


def field_value(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@dataclass
class Unmapped:
    """A flag the import could not apply, and why. kind: miles (a Miles/slime flag rlpipe has no field for),
    megatron (a Megatron-LM flag), unknown (neither), invalid (a mapped flag with a bad value), unresolved
    (a `source`d file that was not found)."""

    flag: str
    values: tuple[str, ...]
    kind: Literal["miles", "megatron", "unknown", "invalid", "unresolved"]
    reason: str

    def __str__(self) -> str:
        values = (REDACTED,) if self.values and is_secret_key(self.flag) else tuple(map(redact, self.values))
        return " ".join((self.flag, *map(shlex.quote, values))) + f"  ({self.kind}: {self.reason})"


# ------------------------------------------------------------------------------------- flag classification
# Every flag Megatron-LM's argument parser defines (megatron/training/arguments.py of NVIDIA/Megatron-LM and of
# radixark/Megatron-LM, the fork Miles runs), one a line without the leading `--`, written by megatron_flags_gen.py.
MEGATRON_FLAGS_PATH = Path(__file__).with_name("megatron_flags.txt")


@cache
def _megatron_names() -> frozenset[str]:
    """Megatron-LM's flags without the leading `--`, spelled as its parser spells them (a few keep an underscore:
    `override-opt_param-scheduler`)."""
    lines = MEGATRON_FLAGS_PATH.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _is_megatron(flag: str) -> bool:
    return flag.removeprefix("--") in _megatron_names()


@cache
def miles_flag_names() -> frozenset[str]:
    return frozenset(MILES_FLAGS.split())


# `--sglang-*` flags that slime and Miles define for their own launcher and router rather than pass to SGLang's
# server (slime/backends/sglang_utils/arguments.py, miles/backends/sglang_utils/arguments.py): flag -> what it is.
LAUNCHER_SGLANG_FLAGS: dict[str, str] = {
    "--sglang-config": "slime/Miles' YAML of engine groups (prefill/decode disaggregation)",
    "--sglang-router-ip": "the address of an sglang-router slime/Miles reuse instead of starting one",
    "--sglang-router-port": "the port of an sglang-router slime/Miles reuse instead of starting one",
    "--sglang-router-policy": "the sglang-router load-balancing policy",
    "--sglang-router-request-timeout-secs": "the sglang-router request timeout",
    "--sglang-pp-size": "pipeline-parallel SGLang engines",
    "--sglang-pipeline-parallel-size": "pipeline-parallel SGLang engines",
}
# Miles/slime plug-ins (dotted paths under slime. / miles., their package names) rlpipe has its own of: the part
# after the package -> rlpipe's dotted path.
_FILTERS = "rollout.filter_hub.dynamic_sampling_filters"
PLUGIN_EQUIVALENTS: dict[str, str] = {
    f"{_FILTERS}.check_reward_nonzero_std": "rlpipe.rollout.filters.check_reward_nonzero_std",
    f"{_FILTERS}.check_no_aborted": "rlpipe.rollout.filters.check_no_aborted",
    "rollout.filter_hub.buffer_filters.pop_first": "rlpipe.rollout.buffer.pop_first",
    "rollout.sft_rollout.generate_rollout": "rlpipe.rollout.sft.generate_rollout",  # the SFT job's rollout
}
# Plug-ins that are a setting in rlpipe rather than a function: the part after the package -> (key, value).
PLUGIN_SETTINGS: dict[str, tuple[str, object]] = {
    "rollout.fully_async_rollout.FullyAsyncRolloutFn": ("rollout.mode", "async"),
    "rollout.fully_async_rollout.generate_rollout_fully_async": ("rollout.mode", "async"),
}
# ... and what the others are, where rlpipe has nothing like them yet.
PLUGIN_MISSING: dict[str, str] = {
    "rollout.generate_hub.agentic_tool_call.generate": "multi-turn tool calling: in rlpipe, rollout.env "
    "(docs/agentic.md)",
    "rollout.generate_hub.multi_turn.generate": "multi-turn generation: in rlpipe, rollout.env (docs/agentic.md)",
    "rollout.on_policy_distillation.reward_func": "on-policy distillation's reward: in rlpipe it is "
    "algo.advantage_estimator=on_policy_distillation with algo.opd_teacher_load",
}
# Miles/slime --rm-type names: rlpipe's name for the same reward, or what to do instead.
RM_TYPE_EQUIVALENTS: dict[str, str] = {"remote_rm": "remote"}
RM_TYPE_MISSING = "rlpipe's reward hub has no {name}: port Miles' rm_hub function and give it as rollout.custom_rm_path"

# slime/Miles set SGLang's tp_size from --rollout-num-gpus-per-engine; these spell the same thing.
ENGINE_TP_FLAGS = ("--sglang-tp-size", "--sglang-tensor-parallel-size")


# Miles' multi-turn generate hub (miles/rollout/generate_hub/multi_turn.py) and its tool flags: rlpipe's multi-turn
# rollout is built in and takes an environment instead, whose tools are Python functions (docs/agentic.md).
_MULTI_TURN_FIX = (
    "multi-turn rollouts in rlpipe: set rollout.env to an environment factory (e.g. a ToolEnv of your tools, ported "
    "from Miles' execute_tool; docs/agentic.md); tool calls are parsed in the Qwen/Hermes format"
)
MULTI_TURN_FLAGS = {
    "--custom-generate-function-path": _MULTI_TURN_FIX,
    "--generate-tool-specs-path": _MULTI_TURN_FIX,
    "--generate-execute-tool-function-path": _MULTI_TURN_FIX,
    "--generate-tool-call-parser": _MULTI_TURN_FIX,
    "--log-multi-turn": "rlpipe logs every multi-turn rollout's env/* metrics (turns, tool calls, errors, time)",
}


# Flags of Miles' and slime's SFT scripts that the SFT job (algo.loss_type=sft_loss) makes unnecessary.
SFT_FLAGS = {
    "--disable-compute-advantages-and-returns": "the SFT job (algo.loss_type=sft_loss) computes no advantages",
    "--loss-mask-type": "rlpipe finds the assistant turns with the checkpoint's own chat template, for every model "
    "family (rlpipe.data.conversation), so there is no per-family mask type to pick",
}


def classify(flag: str) -> tuple[Literal["miles", "megatron", "unknown"], str]:
    """Which kind of flag rlpipe has no field for, and a reason to show."""
    if flag in MULTI_TURN_FLAGS:
        return "miles", MULTI_TURN_FLAGS[flag]
    if flag in SFT_FLAGS:
        return "miles", SFT_FLAGS[flag]
    if flag in LAUNCHER_SGLANG_FLAGS:
        return "miles", f"{LAUNCHER_SGLANG_FLAGS[flag]}: a slime/Miles flag, not an SGLang server argument"
    if flag.removeprefix("--") in miles_flag_names():
        return "miles", "a Miles/slime flag with no rlpipe field"
    if _is_megatron(flag):
        return "megatron", "a Megatron-LM flag with no rlpipe field"
    known = [
        *flag_fields(),
        *(f"--{n}" for n in miles_flag_names()),
        *(f"--{n}" for n in _megatron_names()),
    ]
    near = difflib.get_close_matches(flag, known, n=1, cutoff=0.8)
    return "unknown", f"not a Miles, slime or Megatron flag{f'; did you mean {near[0]}?' if near else ''}"


# Every flag radixark/miles and THUDM/slime define themselves (snapshot of 2026-08-21), without the leading `--`:
# import tells these apart from Megatron's own flags and from unknown ones.
MILES_FLAGS = """
actor-num-gpus-per-node actor-num-nodes advantage-estimator allgather-cp allow-partial-train-step
apply-chat-template apply-chat-template-kwargs async-data-buffer-capacity-factor async-max-concurrent-samples
async-save async-unused-samples-handler attention-dropout balance-by-flops balance-data buffer-filter-path
calculate-per-token-loss chat-template-path check-lora-weight-equal
check-rematerialize-param-from-master-weight check-weight-update-allow-quant-error check-weight-update-equal
check-weight-update-selector check-weight-update-skip-list ci-check-model-hash ci-disable-kl-checker
ci-disable-logprobs-checker ci-disable-weight-update-checker ci-ft-test-actions
ci-inject-rollout-data-min-match-ratio ci-inject-rollout-data-path ci-inject-rollout-data-start-rollout-id
ci-load-grad-norm ci-metric-checker-key ci-metric-checker-threshold ci-save-grad-norm ci-save-model-hash
ci-test ci-train-rollout-logprob-abs-diff-threshold clip-grad colocate control-server-port critic-load
critic-lr critic-lr-warmup-iters critic-num-gpus-per-node critic-num-nodes critic-save
custom-advantage-function-path custom-async-data-buffer-path custom-config-path
custom-convert-samples-to-train-data-path custom-eval-rollout-log-function-path custom-generate-function-path
custom-loss-function-path custom-megatron-before-log-prob-hook-path custom-megatron-before-train-step-hook-path
custom-megatron-init-path custom-megatron-post-save-hook-path custom-model-provider-path
custom-pg-loss-reducer-function-path custom-reward-post-process-path custom-rm-path
custom-rollout-log-function-path custom-tis-function-path custom-update-weight-post-write-path
data-pad-size-multiplier data-source-path debug-deterministic-collective debug-disable-optimizer
debug-exit-after-rollout debug-rollout-only debug-skip-weight-update debug-train-only
delay-split-train-data-by-dp disable-compute-advantages-and-returns disable-grpo-std-normalization
disable-rewards-normalization disable-rollout-global-dataset disable-rollout-trim-samples
disable-wandb-random-suffix distributed-backend distributed-timeout-minutes dsa-attention-backend dump-details
dumper-dir dumper-enable dumper-fwd-bwd dumper-fwd-only dumper-inference dumper-source-patcher-config-inference
dumper-source-patcher-config-train dynamic-sampling-filter-path enable-event-analyzer enable-mtp-training
enable-witness entropy-coef env-report eps-clip eps-clip-c eps-clip-high eval-config eval-function-path
eval-hf-dir eval-input-key eval-interval eval-keep-snapshots eval-label-key eval-max-context-len
eval-max-in-flight eval-max-prompt-len eval-max-response-len eval-min-new-tokens eval-num-gpus
eval-num-gpus-per-engine eval-overflow-policy eval-prompt-data eval-reward-key eval-temperature eval-tool-key
eval-top-k eval-top-p exclude-modules experts-shared-outer-loras extra-high-precision-layers-hf
extra-high-precision-layers-megatron fetch-trajectory-retry-times freeze-indexer freeze-params-name-list
ft-components fully-async gamma get-mismatch-metrics global-batch-size group-rm hf-checkpoint hidden-dropout
http-proxy indep-dp input-key keep-old-actor kl-coef kl-loss-coef kl-loss-type label-key lambd
linear-attention-backend load load-debug-rollout-data load-debug-rollout-data-subsample load-forge-rollout-data
log-correct-samples log-multi-turn log-passrate log-probs-chunk-size log-probs-max-tokens-per-gpu
log-reward-category lora-adapter-path lora-alpha lora-base-cpu-backup lora-dropout lora-rank
lora-sync-from-tensor lora-train-only lora-type loss-mask-type loss-type low-memory-resume lr
mask-offpolicy-in-partial-rollout max-tokens-per-gpu max-weight-staleness megatron-config-path
megatron-deepgemm-forward-layers megatron-deepgemm-forward-modules megatron-deepgemm-moe-forward-layers
megatron-deepgemm-moe-forward-modules megatron-to-hf-mode memory-recorder memory-snapshot-dir
memory-snapshot-num-steps metadata-key mfu-peak-tflops micro-batch-size miles-dsa-topk-backend
miles-router-health-check-failure-threshold miles-router-max-connections miles-router-timeout
min-batch-collection-ratio mini-ft-controller-enable mini-ft-controller-poll-interval
mini-ft-controller-resume-delay mlflow-experiment-name mlflow-run-id mlflow-run-name mlflow-tracking-uri
model-name moe-input-jitter-eps moe-router-force-biased moe-router-force-load-balancing mooncake-replica-num
mooncake-store-init-kwargs mtp-loss-scaling-factor mtp-num-layers multi-lora-adapter multi-lora-api-port
multi-lora-backend-path multi-lora-disable-service-mode multi-lora-http-server-path multi-lora-idle-poll-s
multi-lora-max-adapter-global-batch-size multi-lora-max-coalesce-wait-s multi-lora-max-empty-wait-s
multi-lora-n-adapters multimodal-keys n-samples-per-eval-prompt n-samples-per-prompt no-save-optim
no-sglang-lora-use-virtual-experts normalize-advantages num-critic-only-steps num-epoch num-gpus-per-node
num-rollout num-steps-per-rollout object-store-backend observe-training-entropy offload offload-rollout
offload-rollout-level offload-train offload-train-disk-chunk-mb offload-train-disk-dir offload-train-target
only-train-params-name-list opd-kl-coef opd-log-prob-top-k opd-reward-weight-mode opd-teacher-ckpt-step
opd-teacher-key opd-teacher-load opd-teacher-urls opd-top-k-strategy opd-topk-per-position opd-type opsm-delta
over-sampling-batch-size p2p-transfer-num-workers p2p-transfer-timeout padded-vocab-size partial-rollout
pause-generation-mode pin-rollout-manager-to-head prefill-num-servers profile-target prometheus-port
prometheus-run-name prompt-data qkv-format qwen-gdn-backend recompute-logprobs-via-prefill
recompute-loss-function record-memory-history ref-ckpt-step ref-load ref-update-interval release-train
rematerialize-param-from-master-weight reset-optimizer-states reward-key rm-type rm-url
rollout-all-samples-process-path rollout-batch-size rollout-buffer-url rollout-data-postprocess-path
rollout-data-transport rollout-external rollout-external-engine-addrs rollout-function-path
rollout-health-check-first-wait rollout-health-check-interval rollout-health-check-timeout
rollout-max-context-len rollout-max-prompt-len rollout-max-response-len rollout-num-gpus
rollout-num-gpus-per-engine rollout-sample-filter-path rollout-sample-hook-path rollout-seed rollout-shuffle
rollout-skip-special-tokens rollout-stop rollout-stop-token-ids rollout-submission-granularity
rollout-task-type rollout-temperature rollout-top-k rollout-top-p save save-debug-event-data
save-debug-rollout-data save-debug-train-data save-debug-trajectory-data save-hf save-interval
save-local-weight-checksum save-trigger-sentinel seed session-message-matcher session-sample-picker-path
session-sample-postprocessor-path session-server-ip session-server-port skip-actor-forward-only
skip-eval-before-train start-rollout-id stream-optimizer-state-moment-dtype stream-optimizer-state-to-disk
target-modules tb-experiment-name tb-project-name tis-clip tis-clip-low tito-model tool-key train-backend
train-env-vars train-memory-margin-bytes true-on-policy-mode update-weight-buffer-size
update-weight-delta-checksum update-weight-delta-encoding update-weight-disk-dir update-weight-disk-keep-files
update-weight-local-checkpoint-dir update-weight-mode update-weight-transfer-mode update-weight-transport
update-weights-interval use-distributed-post use-dynamic-batch-size use-dynamic-global-batch-size
use-fault-tolerance use-indexer-replay use-kl-loss use-miles-router use-mlflow use-opd use-opsm use-prometheus
use-rollout-entropy use-rollout-indexer-replay use-rollout-logprobs use-rollout-routing-replay
use-routing-replay use-session-server use-stateless-adam use-tensorboard use-tis use-unbiased-kl use-wandb
value-clip wandb-always-use-train-step wandb-dir wandb-group wandb-host wandb-key wandb-mode wandb-project
wandb-run-id wandb-team witness-buffer-size
"""


def secret_env_name(flag: str, taken: dict[str, str]) -> str:
    """A fresh variable name for a secret value of `flag`: RLPIPE_SECRET_<FLAG>[_<n>] (from the flag, never the
    value)."""
    stem = "RLPIPE_SECRET_" + (re.sub(r"[^A-Za-z0-9]+", "_", redact_text(flag)).strip("_").upper() or "ARG")
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    return name
