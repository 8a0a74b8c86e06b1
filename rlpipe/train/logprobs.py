"""Per-token log-probs and entropies from vocab-parallel logits (each TP rank holds V_pad / T columns).

    log p(y) = -CE(z / tau, y)                        Megatron's vocab-parallel cross entropy
    H        = log sum_v e^{z_v} - sum_v p_v z_v       softmax pieces all-reduced over the TP group

z are the logits divided by the sampling temperature tau (`TrainerSpec.temperature`), as Miles does so the
trainer scores tokens under the distribution the rollout sampled from. Columns past the true vocab (TP padding)
are set to the dtype's minimum so they carry no probability.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region


def prepare_logits(logits: torch.Tensor, vocab_size: int, temperature: float) -> torch.Tensor:
    """fp32 logits / temperature with this rank's padded vocab columns masked out. [b, s, V/T] -> same."""
    logits = logits.float() / temperature
    local = logits.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * local
    if start + local <= vocab_size:
        return logits
    padded = torch.arange(start, start + local, device=logits.device) >= vocab_size  # [V/T]
    return logits.masked_fill(padded, torch.finfo(logits.dtype).min)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) from prepared vocab-parallel logits [b, s, V/T] and labels [b, s] -> [b, s]."""
    # Megatron's kernel works in place on its input: hand it a copy so `logits` stays usable for the entropy.
    return -tensor_parallel.vocab_parallel_cross_entropy(logits.clone(), labels)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the full (TP-split) vocab, differentiable. [b, s, V/T] -> [b, s]."""
    logits_max = logits.detach().amax(dim=-1, keepdim=True)  # [b, s, 1]; a constant shift, H is invariant
    dist.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=parallel_state.get_tensor_model_parallel_group())
    shifted = logits - logits_max
    exp = shifted.exp()
    # reduce_from_...: all-reduce forward, identity backward: each rank back-propagates into its own columns.
    sum_exp = reduce_from_tensor_model_parallel_region(exp.sum(dim=-1))  # [b, s]
    weighted = reduce_from_tensor_model_parallel_region((exp * shifted).sum(dim=-1))  # [b, s]
    return sum_exp.log() - weighted / sum_exp
