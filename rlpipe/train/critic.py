"""The PPO critic: a value model trained by the same Megatron backend as the policy (`algo.advantage_estimator=ppo`).

Architecture: the policy's GPT (same HF config, same layout) with the vocabulary projection replaced by a scalar
head, `V = h_final @ w` with w [1, h] and no bias: Miles' / slime's critic (`LinearForLastLayer(hidden, 1)` as
`output_layer`). The value of response token t is read off the hidden state of the token before it, the
position whose logits score token t, so V_t estimates the return from token t on (as Miles' `get_values`).

Initialisation (`ckpt.critic_load`, an HF folder): the backbone from its `model.*` tensors and the head from
`score.weight` when it has one (a `*ForSequenceClassification` checkpoint with num_labels=1, the usual HF form
of a value / reward model); otherwise the head starts at zero, so V = 0 everywhere and the first GAE
advantages are the plain discounted rewards. Without critic_load the backbone comes from the policy's initial
weights, as Miles initialises its critic from the actor's checkpoint.

Tensor parallelism: the head is a replicated torch Linear on the final hidden state. Every TP rank computes the
same values from the whole sequence (under sequence parallelism the head first gathers its input over the TP
group, and its backward keeps each rank's own slice), so the head gradient agrees across ranks; Megatron counts
such non-TP parameters once in the grad norm.
"""

from __future__ import annotations

from pathlib import Path

import torch
from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region

from rlpipe.train.batching import MicroBatch
from rlpipe.train.context_parallel import gather_sequence
from rlpipe.train.model import build_gpt_model
from rlpipe.train.trainer import MegatronTrainer
from rlpipe.train.weights import read_hf_state

VALUE_HEAD = "output_layer.weight"  # the head's parameter on the last pipeline stage, [1, h]
HF_VALUE_HEAD = "score.weight"  # its name in an HF *ForSequenceClassification(num_labels=1) folder


class ValueHead(torch.nn.Module):
    """Scalar head in the output layer's slot: hidden [s, b, h] -> values [s, b, 1], zero-initialised."""

    def __init__(self, hidden_size: int, dtype: torch.dtype, sequence_parallel: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, hidden_size, dtype=dtype))
        self.sequence_parallel = sequence_parallel

    def forward(
        self, hidden_states: torch.Tensor, weight: torch.Tensor | None = None, runtime_gather_output: bool | None = None
    ) -> tuple[torch.Tensor, None]:
        """Called like Megatron's ColumnParallelLinear output layer (weight / runtime_gather_output unused)."""
        if self.sequence_parallel:  # [s/TP, b, h] -> [s, b, h]; every rank then scores the same whole sequence
            hidden_states = gather_from_sequence_parallel_region(hidden_states, tensor_parallel_output_grad=False)
        return torch.nn.functional.linear(hidden_states, self.weight), None


class MegatronCritic(MegatronTrainer):
    """A value model: MegatronTrainer's optimizer, schedule, micro-batching, checkpoints and data parallelism,
    with `ValueHead` as the model's head. Its per-token output is V_t instead of log p(y_t): `compute_values`,
    and `train_step` hands the loss callback (indices, values, []) (no entropies). Never exported to engines."""

    def _build_module(self) -> torch.nn.Module:
        # Untied: the head replaces the output layer, and the embedding must not be shared with it.
        model = build_gpt_model(self.hf_config, self.config, tie_embeddings=False)
        if model.post_process:  # the last pipeline stage
            head = ValueHead(self.config.hidden_size, self.config.params_dtype, self.config.sequence_parallel)
            model.output_layer = head.to(next(model.decoder.parameters()).device)
        return model

    def _response_stats(
        self, mb: MicroBatch, logits: torch.Tensor, with_entropy: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample values of the response positions: output j is V of token j+1 (the log-prob alignment)."""
        values = gather_sequence(logits.float().squeeze(-1))  # [b, S]: whole rows on every context-parallel rank
        return [
            values[span.row, span.offset + span.response_start - 1 : span.offset + span.length - 1] for span in mb.spans
        ], []

    def compute_values(self, seqs: list[list[int]], response_starts: list[int]) -> list[torch.Tensor]:
        """V_t for each sample's response tokens, no grad: [len - start] per sample."""
        return self._forward_only(seqs, response_starts, with_entropy=False)[0]

    def hf_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        raise TypeError("the critic has no HF causal-LM form and is never pushed to rollout engines")

    @torch.no_grad()
    def load_hf(self, path: Path) -> None:
        """Backbone from an HF folder (a causal LM or a value model); head from its `score.weight`, else zero."""
        hf_state = dict(read_hf_state(path))  # a dict: the head is taken out, a missing lm_head filled in
        head = hf_state.pop(HF_VALUE_HEAD, None)
        if "score.bias" in hf_state or (head is not None and head.shape != (1, self.config.hidden_size)):
            raise ValueError(
                f"{path}: the value head must be {HF_VALUE_HEAD} of shape [1, {self.config.hidden_size}] without a "
                f"bias (a *ForSequenceClassification with num_labels=1); got {None if head is None else head.shape}"
            )
        if not self.hf_config.tie_word_embeddings:
            # hf_to_megatron converts the untied policy's vocabulary projection; a value-model folder has none,
            # and the critic drops it anyway (its output layer is the value head).
            hf_state.setdefault("lm_head.weight", hf_state["model.embed_tokens.weight"])
        backbone = [name for name, _ in self._module.named_parameters() if name != VALUE_HEAD]
        shards = dict(self._megatron_shards(hf_state, path, backbone))
        for name, param in self._module.named_parameters():
            if name == VALUE_HEAD:
                param.copy_(head if head is not None else torch.zeros_like(param))
            else:
                param.copy_(shards[name])
        self.optimizer.reload_model_params()
