"""token_stats (chunked log-prob + entropy with its own backward) against autograd through the plain formulas."""

from __future__ import annotations

import pytest
import torch

from rlpipe.train import logprobs
from rlpipe.train.logprobs import token_stats

VOCAB, PADDED = 11, 16  # the last 5 columns are TP padding: no probability


def _reference(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_p = torch.log_softmax(logits[..., :VOCAB].float() / temperature, dim=-1)  # [b, s, V]
    return log_p.gather(-1, labels[..., None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


@pytest.mark.parametrize("chunk_tokens", [1, 3, 1000])  # several chunks (one ragged) and a single one
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_equal_the_plain_formulas(
    world_of_one, monkeypatch: pytest.MonkeyPatch, chunk_tokens: int, temperature: float
) -> None:
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", chunk_tokens * PADDED)
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 5, PADDED, dtype=torch.float64)).float().requires_grad_()
    labels = torch.randint(0, VOCAB, (2, 5))
    up_lp, up_ent = torch.randn(2, 5), torch.randn(2, 5)  # arbitrary upstream gradients
    given = logits.detach().clone()

    log_probs, entropy = token_stats(logits, labels, VOCAB, temperature, with_entropy=True)
    ((log_probs * up_lp).sum() + (entropy * up_ent).sum()).backward()
    got_grad, logits.grad = logits.grad, None
    assert torch.equal(logits.detach(), given)  # the chunks work on copies, never on the model's logits

    ref_lp, ref_ent = _reference(logits, labels, temperature)
    ((ref_lp * up_lp).sum() + (ref_ent * up_ent).sum()).backward()
    torch.testing.assert_close(log_probs, ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, ref_ent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad, logits.grad, atol=1e-5, rtol=1e-5)
    assert torch.all(got_grad[..., VOCAB:] == 0)  # padding columns get nothing


def test_log_probs_alone_and_bf16_input(world_of_one) -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 4, PADDED).bfloat16().requires_grad_()
    labels = torch.randint(0, VOCAB, (3, 4))
    log_probs, entropy = token_stats(logits, labels, VOCAB, 1.0, with_entropy=False)
    assert entropy is None
    log_probs.sum().backward()
    assert logits.grad.dtype == torch.bfloat16  # the gradient comes back in the logits' dtype
    ref_lp, _ = _reference(logits.detach(), labels, 1.0)
    torch.testing.assert_close(log_probs, ref_lp, atol=1e-5, rtol=1e-5)  # fp32 math on the bf16 values
    # d sum(log p(y)) / dz = onehot(y) - p, summed over tokens: each token's row sums to zero.
    torch.testing.assert_close(logits.grad.float().sum(-1), torch.zeros(3, 4), atol=2e-2, rtol=0)
