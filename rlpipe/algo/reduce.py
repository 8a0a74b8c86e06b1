"""Loss reductions that give the same value however a global batch is split or packed.

Miles/slime reduce a per-token quantity `x` over a global batch of N samples in one of two ways
(`algo.calculate_per_token_loss` picks which):

    per-sample (default):  mean_i( sum_t(x_i,t * m_i,t) / len_i )        len_i = sum_t m_i,t (at least 1)
    per-token:             sum_i sum_t(x_i,t * m_i,t) / sum_i len_i

Both are sums over samples divided by a number that belongs to the *global* batch (N, or the global count
of loss tokens). A micro-batch therefore contributes `sum over its own samples / global denominator`, and
the contributions of all micro-batches (on all data-parallel ranks) add up to the global value exactly:
splitting, reordering or packing samples never changes the loss or its gradient, only the throughput.
A per-micro-batch mean would not have this property: it over-weights samples in small micro-batches.

Shapes: a micro-batch of n samples is carried as one flat tensor `x` [T] (the samples' response tokens
concatenated, T = sum_i R_i) plus `loss_masks`, a list of n 1-D tensors [R_i] whose lengths mark the sample
boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x * mask where mask != 0, exactly 0 elsewhere: [T]. `x * mask` would let a NaN or inf on an untrained
    token (a padded position, a tool's output) poison the sum; `where` drops it."""
    return torch.where(mask != 0, x * mask.to(x.dtype), torch.zeros((), dtype=x.dtype, device=x.device))


def per_sample_sums(x: torch.Tensor, loss_masks: list[torch.Tensor]) -> torch.Tensor:
    """Masked sum of `x` within each sample: [T] -> [n]."""
    lengths = [int(m.numel()) for m in loss_masks]
    if x.numel() != sum(lengths):
        raise ValueError(f"x has {x.numel()} tokens but the loss masks cover {sum(lengths)}")
    mask = torch.cat(loss_masks).to(x.device)  # [T]
    # segment ids map each token to its sample, so one scatter-add sums every sample at once
    segment = torch.repeat_interleave(
        torch.arange(len(lengths), device=x.device), torch.tensor(lengths, device=x.device)
    )  # [T]
    return torch.zeros(len(lengths), dtype=x.dtype, device=x.device).index_add(0, segment, masked(x, mask))  # [n]


def sample_lengths(loss_masks: list[torch.Tensor]) -> torch.Tensor:
    """Number of loss tokens per sample, clamped to at least 1 so empty samples divide safely: [n]."""
    return torch.stack([m.sum() for m in loss_masks]).float().clamp_min(1.0)


def per_sample_mean(x: torch.Tensor, loss_masks: list[torch.Tensor], num_samples: float) -> torch.Tensor:
    """This micro-batch's share of mean_i(sum(x_i) / len_i) over a global batch of `num_samples` samples."""
    sums = per_sample_sums(x, loss_masks)  # [n]
    return (sums / sample_lengths(loss_masks).to(sums)).sum() / num_samples


def per_token_mean(x: torch.Tensor, loss_masks: list[torch.Tensor], num_tokens: float) -> torch.Tensor:
    """This micro-batch's share of sum_i sum(x_i) / sum_i len_i, with `num_tokens` = global sum_i len_i."""
    mask = torch.cat(loss_masks).to(x.device)  # [T]
    if x.numel() != mask.numel():
        raise ValueError(f"x has {x.numel()} tokens but the loss masks cover {mask.numel()}")
    return masked(x, mask).sum() / num_tokens


def global_denominator(loss_masks: list[torch.Tensor], per_token: bool) -> float:
    """The global batch's sample count (per-sample) or loss-token count (per-token), from all its masks.

    The token count is at least 1 so a batch whose every token is masked reduces to 0 rather than NaN.
    """
    if per_token:
        return max(float(sum(m.sum().item() for m in loss_masks)), 1.0)
    return float(len(loss_masks))


@dataclass(frozen=True)
class LossReduction:
    """A per-sample or per-token reduction with its global denominator fixed.

    Build it once per optimizer step from the whole global batch (`for_global_batch`), then call it on every
    micro-batch; the results add up to the global mean.
    """

    per_token: bool  # algo.calculate_per_token_loss
    denominator: float  # global sample count (per-sample) or global loss-token count (per-token)

    @classmethod
    def for_global_batch(cls, loss_masks: list[torch.Tensor], per_token: bool) -> LossReduction:
        """The reduction for a global batch given all its samples' loss masks."""
        return cls(per_token=per_token, denominator=global_denominator(loss_masks, per_token))

    def __call__(self, x: torch.Tensor, loss_masks: list[torch.Tensor]) -> torch.Tensor:
        """Reduce a micro-batch's flat per-token `x` [T] to its 0-d contribution."""
        if self.per_token:
            return per_token_mean(x, loss_masks, self.denominator)
        return per_sample_mean(x, loss_masks, self.denominator)
