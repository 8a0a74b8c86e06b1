"""Per-token log-probs and entropies from vocab-parallel logits (each TP rank holds V_pad / T columns).

    z = logits / tau                                  tau: the sampling temperature (`TrainerSpec.temperature`)
    log p(y) = z_y - m - log S,   S = sum_v e^{z_v - m},   m = max_v z_v
    H        = log S + m - sum_v p_v z_v

Miles scores tokens at the rollout's temperature, so the trainer sees the distribution the samples came from.
Columns past the true vocab (TP padding) carry no probability. The maxima and sums run over the whole vocab by
all-reducing each rank's partial values over the TP group.

One autograd function computes both, a chunk of tokens at a time: it never materialises fp32 copies of the
[tokens, V] logits beyond one chunk, and saves only the logits it was given (bf16 on GPU) plus three numbers per
token for the backward, which recomputes p chunk by chunk:

    d log p(y) / dz_v = [v = y] - p_v          d H / dz_v = -p_v (log p_v + H)

The straightforward version (fp32 cast, temperature, padding mask, a copy for megatron's in-place cross entropy,
then exp / products for the entropy) holds about seven fp32 [tokens, V] tensors at once: 35 GB for 8k tokens of
a 152k vocab. Every TP rank computes the same outputs, so each back-propagates into its own columns only (as
megatron's vocab-parallel cross entropy does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state

CHUNK_ELEMENTS = 1 << 26  # fp32 elements of one chunk's [tokens, V/T] temporaries: 256 MB


def token_stats(
    logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log p(labels), entropy or None) from this TP rank's logits [b, s, V/T] and labels [b, s]: [b, s] each."""
    shape = labels.shape
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [n, V/T]
    log_probs, entropy = _TokenStats.apply(
        flat_logits, labels.reshape(-1), vocab_size, temperature, with_entropy, CHUNK_ELEMENTS
    )
    return log_probs.view(shape), entropy.view(shape) if with_entropy else None


def _tp_group() -> dist.ProcessGroup | None:
    group = parallel_state.get_tensor_model_parallel_group()
    return group if dist.get_world_size(group) > 1 else None


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> torch.Tensor:
    if group is not None:
        dist.all_reduce(t, op=op, group=group)
    return t


# Padded vocab columns get this z instead of -inf: exp() is still exactly 0, and 0 * z stays 0 (not NaN).
_PADDING_Z = -1e30


class _Chunks:
    """The token chunks of one call, and what each needs: its z (fp32, tempered, padding very negative), labels."""

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float, elements: int):
        self.logits, self.labels, self.inverse_temperature = logits, labels, 1.0 / temperature
        local = logits.shape[-1]
        self.start = parallel_state.get_tensor_model_parallel_rank() * local  # first vocab column held here
        self.padded = torch.arange(self.start, self.start + local, device=logits.device) >= vocab_size  # [V/T]
        self.any_padded = bool(self.padded.any())
        size = max(1, elements // local)
        self.slices = [slice(i, min(i + size, logits.shape[0])) for i in range(0, logits.shape[0], size)]

    def z(self, rows: slice) -> torch.Tensor:
        z = self.logits[rows].to(torch.float32, copy=True)  # a fresh tensor, edited in place from here on
        z.mul_(self.inverse_temperature)  # [c, V/T]
        return z.masked_fill_(self.padded, _PADDING_Z) if self.any_padded else z

    def local_labels(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(whether this rank holds each label's column, its local column or 0): [c] each."""
        local = self.labels[rows] - self.start
        here = (local >= 0) & (local < self.logits.shape[-1])
        return here, torch.where(here, local, torch.zeros_like(local))


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[i, v] b[i, v] for every row, without an [c, V] temporary: [c]."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _TokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, vocab_size, temperature, with_entropy, elements):  # type: ignore[override]
        chunks = _Chunks(logits, labels, vocab_size, temperature, elements)
        group = _tp_group()
        n = logits.shape[0]
        m = torch.empty(n, device=logits.device)  # max z
        log_s = torch.empty(n, device=logits.device)  # log sum e^{z - m}
        log_probs = torch.empty(n, device=logits.device)
        entropy = torch.empty(n if with_entropy else 0, device=logits.device)
        for rows in chunks.slices:
            z = chunks.z(rows)
            m[rows] = _all_reduce(z.amax(dim=-1), dist.ReduceOp.MAX, group)
            z.sub_(m[rows, None])  # z - m from here on
            here, col = chunks.local_labels(rows)
            label_z = torch.where(here, z.gather(-1, col[:, None]).squeeze(-1), 0.0)
            e = z.exp()
            s = _all_reduce(e.sum(dim=-1), dist.ReduceOp.SUM, group)
            log_s[rows] = s.log()
            log_probs[rows] = _all_reduce(label_z, dist.ReduceOp.SUM, group) - log_s[rows]
            if with_entropy:  # H = log S - sum_v p_v (z_v - m)
                entropy[rows] = log_s[rows] - _all_reduce(_row_dot(e, z), dist.ReduceOp.SUM, group) / s
        ctx.save_for_backward(logits, labels, m, log_s, entropy)
        ctx.setup = (vocab_size, temperature, with_entropy, elements)
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):  # type: ignore[override]
        logits, labels, m, log_s, entropy = ctx.saved_tensors
        vocab_size, temperature, with_entropy, elements = ctx.setup
        chunks = _Chunks(logits, labels, vocab_size, temperature, elements)
        grad = torch.empty_like(logits)
        for rows in chunks.slices:
            g = grad_log_probs[rows, None]  # [c, 1]
            log_p = chunks.z(rows).sub_((m[rows] + log_s[rows])[:, None])  # [c, V/T]
            p = log_p.exp()
            # dz_v = g ([v = y] - p_v) - g_H p_v (log p_v + H) = [v = y] g - p_v (g + g_H (log p_v + H))
            weight = log_p.add_(entropy[rows, None]).mul_(grad_entropy[rows, None]).add_(g) if with_entropy else g
            dz = p.mul_(weight).neg_()
            here, col = chunks.local_labels(rows)
            dz.scatter_add_(-1, col[:, None], torch.where(here, grad_log_probs[rows], 0.0)[:, None])
            grad[rows] = dz.mul_(chunks.inverse_temperature)
        return grad, None, None, None, None, None
