"""Helpers for the trainer tests: a tiny random Qwen2 checkpoint, a TrainerSpec, HF reference log-probs."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    Glm4Config,
    LlamaConfig,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)

from rlpipe.train.spec import TrainerSpec, single_process_spec
from rlpipe.train.weights import hf_to_megatron, shards_to_hf

VOCAB = 32


def make_tiny_qwen2(folder: Path, tied: bool = False, seed: int = 0) -> Path:
    """Save a random 2-layer, hidden-64, 4-head / 2-kv-head Qwen2 (fp32) to `folder`; returns it."""
    return make_tiny(folder, "qwen2", seed, tie_word_embeddings=tied)


def make_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """Save a random 2-layer Llama (no biases, rope theta 5e5, untied) to `folder`; returns it."""
    return make_tiny(folder, "llama", seed)


TINY_SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def make_tiny(folder: Path, model_type: str, seed: int = 0, **overrides: object) -> Path:
    """Save a random tiny model of any supported family (the shape of `make_tiny_qwen2`) to `folder`.

    Norm weights and biases get random offsets (HF initialises them to ones / zeros), so a mix-up between
    two norms or a missing bias changes the logits. GLM4 keeps its partial (0.5) interleaved RoPE; the MoE
    has 4 experts, top-2, normalised top-k probabilities unless overridden.
    """
    torch.manual_seed(seed)
    shape = {**TINY_SHAPE, **overrides}
    if model_type == "qwen2":
        config = Qwen2Config(**shape)
    elif model_type == "llama":
        config = LlamaConfig(**shape, rope_theta=500000.0)
    elif model_type == "qwen3":
        config = Qwen3Config(**shape)
    elif model_type == "glm4":
        config = Glm4Config(**{"pad_token_id": 0} | shape)  # its default pad id lies past the tiny vocab
    elif model_type == "qwen3_moe":
        config = Qwen3MoeConfig(
            **{"moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True} | shape
        )
    else:
        raise ValueError(model_type)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif name.endswith("gate.weight"):  # HF zero-inits the router: give experts distinct scores
                param.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return folder


def make_spec(checkpoint: Path, **overrides: object) -> TrainerSpec:
    """A TrainerSpec for tests: fp32, TP 1, Adam at a constant lr, no clipping unless overridden."""
    base = {"micro_batch_size": 2, "optimizer": "adam", "lr": 1e-3, "seed": 1234}
    return single_process_spec(checkpoint, **{**base, **overrides})


def hf_response_stats(
    checkpoint: Path, seqs: list[list[int]], starts: list[int], temperature: float = 1.0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Reference (log-probs, entropies) of the response tokens: log_softmax(HF logits / temperature), one
    sequence at a time, at the next tokens."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    log_probs, entropies = [], []
    with torch.no_grad():
        for seq, start in zip(seqs, starts, strict=True):
            ids = torch.tensor([seq])
            logp = torch.log_softmax(model(ids).logits[0].float() / temperature, dim=-1)[start - 1 : len(seq) - 1]
            log_probs.append(logp.gather(-1, ids[0, start:, None]).squeeze(-1))  # [R]
            entropies.append(-(logp.exp() * logp).sum(-1))  # [R]
    return log_probs, entropies


def sum_log_prob_loss(denominator: float):
    """A loss_fn for MegatronTrainer.train_step: -(sum of response log-probs) / a global denominator."""

    def loss_fn(indices: list[int], log_probs: list[torch.Tensor], entropies: list[torch.Tensor]):
        loss = -torch.stack([lp.sum() for lp in log_probs]).sum() / denominator
        return loss, {"loss": loss.detach(), "samples": torch.tensor(float(len(indices)))}

    return loss_fn


SEQS = [[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11], [5, 5, 5], [30, 31, 2, 9, 4]]
STARTS = [3, 1, 5, 2, 2]


def assert_round_trip_exact(folder: Path, tp: int) -> None:
    """HF checkpoint -> every TP rank's Megatron shards -> HF names gives back each tensor bit for bit."""
    config = AutoConfig.from_pretrained(folder)
    hf = load_file(folder / "model.safetensors")
    per_rank = [dict(hf_to_megatron(hf, config, rank, tp)) for rank in range(tp)]
    back = dict(pair for name in per_rank[0] for pair in shards_to_hf(name, [r[name] for r in per_rank], config))
    assert back.keys() == hf.keys()
    for name, tensor in hf.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def spawn_world(worker: Callable[..., None], nprocs: int, folder: Path, *args: object) -> None:
    """Run `worker(rank, init_file, *args)` in `nprocs` processes that meet through a file:// rendezvous in `folder`."""
    with tempfile.NamedTemporaryFile(dir=folder, delete=True) as f:
        init_file = f.name  # file:// rendezvous needs a path that does not exist yet
    mp.spawn(worker, args=(init_file, *args), nprocs=nprocs, join=True)


def init_layout(rank: int, init_file: str, world: int, sizes: dict[str, Any]) -> None:
    """Join a `world`-process group with the parallel sizes a test's spec uses (absent: 1)."""
    from rlpipe.train.distributed import init_distributed

    init_distributed(
        rank,
        world,
        f"file://{init_file}",
        sizes.get("tensor_parallel", 1),
        pipeline_parallel=sizes.get("pipeline_parallel", 1),
        context_parallel=sizes.get("context_parallel", 1),
        expert_parallel=sizes.get("expert_parallel", 1),
        expert_tensor_parallel=sizes.get("expert_tensor_parallel", 1),
    )
