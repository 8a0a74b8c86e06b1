"""`TrainerSpec`: the plain values the Megatron trainer needs, filled by the lead from the resolved RunConfig.

Kept free of pydantic and torch so it pickles into Ray actors and can be built in tests by hand. The config
layer owns defaults, documentation of user-facing keys and cross-field validation; this record only checks
that each enumeration holds a value the trainer implements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ParamsDtype = Literal["fp32", "bf16"]
Recompute = Literal["full", "selective"]
OptimizerName = Literal["adam", "sgd"]
LrDecayStyle = Literal["constant", "linear", "cosine"]


@dataclass(frozen=True)
class LoraSpec:
    """LoRA's settings for the trainer (rlpipe.train.lora; the config group is `lora`)."""

    rank: int
    alpha: float
    dropout: float
    projections: tuple[str, ...]  # the HF projections that get adapters (rlpipe.config.lora.projections)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class TrainerSpec:
    """Everything `MegatronTrainer` reads. Field meanings follow Megatron's flags of the same name.

    No defaults on purpose: the config layer owns them (one place, documented); this record only carries them.
    """

    hf_checkpoint: Path  # HF folder: config.json (architecture) and *.safetensors (weights for load_hf)
    tensor_parallel: int
    pipeline_parallel: int
    decoder_first_pipeline_num_layers: int | None  # uneven stages: the first stage's layers (None: even share)
    decoder_last_pipeline_num_layers: int | None  # ... the last stage's
    context_parallel: int
    sequence_parallel: bool  # shard activations outside attention/MLP over the TP group (needs TP > 1)
    expert_parallel: int  # MoE: experts split over this many ranks
    expert_tensor_parallel: int  # MoE: each expert's linear layers split over this many ranks
    params_dtype: ParamsDtype
    micro_batch_size: int  # samples per micro-batch when use_dynamic_batch_size is False
    use_dynamic_batch_size: bool  # pack samples into micro-batches of <= max_tokens_per_gpu tokens
    max_tokens_per_gpu: int | None  # token cap of one packed micro-batch (dynamic batch size only)
    recompute_granularity: Recompute | None
    recompute_method: Literal["uniform", "block"] | None
    recompute_num_layers: int | None
    bias_swiglu_fusion: bool  # megatron's torch.compile'd SwiGLU (forward and a memory-saving backward)
    optimizer: OptimizerName
    lr: float
    min_lr: float
    lr_decay_style: LrDecayStyle
    lr_warmup_iters: int
    lr_decay_iters: int | None  # required for linear / cosine decay
    weight_decay: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    sgd_momentum: float  # only read when optimizer == "sgd"
    clip_grad: float
    use_distributed_optimizer: bool
    seed: int
    temperature: float  # logits / temperature before log-softmax, matching the rollout sampler
    routing_replay: bool  # MoE: routers can replay the engine's experts (moe_enable_routing_replay)
    lora: LoraSpec | None  # adapters on the linear layers, the base frozen (rlpipe.train.lora); None: full training

    def __post_init__(self) -> None:
        if self.params_dtype not in ("fp32", "bf16"):
            raise ValueError(f"params_dtype={self.params_dtype!r}: expected 'fp32' or 'bf16'")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}: expected 'adam' or 'sgd'")
        if self.lr_decay_style not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_decay_style={self.lr_decay_style!r}: expected constant, linear or cosine")
        if self.lr_decay_style != "constant" and not self.lr_decay_iters:
            raise ValueError(f"lr_decay_style={self.lr_decay_style!r} needs lr_decay_iters > 0")
        if self.use_dynamic_batch_size and not self.max_tokens_per_gpu:
            raise ValueError("use_dynamic_batch_size needs max_tokens_per_gpu > 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0")


def single_process_spec(hf_checkpoint: Path, **overrides: object) -> TrainerSpec:
    """A one-process fp32 spec with no parallelism and a constant-lr, unclipped SGD step: what the converters
    need (nothing is trained there), and a base the tests vary with `overrides`."""
    spec = TrainerSpec(
        hf_checkpoint=hf_checkpoint,
        tensor_parallel=1,
        pipeline_parallel=1,
        decoder_first_pipeline_num_layers=None,
        decoder_last_pipeline_num_layers=None,
        context_parallel=1,
        sequence_parallel=False,
        expert_parallel=1,
        expert_tensor_parallel=1,
        params_dtype="fp32",
        micro_batch_size=1,
        use_dynamic_batch_size=False,
        max_tokens_per_gpu=None,
        recompute_granularity=None,
        recompute_method=None,
        recompute_num_layers=None,
        bias_swiglu_fusion=False,
        optimizer="sgd",
        lr=0.0,
        min_lr=0.0,
        lr_decay_style="constant",
        lr_warmup_iters=0,
        lr_decay_iters=None,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_eps=1e-8,
        sgd_momentum=0.0,
        clip_grad=0.0,
        use_distributed_optimizer=False,
        seed=0,
        temperature=1.0,
        routing_replay=False,
        lora=None,
    )
    return dataclasses.replace(spec, **overrides)
