"""The configuration schema: one pydantic model per argument group, mirroring Miles' eight bash arrays.

Every field is documented once, here: a one-line description with units, a type, bounds, and (in
`json_schema_extra["miles"]`) the Miles/Megatron/SGLang flag it corresponds to. The Miles import/export,
the docs table and the "did you mean" suggestions are all generated from this module.

Fields whose default is `None` are either optional or *derived* in `rlpipe.config.resolve`, which records
why each derived value was chosen. Only `rlpipe.config` reads overrides; the rest of rlpipe receives the
frozen, resolved `RunConfig`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt


def F(default: Any, description: str, miles: str | None = None, **kwargs: Any) -> Any:
    """A documented field; `miles` names the equivalent launch-script flag (None: rlpipe-only)."""
    return Field(default, description=description, json_schema_extra={"miles": miles}, **kwargs)


class Group(BaseModel):
    """Base for every group: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------- MODEL_ARGS
class ModelConfig(Group):
    """Architecture constants (MODEL_ARGS). `None` means: take it from the HF checkpoint's config.json."""

    name: str = F("custom", "Label for the architecture (the conf/model file name); informational only.")
    num_layers: PositiveInt | None = F(None, "Number of transformer layers.", "--num-layers")
    hidden_size: PositiveInt | None = F(None, "Model width (hidden units).", "--hidden-size")
    ffn_hidden_size: PositiveInt | None = F(None, "MLP inner width (hidden units).", "--ffn-hidden-size")
    num_attention_heads: PositiveInt | None = F(None, "Query attention heads.", "--num-attention-heads")
    num_query_groups: PositiveInt | None = F(
        None, "Key/value heads (grouped-query attention); equal to heads means plain MHA.", "--num-query-groups"
    )
    kv_channels: PositiveInt | None = F(None, "Width of one attention head (channels).", "--kv-channels")
    vocab_size: PositiveInt | None = F(None, "Tokenizer vocabulary size (tokens), before TP padding.", "--vocab-size")
    max_position_embeddings: PositiveInt | None = F(
        None, "Longest sequence the position encoding supports (tokens).", "--max-position-embeddings"
    )
    rotary_base: PositiveFloat | None = F(None, "RoPE base frequency (theta).", "--rotary-base")
    normalization: Literal["RMSNorm", "LayerNorm"] | None = F(None, "Normalization layer type.", "--normalization")
    norm_epsilon: PositiveFloat | None = F(None, "Epsilon added inside normalization layers.", "--norm-epsilon")
    swiglu: bool | None = F(None, "Gated SiLU MLP (SwiGLU) instead of a plain GeLU MLP.", "--swiglu")
    untie_embeddings_and_output_weights: bool | None = F(
        None, "Separate input embedding and output projection weights.", "--untie-embeddings-and-output-weights"
    )
    add_qkv_bias: bool | None = F(None, "Bias on the Q/K/V projections (Qwen2, GLM4).", "--add-qkv-bias")
    qk_layernorm: bool | None = F(None, "RMSNorm on queries and keys per head (Qwen3).", "--qk-layernorm")
    add_bias_linear: bool | None = F(
        None, "Biases on the linear layers other than QKV (Miles: not --disable-bias-linear).", "--disable-bias-linear"
    )
    rotary_percent: float = F(
        1.0, "Fraction of each head's channels that get RoPE (GLM4: 0.5).", "--rotary-percent", gt=0.0, le=1.0
    )
    rotary_interleaved: bool = F(
        False, "RoPE on interleaved channel pairs (GLM4) instead of halves.", "--rotary-interleaved"
    )
    post_self_attn_layernorm: bool = F(False, "Extra norm after self-attention (GLM4).", "--post-self-attn-layernorm")
    post_mlp_layernorm: bool = F(False, "Extra norm after the MLP (GLM4).", "--post-mlp-layernorm")
    attention_dropout: float = F(
        0.0, "Attention dropout probability (0 for RL).", "--attention-dropout", ge=0.0, lt=1.0
    )
    hidden_dropout: float = F(0.0, "Hidden-state dropout probability (0 for RL).", "--hidden-dropout", ge=0.0, lt=1.0)
    num_experts: PositiveInt | None = F(None, "MoE experts per layer (None: dense model).", "--num-experts")
    moe_router_topk: PositiveInt | None = F(None, "Experts each token is routed to (MoE only).", "--moe-router-topk")
    moe_ffn_hidden_size: PositiveInt | None = F(
        None, "MLP inner width of one expert (hidden units, MoE only).", "--moe-ffn-hidden-size"
    )


# ---------------------------------------------------------------------------------------------- CKPT_ARGS
class CkptConfig(Group):
    """Filesystem paths for the actor, the frozen reference and the save folder (CKPT_ARGS)."""

    hf_checkpoint: str | None = F(
        None, "HuggingFace folder: tokenizer, config.json, initial weights, rollout-engine init.", "--hf-checkpoint"
    )
    ref_load: str | None = F(
        None,
        "Frozen reference weights (the KL anchor); also the actor's warm start when `load` is empty.",
        "--ref-load",
    )
    load: str | None = F(None, "Actor resume folder (latest_checkpointed_iteration.txt inside).", "--load")
    critic_load: str | None = F(
        None,
        "PPO critic's initial weights: an HF folder (backbone, and the value head from score.weight if present; "
        "None: the policy's HF checkpoint with a zero head). Resumes restore the critic from `load` instead.",
        "--critic-load",
    )
    save: str | None = F(None, "Folder checkpoints are written to (usually the same as `load`).", "--save")
    save_interval: PositiveInt | None = F(
        None, "Rollouts between checkpoint writes (None: only at the end).", "--save-interval"
    )
    save_hf: str | None = F(
        None, "Also write each checkpoint as a HuggingFace folder here ({rollout_id} is filled in).", "--save-hf"
    )
    no_save_optim: bool = F(
        False, "Leave the optimizer state out of checkpoints (smaller, not resumable).", "--no-save-optim"
    )
    keep_last: PositiveInt | None = F(
        None, "Keep only the newest this many checkpoints in `save` (None: keep every one) (checkpoints)."
    )


# ------------------------------------------------------------------------------------------- ROLLOUT_ARGS
class RolloutConfig(Group):
    """Where prompts come from, how many samples flow per rollout, sampling, reward (ROLLOUT_ARGS)."""

    prompt_data: str | None = F(None, "Prompt dataset file (.jsonl or .parquet).", "--prompt-data")
    stream_prompt_data: bool = F(
        False,
        "Read prompt_data on demand (a row index in memory; rows read, templated and tokenized a chunk at a time "
        "as the cursor reaches them) instead of all at start: for files too large to hold (a million prompts). "
        "Malformed rows and prompts over max_prompt_len are then skipped (logged with file:line) when met, not "
        "reported before the run. Not for the SFT job's conversations.",
    )
    input_key: str = F(
        "prompt", "Dataset column holding the prompt (a string or a list of chat messages).", "--input-key"
    )
    label_key: str | None = F("label", "Dataset column holding the reference answer (None: no label).", "--label-key")
    metadata_key: str = F("metadata", "Dataset column holding per-prompt metadata (a dict).", "--metadata-key")
    apply_chat_template: bool = F(False, "Render prompts with the checkpoint's chat template.", "--apply-chat-template")
    shuffle: bool = F(False, "Shuffle prompts, with a new seeded permutation each epoch.", "--rollout-shuffle")
    seed: int = F(42, "Seed for prompt shuffling and sampling.", "--rollout-seed")

    rm_type: str | None = F(
        None, "Reward function name from the reward hub (e.g. deepscaler, math, dapo).", "--rm-type"
    )
    custom_rm_path: str | None = F(
        None, "Dotted path to a custom reward function (overrides rm_type).", "--custom-rm-path"
    )
    rm_url: str | None = F(None, "URL of a remote reward model (rm_type=remote).", "--rm-url")
    group_rm: bool = F(False, "The custom reward scores a whole group of samples at once.", "--group-rm")
    reward_timeout_s: PositiveFloat = F(
        60.0, "Longest one reward call may take (seconds); a slower call counts as a failed one (reward_failure)."
    )
    reward_failure: Literal["fail", "zero", "drop_group"] = F(
        "fail",
        "What a reward call that raises or times out does: fail stops the run with the reward's own error; zero "
        "scores that sample 0; drop_group drops its whole group from the rollout. Counted in metrics either way.",
    )
    reward_workers: NonNegativeInt | None = F(
        None,
        "Worker processes for rewards computed on the host (math-verify, deepscaler, dapo, f1, exact_match, "
        "reasoning_gym, custom plain functions): each call then has its own timeout and starts as its sample "
        "finishes generating. None: one per core (at most 16) once a rollout has 256 samples or more, except for "
        "exact_match and f1, which cost less than the trip to a worker; 0: always in-process; N: always N workers.",
    )

    num_rollout: PositiveInt | None = F(
        None, "Total rollouts (sample-then-train iterations); or use num_epoch.", "--num-rollout"
    )
    num_epoch: PositiveInt | None = F(None, "Passes over the prompt data; derives num_rollout.", "--num-epoch")
    batch_size: PositiveInt | None = F(None, "Prompts drawn per rollout (prompts).", "--rollout-batch-size")
    n_samples: PositiveInt | None = F(
        None, "Responses generated per prompt, the GRPO group (samples).", "--n-samples-per-prompt"
    )
    global_batch_size: PositiveInt | None = F(None, "Samples per optimizer step (samples).", "--global-batch-size")
    num_steps_per_rollout: PositiveInt | None = F(
        None, "Optimizer steps per rollout (1 = strict on-policy).", "--num-steps-per-rollout"
    )

    max_prompt_len: PositiveInt | None = F(None, "Drop prompts longer than this (tokens).", "--rollout-max-prompt-len")
    max_response_len: PositiveInt = F(
        1024,
        "Longest response generated (tokens; multi-turn: the whole episode, observations included).",
        "--rollout-max-response-len",
    )
    temperature: float = F(1.0, "Sampling temperature (0 = greedy).", "--rollout-temperature", ge=0.0)
    top_p: float = F(1.0, "Nucleus sampling mass (1 = off).", "--rollout-top-p", gt=0.0, le=1.0)
    top_k: int = F(-1, "Sample among the k most likely tokens (-1 = off).", "--rollout-top-k", ge=-1)
    stop_token_ids: list[int] = F(
        [], "Extra token ids that end a response (EOS always does).", "--rollout-stop-token-ids"
    )
    balance_data: bool = F(False, "Equalize tokens across data-parallel ranks.", "--balance-data")

    over_sampling_batch_size: PositiveInt | None = F(
        None, "Prompts drawn per dynamic-sampling wave (prompts; >= batch_size).", "--over-sampling-batch-size"
    )
    dynamic_sampling_filter_path: str | None = F(
        None,
        "Dotted path of the group filter f(cfg, samples) -> bool used by dynamic sampling.",
        "--dynamic-sampling-filter-path",
    )
    max_sampling_waves: PositiveInt = F(
        8, "Most dynamic-sampling waves per rollout before failing with an error naming the filter (waves)."
    )
    partial_rollout: bool = F(
        False, "Keep aborted in-flight samples and resume them next rollout.", "--partial-rollout"
    )
    buffer_filter_path: str | None = F(
        None,
        "Dotted path of the partial-rollout dequeue policy f(cfg, rollout_id, buffer, n).",
        "--buffer-filter-path",
    )
    rollout_function_path: str | None = F(
        None,
        "Dotted path of the rollout function f(cfg, rollout_id, source) -> groups of samples.",
        "--rollout-function-path",
    )
    env: str | None = F(
        None,
        "Multi-turn: dotted path of an environment factory f(cfg) -> Environment (one per sample), e.g. "
        "rlpipe.rollout.env.calculator_env or rlpipe.rollout.sandbox.python_env; None: single-turn.",
    )
    max_turns: PositiveInt = F(
        16,
        "Multi-turn: most assistant turns per episode (turns); the environment's tool calls answered in between.",
        "--generate-max-turns",
    )
    max_turn_tokens: PositiveInt | None = F(
        None, "Multi-turn: most tokens one assistant turn may generate (tokens; None: what max_response_len leaves)."
    )
    env_timeout_s: PositiveFloat = F(
        60.0,
        "Multi-turn: longest one environment reset or step may take (seconds); past it the episode fails "
        "(counted as a failed reward call, rollout.reward_failure).",
    )
    mode: Literal["sync", "async"] = F(
        "sync", "sync: generate then train; async: generate the next rollout while training (train_async.py)."
    )
    max_staleness: PositiveInt = F(1, "Async only: most policy versions a trained sample may lag behind (versions).")
    engine: Literal["hf", "sglang"] = F("hf", "Rollout engine: in-process HF transformers (CPU) or SGLang (GPU).")


# ---------------------------------------------------------------------------------------------- EVAL_ARGS
class EvalDataset(Group):
    """One named eval dataset; unset sampling fields inherit from `eval`, then from `rollout`."""

    path: str = F(..., "Eval prompt file (.jsonl or .parquet).", "--eval-prompt-data")
    input_key: str | None = F(None, "Prompt column (inherits).", "--eval-input-key")
    label_key: str | None = F(None, "Label column (inherits).", "--eval-label-key")
    rm_type: str | None = F(None, "Reward function (inherits).")
    n_samples: PositiveInt | None = F(
        None, "Responses per eval prompt (samples; inherits).", "--n-samples-per-eval-prompt"
    )
    max_response_len: PositiveInt | None = F(
        None, "Longest eval response (tokens; inherits).", "--eval-max-response-len"
    )
    temperature: float | None = F(None, "Eval sampling temperature (inherits).", "--eval-temperature", ge=0.0)
    top_p: float | None = F(None, "Eval nucleus mass (inherits).", "--eval-top-p", gt=0.0, le=1.0)
    top_k: int | None = F(None, "Eval top-k (inherits; -1 = off).", "--eval-top-k", ge=-1)


class EvalConfig(Group):
    """Evaluation cadence and sampling overrides (EVAL_ARGS); a strict subset of rollout."""

    interval: PositiveInt | None = F(None, "Rollouts between evaluations (None: no periodic eval).", "--eval-interval")
    before_train: bool = F(True, "Also evaluate before the first rollout (Miles: not --skip-eval-before-train).")
    datasets: dict[str, EvalDataset] = F({}, "Named eval datasets: name -> {path, overrides}.", "--eval-prompt-data")
    input_key: str | None = F(None, "Prompt column for every eval dataset (inherits from rollout).", "--eval-input-key")
    label_key: str | None = F(None, "Label column for every eval dataset (inherits from rollout).", "--eval-label-key")
    rm_type: str | None = F(None, "Reward function for eval (inherits from rollout).")
    n_samples: PositiveInt | None = F(1, "Responses per eval prompt (samples).", "--n-samples-per-eval-prompt")
    max_response_len: PositiveInt | None = F(
        None, "Longest eval response (tokens; inherits from rollout).", "--eval-max-response-len"
    )
    temperature: float | None = F(None, "Eval temperature (inherits from rollout).", "--eval-temperature", ge=0.0)
    top_p: float | None = F(None, "Eval nucleus mass (inherits from rollout).", "--eval-top-p", gt=0.0, le=1.0)
    top_k: int | None = F(None, "Eval top-k (inherits from rollout).", "--eval-top-k", ge=-1)


# ---------------------------------------------------------------------------------------------- PERF_ARGS
class PerfConfig(Group):
    """Parallelism, recomputation, batching and precision of the trainer (PERF_ARGS)."""

    tensor_parallel: PositiveInt = F(1, "Tensor-parallel size (GPUs per layer shard).", "--tensor-model-parallel-size")
    sequence_parallel: bool | None = F(
        None, "Shard activations along the sequence under TP (None: derived).", "--sequence-parallel"
    )
    pipeline_parallel: PositiveInt = F(1, "Pipeline-parallel size (stages).", "--pipeline-model-parallel-size")
    decoder_first_pipeline_num_layers: PositiveInt | None = F(
        None,
        "Layers on the first pipeline stage when stages are uneven (None: an even share).",
        "--decoder-first-pipeline-num-layers",
    )
    decoder_last_pipeline_num_layers: PositiveInt | None = F(
        None,
        "Layers on the last pipeline stage when stages are uneven (None: an even share).",
        "--decoder-last-pipeline-num-layers",
    )
    context_parallel: PositiveInt = F(
        1, "Context-parallel size (GPUs sharing one sequence).", "--context-parallel-size"
    )
    expert_parallel: PositiveInt = F(1, "Expert-parallel size (MoE).", "--expert-model-parallel-size")
    expert_tensor_parallel: PositiveInt | None = F(
        None, "Tensor-parallel size inside each expert (MoE; None: tensor_parallel).", "--expert-tensor-parallel-size"
    )
    recompute_granularity: Literal["full", "selective"] | None = F(
        None, "Activation recomputation (None: store everything).", "--recompute-granularity"
    )
    recompute_method: Literal["uniform", "block"] | None = F(
        None, "How full recompute splits layers.", "--recompute-method"
    )
    recompute_num_layers: PositiveInt | None = F(None, "Layers per recompute chunk (layers).", "--recompute-num-layers")
    use_dynamic_batch_size: bool = F(
        False, "Pack samples into micro-batches under max_tokens_per_gpu.", "--use-dynamic-batch-size"
    )
    max_tokens_per_gpu: PositiveInt | None = F(
        None, "Token budget of one packed micro-batch per GPU (tokens).", "--max-tokens-per-gpu"
    )
    micro_batch_size: PositiveInt = F(
        1, "Samples per micro-batch without dynamic batching (samples).", "--micro-batch-size"
    )
    use_distributed_optimizer: bool = F(
        False, "Shard optimizer state across data-parallel ranks.", "--use-distributed-optimizer"
    )
    bf16: bool = F(False, "Train in bfloat16 (fp32 master weights).", "--bf16")
    train_quantization: Literal["fp8", "mxfp8", "nvfp4"] | None = F(
        None,
        "Low-precision training GEMMs (GPU only, Transformer Engine). mxfp8 needs "
        "sglang.rollout_quantization=mxfp8; the reference model is never quantized.",
    )
    bias_swiglu_fusion: bool = F(
        False,
        "Megatron's fused SwiGLU (torch.compile: needs a C compiler, compiles once per process).",
        "--no-bias-swiglu-fusion",  # Megatron's flag turns its default (on) off
    )


# ---------------------------------------------------------------------------------------------- GRPO_ARGS
AdvantageEstimator = Literal[
    "grpo", "gspo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "ppo", "on_policy_distillation"
]


class AlgoConfig(Group):
    """The RL objective (GRPO_ARGS): estimator, clipping, KL, entropy, TIS, loss reduction."""

    advantage_estimator: AdvantageEstimator = F("grpo", "Advantage estimator.", "--advantage-estimator")
    loss_type: Literal["policy_loss", "sft_loss", "custom_loss"] = F(
        "policy_loss", "Loss: RL policy loss, supervised NLL, or custom_loss_function_path.", "--loss-type"
    )
    custom_loss_function_path: str | None = F(
        None, "Dotted path of a custom loss (loss_type=custom_loss).", "--custom-loss-function-path"
    )
    grpo_std_normalization: bool = F(
        True, "Divide group-centred rewards by the group std (off = Dr.GRPO).", "--disable-grpo-std-normalization"
    )
    use_kl_loss: bool = F(False, "Load the reference model and compute KL(actor || ref) every step.", "--use-kl-loss")
    kl_loss_coef: float = F(0.0, "Weight of the KL term in the loss (0 = monitor only).", "--kl-loss-coef", ge=0.0)
    kl_loss_type: Literal["k1", "k2", "k3", "low_var_kl"] = F(
        "low_var_kl", "KL estimator of the KL loss and of the reward-level KL (kl_coef), as in Miles.", "--kl-loss-type"
    )
    kl_coef: float = F(0.0, "Reward-level KL penalty weight (alternative to the KL loss).", "--kl-coef", ge=0.0)
    entropy_coef: float = F(0.0, "Entropy bonus weight.", "--entropy-coef", ge=0.0)
    eps_clip: float = F(0.2, "PPO clip range below 1 (ratio >= 1 - eps_clip).", "--eps-clip", gt=0.0, lt=1.0)
    eps_clip_high: float | None = F(
        None, "PPO clip range above 1 (None: eps_clip; DAPO uses 0.28).", "--eps-clip-high", gt=0.0
    )
    eps_clip_c: float | None = F(
        None, "Dual-clip bound for negative advantages (None: off; > 1).", "--eps-clip-c", gt=1.0
    )
    calculate_per_token_loss: bool = F(
        False, "Reduce as sum(tokens)/total tokens instead of the per-sample mean.", "--calculate-per-token-loss"
    )
    policy_loss: Literal["ppo", "cispo"] = F(
        "ppo",
        "Policy loss: PPO's clipped surrogate, or CISPO (clipped, detached importance weight times the log-prob; "
        "every token keeps a gradient). Both clip at [1 - eps_clip, 1 + eps_clip_high].",
    )
    use_tis: bool = F(
        False,
        "Correct for the engine's log-probs differing from the trainer's: weight each token's policy loss by "
        "the trainer/engine probability ratio (tis_level, tis_mode).",
        "--use-tis",
    )
    tis_level: Literal["token", "sequence", "geometric"] = F(
        "token",
        "Ratio of the correction: per token, per sample (product of the token ratios), or per sample's geometric "
        "mean. Needs use_tis.",
    )
    tis_mode: Literal["truncate", "mask"] = F(
        "truncate",
        "truncate: clamp the ratio to [tis_clip_low, tis_clip] (TIS). mask: the ratio inside that range, 0 "
        "outside (IcePop at token level, MIS at sequence level). Needs use_tis.",
    )
    tis_clip: float = F(
        2.0, "Upper bound of the importance ratio (truncated to it, or masked above it).", "--tis-clip", gt=0.0
    )
    tis_clip_low: float = F(
        0.0, "Lower bound of the importance ratio (truncated to it, or masked below it).", "--tis-clip-low", ge=0.0
    )
    use_rollout_routing_replay: bool = F(
        False,
        "MoE rollout routing replay (R3): the engine returns the experts it routed every token to, and the "
        "trainer replays them instead of routing afresh, so both compute the same experts' mixture.",
        "--use-rollout-routing-replay",
    )
    gamma: float = F(1.0, "Discount factor (ppo, reinforce_plus_plus).", "--gamma", ge=0.0, le=1.0)
    lambd: float = F(1.0, "GAE lambda (ppo).", "--lambd", ge=0.0, le=1.0)
    value_clip: float = F(0.2, "Value-function clip range (ppo critic).", "--value-clip", gt=0.0)
    num_critic_only_steps: NonNegativeInt = F(
        0, "First rollouts that train only the critic, actor frozen (ppo).", "--num-critic-only-steps"
    )
    opd_teacher_load: str | None = F(
        None,
        "Teacher weights for on_policy_distillation: an HF folder, torch_dist or rlpipe checkpoint of a model with "
        "the policy's architecture and tokenizer.",
        "--opd-teacher-load",
    )


# ----------------------------------------------------------------------------------------- OPTIMIZER_ARGS
class OptimConfig(Group):
    """Optimizer and learning-rate schedule (OPTIMIZER_ARGS)."""

    optimizer: Literal["adam", "sgd"] = F("adam", "Optimizer (adam is AdamW-style decoupled decay).", "--optimizer")
    lr: PositiveFloat = F(1e-6, "Peak learning rate.", "--lr")
    critic_lr: PositiveFloat | None = F(
        None, "Peak learning rate of the PPO critic (None: lr), same schedule.", "--critic-lr"
    )
    lr_decay_style: Literal["constant", "linear", "cosine"] = F(
        "constant", "LR schedule after warmup.", "--lr-decay-style"
    )
    min_lr: float = F(0.0, "Floor of the decayed learning rate.", "--min-lr", ge=0.0)
    lr_warmup_iters: NonNegativeInt = F(0, "Linear warmup length (optimizer steps).", "--lr-warmup-iters")
    lr_decay_iters: PositiveInt | None = F(
        None, "Decay length (optimizer steps; None: the whole run).", "--lr-decay-iters"
    )
    weight_decay: float = F(0.0, "Decoupled weight decay.", "--weight-decay", ge=0.0)
    adam_beta1: float = F(0.9, "Adam first-moment decay.", "--adam-beta1", ge=0.0, lt=1.0)
    adam_beta2: float = F(0.999, "Adam second-moment decay.", "--adam-beta2", ge=0.0, lt=1.0)
    adam_eps: PositiveFloat = F(1e-8, "Adam epsilon.", "--adam-eps")
    clip_grad: float = F(1.0, "Global gradient-norm clip (0 = off).", "--clip-grad", ge=0.0)
    max_nonfinite_steps: NonNegativeInt = F(
        0,
        "Optimizer steps with a NaN/inf loss or gradient the run may skip (weights left untouched, counted as "
        "nonfinite_steps in the metrics) before it stops with an error; 0 = stop at the first.",
    )


# -------------------------------------------------------------------------------------------- SGLANG_ARGS
class SGLangConfig(Group):
    """Rollout-engine settings (SGLANG_ARGS); `extra` is passed to SGLang's ServerArgs verbatim."""

    rollout_num_gpus_per_engine: PositiveInt = F(
        1, "GPUs per SGLang engine (its tp_size).", "--rollout-num-gpus-per-engine"
    )
    mem_fraction_static: float | None = F(
        None,
        "Fraction of GPU memory SGLang reserves (None: derived; lowered under colocate).",
        "--sglang-mem-fraction-static",
        gt=0.0,
        lt=1.0,
    )
    context_length: PositiveInt | None = F(None, "Longest context SGLang accepts (tokens).", "--sglang-context-length")
    log_level: Literal["debug", "info", "warning", "error"] = F("warning", "SGLang log level.", "--sglang-log-level")
    version: str = F("0.5.23", "SGLang version the flags are named for (flag names changed at 0.5.14).")
    server_concurrency: PositiveInt = F(
        512,
        "Generate requests the rollout manager keeps open per engine, through the router (requests; each asks for "
        "a prompt's n samples). Raise it when engines decode many sequences at once and replies take long.",
        "--sglang-server-concurrency",
    )
    rollout_quantization: Literal["fp8", "mxfp8", "nvfp4"] | None = F(
        None,
        "Quantize the engine's weights online (SGLang --quantization; GPU only). FP8 and MXFP8 exclude each "
        "other (an FP8 checkpoint is FP8 rollout); set algo.use_tis to correct the mismatch it brings.",
    )
    extra: dict[str, Any] = F({}, "More SGLang ServerArgs, passed verbatim (the --sglang-* flags).", "--sglang-*")


# ------------------------------------------------------------------------------------------------ cluster
class ClusterConfig(Group):
    """Placement: how many GPUs each role gets, colocation, offload, and the execution backend."""

    backend: Literal["local", "ray"] = F("local", "local: one process; ray: actors placed by Ray.")
    address: str | None = F(None, "Ray cluster address (None: start a local Ray).")
    accelerator: Literal["auto", "cpu", "cuda"] = F("auto", "Device type (auto: cuda when an NVIDIA GPU is visible).")
    actor_num_nodes: PositiveInt = F(1, "Nodes for the trainer (nodes).", "--actor-num-nodes")
    actor_num_gpus_per_node: PositiveInt = F(
        1, "Trainer GPUs per node (GPUs; on CPU: trainer processes).", "--actor-num-gpus-per-node"
    )
    rollout_num_gpus: PositiveInt | None = F(
        None, "GPUs for rollout engines (ignored under colocate).", "--rollout-num-gpus"
    )
    colocate: bool = F(False, "Trainer and rollout share the same GPUs, time-sliced.", "--colocate")
    offload_train: bool | None = F(
        None, "Move train state to CPU between phases (None: = colocate).", "--offload-train"
    )
    offload_rollout: bool | None = F(
        None, "Release rollout weights/KV cache between phases (None: = colocate).", "--offload-rollout"
    )
    gpu: Literal["a100-40g", "a100-80g", "l40s", "h100", "h200", "b200"] | None = F(
        None, "GPU model the plan sizes memory and time for (None: read from nvidia-smi when the run is on CUDA)."
    )
    launch_over_plan: bool = F(
        False, "Launch even when the plan (--plan) says a phase overflows a GPU's memory (it is an estimate)."
    )
    weight_sync: Literal["auto", "tensor", "broadcast"] = F(
        "auto",
        "How new weights reach the engines once per rollout: tensor (handed over in-process / through Ray's "
        "object store), broadcast (a gloo/NCCL group from trainer rank 0); auto picks by layout.",
    )
    weight_sync_bucket_mb: PositiveInt = F(
        512, "Weights sent per bucket during a sync (MiB).", "--update-weight-buffer-size"
    )


class LoraConfig(Group):
    """LoRA adapters on the trainer's linear layers (Miles' --lora-* flags); rank 0 trains every weight."""

    rank: NonNegativeInt = F(0, "Adapter rank r (0: no LoRA, full fine-tuning).", "--lora-rank")
    alpha: PositiveFloat = F(16.0, "Adapter scale numerator: the update is alpha / rank x B A.", "--lora-alpha")
    dropout: float = F(0.0, "Dropout on the adapters' input.", "--lora-dropout", ge=0.0, lt=1.0)
    target_modules: str = F(
        "all-linear",
        "Comma list of the HF projections that get adapters (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj) "
        "or all-linear (every one).",
        "--target-modules",
    )
    exclude_modules: str | None = F(
        None, "Comma list of projections to leave out of target_modules.", "--exclude-modules"
    )
    adapter_path: str | None = F(
        None, "A peft adapter folder to start from (its rank and alpha must match).", "--lora-adapter-path"
    )
    sync: Literal["merged", "adapter"] = F(
        "merged",
        "What the engine gets after each step: the merged weights (W + alpha/r B A, any engine) or the adapters only "
        "(the HF engine applies them with peft, SGLang through its LoRA adapter endpoints).",
    )


# ---------------------------------------------------------------------------------------------- top level
class WarmupConfig(Group):
    """A supervised phase (sft_loss on the prompt data's labels) run by the same trainer before RL."""

    steps: PositiveInt = F(..., "Supervised optimizer steps before RL (steps).")
    batch_size: PositiveInt = F(64, "Prompt/answer pairs per step (samples).")
    lr: PositiveFloat = F(1e-3, "Learning rate of the supervised phase (constant).")


class DemoConfig(Group):
    """The embedded offline default: build a tiny model (architecture from `model`) and a synthetic task."""

    task: Literal["reverse", "copy", "add"] = F("reverse", "Synthetic task with a verifiable answer.")
    digits: PositiveInt = F(3, "Digits per operand (digits).", le=8)
    n_train: PositiveInt = F(800, "Training prompts to write (prompts).")
    n_eval: PositiveInt = F(100, "Held-out eval prompts to write (prompts).")
    seed: int = F(0, "Seed for the random weights and the dataset.")
    tools: bool = F(
        False,
        "The tool demo (task add): the model calls a calculator (rollout.env) and answers with its result; the "
        "tokenizer gains the tool tokens and the warm-up trains on solved calculator episodes.",
    )
    cache_dir: str = F(".cache/rlpipe", "Where the built model and data are cached (relative to the launch folder).")


class LogConfig(Group):
    """Where metrics go. Secrets (wandb keys) come from the environment only and are never saved."""

    tensorboard: bool = F(False, "Write TensorBoard event files under the run folder.", "--use-tensorboard")
    wandb: bool = F(False, "Log to Weights & Biases (WANDB_API_KEY from the environment).", "--use-wandb")
    wandb_project: str | None = F(None, "wandb project.", "--wandb-project")
    wandb_group: str | None = F(None, "wandb group.", "--wandb-group")
    wandb_mode: Literal["online", "offline", "disabled"] = F("offline", "wandb mode.", "--wandb-mode")
    progress: bool = F(True, "Show a progress bar over rollouts.")


class MilesConfig(Group):
    """What an imported Miles/slime script says that rlpipe does not model, kept so `--miles` says it again."""

    extra_args: list[str] = F(
        [],
        "Flags (each followed by its values) of an imported Miles/slime script with no rlpipe field: rlpipe runs "
        "without them, the --miles export writes them back verbatim.",
    )


class DebugConfig(Group):
    """Debug modes (Miles' --debug-* flags): run one side of the loop alone, dump or replay rollouts."""

    rollout_only: bool = F(
        False,
        "Generate, score and log rollouts with the ckpt.hf_checkpoint weights; never train.",
        "--debug-rollout-only",
    )
    train_only: bool = F(
        False, "Train on rollouts saved earlier (load_rollout_data) with no rollout engine.", "--debug-train-only"
    )
    save_rollout_data: str | None = F(
        None, "Pickle each rollout's samples to this path with {rollout_id} filled in.", "--save-debug-rollout-data"
    )
    load_rollout_data: str | None = F(
        None,
        "Train on the rollouts save_rollout_data wrote (same {rollout_id} path); implies train_only.",
        "--load-debug-rollout-data",
    )


class RunConfig(Group):
    """The whole run: the eight argument groups plus placement, logging and the optional demo/warmup."""

    run_name: str = F("run", "Name of the run; the run folder is output_dir/run_name.")
    resume: bool | Literal["force"] = F(
        True,
        "Rerunning into a run folder: true resumes from its last checkpoint when the config is the same run, and "
        "refuses (showing the differences) when it is not; force resumes despite differences; false starts fresh, "
        "moving the earlier run's folder aside.",
    )
    output_dir: str = F("outputs", "Parent folder of run folders (metrics, plots, resolved config).")
    seed: int = F(1234, "Global seed (model init, dropout, trainer RNG).", "--seed")
    model: ModelConfig = ModelConfig()
    ckpt: CkptConfig = CkptConfig()
    rollout: RolloutConfig = RolloutConfig()
    eval: EvalConfig = EvalConfig()
    perf: PerfConfig = PerfConfig()
    algo: AlgoConfig = AlgoConfig()
    optim: OptimConfig = OptimConfig()
    sglang: SGLangConfig = SGLangConfig()
    cluster: ClusterConfig = ClusterConfig()
    log: LogConfig = LogConfig()
    lora: LoraConfig = LoraConfig()
    warmup: WarmupConfig | None = F(None, "Optional supervised warm-up phase before RL.")
    demo: DemoConfig | None = F(None, "Build the tiny offline model and task instead of reading checkpoints.")
    debug: DebugConfig = DebugConfig()
    miles: MilesConfig = MilesConfig()

    @property
    def sft_job(self) -> bool:
        """The SFT job (algo.loss_type=sft_loss): conversations trained on, the engine for evaluation only."""
        return self.algo.loss_type == "sft_loss"

    @property
    def lora_adapter_sync(self) -> bool:
        """LoRA with lora.sync=adapter: the engine gets the adapters alone, served under one name."""
        return self.lora.rank > 0 and self.lora.sync == "adapter"


GROUPS: tuple[str, ...] = ("model", "ckpt", "rollout", "eval", "perf", "algo", "optim", "sglang", "cluster")
