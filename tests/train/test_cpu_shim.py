"""Each CPU patch does what it says; the patched model trains on CPU; applying twice changes nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlpipe.train.cpu_shim import apply_cpu_patches

apply_cpu_patches()

from megatron.core import tensor_parallel  # noqa: E402  (after the patches, as the trainer does)
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding  # noqa: E402
from megatron.core.models.gpt import GPTModel  # noqa: E402
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec  # noqa: E402
from megatron.core.optimizer import clip_grads  # noqa: E402
from megatron.core.transformer import utils as transformer_utils  # noqa: E402
from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: E402


def test_idempotent_and_noop_on_cuda(monkeypatch) -> None:
    stand_in = transformer_utils.torch
    assert apply_cpu_patches() is True
    assert transformer_utils.torch is stand_in  # not wrapped a second time
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert apply_cpu_patches() is False


def test_default_causal_mask_on_cpu() -> None:
    mask = transformer_utils.get_default_causal_mask(4)
    assert mask.device.type == "cpu"
    assert torch.equal(mask, torch.ones(4, 4).triu(1).bool())


def test_rotary_embedding_stays_on_cpu() -> None:
    rope = RotaryEmbedding(kv_channels=8, rotary_percent=1.0, rotary_base=100, use_cpu_initialization=True)
    emb = rope.get_emb(5)  # [5, 1, 1, 8]
    inv_freq = 1.0 / 100 ** (torch.arange(0, 8, 2).float() / 8)
    freqs = torch.arange(5).float()[:, None] * inv_freq[None]
    assert emb.device.type == "cpu"
    assert torch.allclose(emb[:, 0, 0], torch.cat([freqs, freqs], dim=-1))


def test_rng_tracker_uses_cpu_generator(world_of_one) -> None:
    tensor_parallel.model_parallel_cuda_manual_seed(5)
    default = torch.rand(3)
    with tensor_parallel.get_cuda_rng_tracker().fork():  # the tensor-model-parallel stream: seed 5 + 2718 + tp rank
        forked = torch.rand(3)
    after = torch.rand(3)
    expected_default = torch.rand(6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([default, after]), expected_default)  # fork left the default stream alone
    assert torch.equal(forked, torch.rand(3, generator=torch.Generator().manual_seed(5 + 2718)))


def test_grad_norm_and_clip_on_cpu(world_of_one) -> None:
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]
    assert abs(clip_grads.get_grad_norm_fp32(grads) - 5.0) < 1e-6
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    clip_grads.clip_grad_by_total_norm_fp32(params, max_norm=1.0, total_norm=5.0)
    assert torch.allclose(params[0].grad, torch.tensor([0.6, 0.0]), atol=1e-6)
    assert torch.allclose(params[1].grad, torch.tensor([0.8]), atol=1e-6)


def test_model_runs_forward_and_backward_on_cpu(world_of_one) -> None:
    tensor_parallel.model_parallel_cuda_manual_seed(1)
    config = TransformerConfig(
        num_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        ffn_hidden_size=64,
        use_cpu_initialization=True,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    model = GPTModel(
        config,
        get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=16,
        max_sequence_length=16,
        position_embedding_type="rope",
    )
    tokens = torch.randint(0, 16, (2, 6))
    logits = model(tokens, torch.arange(6).expand(2, -1), None)  # [2, 6, 16]
    assert logits.shape == (2, 6, 16)
    logits.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)
