"""`MegatronTrainer`: a Megatron-core GPT model, DDP, optimizer and LR schedule behind four verbs.

    load_hf(path)              HF safetensors -> this rank's Megatron shards (start of a run)
    compute_log_probs(...)     per-sample response log-probs (and entropies), no grad
    load_reference / load_teacher, compute_ref_log_probs / compute_teacher_log_probs
                               the same log-probs under frozen weights swapped in from the host
    train_step(...)            one optimizer step over this rank's share of the global batch
    hf_named_tensors()         full HF-named weights on every rank (pushed to the rollout engines)
    save_checkpoint / load_checkpoint

    load_torch_dist / save_torch_dist   model weights in Megatron's resharding torch_dist format

Construct it after `rlpipe.train.distributed.init_distributed`. Supported layouts: tensor (with or without
sequence), pipeline, context and data parallelism on CPU (gloo) and GPU; results that only the last pipeline stage
computes (log-probs, loss metrics) are broadcast to every stage, and per-token results are whole sequences on
every context-parallel rank.

The model's head is a hook: `_build_module` builds the language model and `_response_stats` turns its output into
per-token values for the loss callback; `rlpipe.train.critic.MegatronCritic` swaps both for a scalar value head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset
from transformers import AutoConfig

from rlpipe.train import checkpoint, dist_ckpt, lora
from rlpipe.train.batching import (
    MicroBatch,
    local_labels,
    model_input,
    packed_micro_batch,
    padded_micro_batch,
    split_by_tokens,
    split_fixed,
    split_to_count,
)
from rlpipe.train.context_parallel import gather_sequence
from rlpipe.train.cpu_shim import apply_cpu_patches
from rlpipe.train.logprobs import token_stats
from rlpipe.train.model import build_gpt_model, transformer_config_from_hf
from rlpipe.train.routing_replay import Replayer, RouteError, local_targets, micro_batch_routes
from rlpipe.train.spec import TrainerSpec
from rlpipe.train.stages import broadcast_from_last_stage, gather_over_group, gather_over_stages, to_global
from rlpipe.train.step_metrics import combine_micro_batches
from rlpipe.train.weights import hf_to_megatron, is_expert, megatron_to_hf, read_hf_state

LossFn = Callable[[list[int], list[torch.Tensor], list[torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
_LOSS = "_loss"  # each micro-batch's loss rides with its metrics to the finiteness check, then leaves them


def _device() -> torch.device | int | str:
    """Where this rank's tensors live: its current GPU, else the host."""
    return torch.cuda.current_device() if torch.cuda.is_available() else "cpu"


class MegatronTrainer:
    """The policy model under training; one instance per rank, all ranks calling the same methods in step."""

    def __init__(self, spec: TrainerSpec) -> None:
        apply_cpu_patches()
        self.spec = spec
        self.hf_config = AutoConfig.from_pretrained(spec.hf_checkpoint)
        tensor_parallel.model_parallel_cuda_manual_seed(spec.seed)
        self.config = transformer_config_from_hf(self.hf_config, spec)
        self._layer_offset = get_transformer_layer_offset(self.config)  # global number of this stage's layer 0
        module = self._build_module()
        # LoRA: the base frozen and adapters added before DDP and the optimizer, which then hold adapters only.
        self.adapters = (
            lora.add_adapters(module, spec.lora, self.hf_config, self._layer_offset, spec.seed, spec.sequence_parallel)
            if spec.lora is not None
            else []
        )
        self.model = DistributedDataParallel(
            self.config,
            DistributedDataParallelConfig(
                grad_reduce_in_fp32=True, use_distributed_optimizer=spec.use_distributed_optimizer
            ),
            module,
        )
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer=spec.optimizer,
                lr=spec.lr,
                min_lr=spec.min_lr,
                weight_decay=spec.weight_decay,
                adam_beta1=spec.adam_beta1,
                adam_beta2=spec.adam_beta2,
                adam_eps=spec.adam_eps,
                sgd_momentum=spec.sgd_momentum,
                clip_grad=spec.clip_grad,
                bf16=spec.params_dtype == "bf16",
                params_dtype=self.config.params_dtype,
                use_distributed_optimizer=spec.use_distributed_optimizer,
            ),
            [self.model],
        )
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=0.0 if spec.lr_warmup_iters else spec.lr,
            max_lr=spec.lr,
            min_lr=spec.min_lr,
            lr_warmup_steps=spec.lr_warmup_iters,
            # Unused by "constant" (the spec requires it otherwise), but megatron asserts warm-up < decay steps.
            lr_decay_steps=spec.lr_decay_iters or spec.lr_warmup_iters + 1,
            lr_decay_style=spec.lr_decay_style,
            start_wd=spec.weight_decay,
            end_wd=spec.weight_decay,
            wd_incr_steps=1,
            wd_incr_style="constant",
        )
        # What Megatron's training loop wires into the config: without finalize_model_grads the DDP grad
        # all-reduce never runs; no_sync defers it to the last micro-batch; grad_scale_func is the loss scale.
        self.config.finalize_model_grads_func = finalize_model_grads
        self.config.no_sync_func = self.model.no_sync
        self.config.grad_scale_func = self.optimizer.scale_loss
        # Frozen weight sets by role ("reference": the KL anchor, "teacher": on-policy distillation), this rank's
        # shards on the host; see load_reference.
        self._frozen: dict[str, dict[str, torch.Tensor]] = {}
        # Global number of this expert-parallel rank's expert 0 (experts are split evenly over the EP ranks).
        experts_here = (self.config.num_moe_experts or 0) // self.config.expert_model_parallel_size
        self._expert_offset = parallel_state.get_expert_model_parallel_rank() * experts_here
        self._replayer = Replayer(self.model) if spec.routing_replay else None  # MoE rollout routing replay

    def _build_module(self) -> torch.nn.Module:
        """This stage's model: the GPT language model of the HF config (the critic overrides this)."""
        return build_gpt_model(self.hf_config, self.config)

    # ----- weights -----

    @property
    def _module(self) -> torch.nn.Module:
        return self.model.module  # the GPTModel inside DDP: parameter names without the "module." prefix

    def _base_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The model's own parameters by local name: everything but LoRA adapters (those are `self.adapters`)."""
        return [(name, p) for name, p in self._module.named_parameters() if not lora.is_adapter(name)]

    def _global_name(self, local_name: str) -> str:
        """The whole-model name of one of this stage's parameters; a tied output layer (the last stage's copy
        of the embedding under pipeline parallelism) maps to the embedding it shares."""
        if local_name == "output_layer.weight" and self.hf_config.tie_word_embeddings:
            return "embedding.word_embeddings.weight"
        return to_global(local_name, self._layer_offset, self._expert_offset)

    def _hf_shards(self, path: Path) -> Iterator[tuple[str, torch.Tensor]]:
        """Every *.safetensors file of an HF checkpoint folder, as this rank's (TP shard, PP stage) parameters
        under local names, one at a time (the folder is read tensor by tensor)."""
        return self._megatron_shards(read_hf_state(path), path, [name for name, _ in self._base_parameters()])

    def _megatron_shards(
        self,
        hf_state: Mapping[str, torch.Tensor],
        path: Path,
        names: list[str],
        into: Mapping[str, torch.Tensor] | None = None,
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named full tensors -> this rank's parameters `names` (local names), streamed: a tensor is converted
        when its turn comes and is the caller's from then on (`into`: as `hf_to_megatron`'s, by global name).
        `path` only names the source in the KeyError raised, at the end, for parameters it has no source for."""
        wanted: dict[str, list[str]] = {}  # global name -> this rank's local names (a tied output layer shares)
        for name in names:
            wanted.setdefault(self._global_name(name), []).append(name)
        converted = hf_to_megatron(
            hf_state,
            self.hf_config,
            parallel_state.get_tensor_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_world_size(),
            etp=(
                parallel_state.get_expert_tensor_parallel_rank(),
                parallel_state.get_expert_tensor_parallel_world_size(),
            ),
            into=into,
        )
        for global_name, tensor in converted:
            for name in wanted.pop(global_name, ()):
                yield name, tensor
        missing = [name for names_here in wanted.values() for name in names_here]
        if missing:
            raise KeyError(f"HF checkpoint {path} has no source for Megatron parameters {missing}")

    @torch.no_grad()
    def load_hf(self, path: Path) -> None:
        """Load an HF checkpoint's weights into this rank's shards (the start-of-run conversion), tensor by tensor:
        beside the model, only the tensor being copied is held. Parameters on the host are converted in place."""
        params = dict(self._base_parameters())
        into = {self._global_name(name): p.detach() for name, p in params.items() if p.device.type == "cpu"}
        for name, tensor in self._megatron_shards(read_hf_state(path), path, list(params), into):
            if self._global_name(name) not in into:
                params[name].copy_(tensor)
        self.optimizer.reload_model_params()  # refresh the optimizer's fp32 main copies (bf16 / distributed)

    @torch.no_grad()
    def load_torch_dist(self, path: Path) -> None:
        """Load model weights from a torch_dist checkpoint (any TP/PP layout it was saved at): `ckpt.load`."""
        dist_ckpt.load_model(self._module, path, skip=lora.is_adapter)
        self.optimizer.reload_model_params()

    def save_torch_dist(self, directory: Path, iteration: int) -> Path:
        """Write the model weights as a torch_dist checkpoint (DIR/iter_*, tracker file); returns the iter folder."""
        return dist_ckpt.save_model(self._module, directory, iteration)

    @torch.no_grad()
    def load_reference(self, path: Path) -> None:
        """Keep a checkpoint's weights as the frozen KL reference (`ckpt.ref_load`; formats: `_frozen_state`).

        Held on the CPU and swapped into the model only while reference log-probs are computed (as Miles
        does), so the reference costs host memory, not a second model on the device.
        """
        self._frozen["reference"] = self._frozen_state(path)

    @torch.no_grad()
    def load_teacher(self, path: Path) -> None:
        """Keep a checkpoint's weights as the on-policy distillation teacher (`algo.opd_teacher_load`), held like
        the reference. The teacher must have the policy's architecture and tokenizer (the resolver compares HF
        folders; here every tensor's shape is checked)."""
        self._frozen["teacher"] = self._frozen_state(path)

    def _frozen_state(self, path: Path) -> dict[str, torch.Tensor]:
        """This rank's parameters, by local name on the host, from an HF folder or a torch_dist checkpoint (a
        checkpoint this trainer saved is one too: `save_checkpoint`), at any layout. Shapes must match the model's."""
        path = Path(path)
        if dist_ckpt.is_torch_dist(path):
            state = dist_ckpt.load_model_state(self._module, path, skip=lora.is_adapter)
        else:
            state = dict(self._hf_shards(path))
        params = dict(self._base_parameters())
        wrong = [
            f"{name}: {tuple(state[name].shape) if name in state else 'missing'} vs {tuple(p.shape)}"
            for name, p in params.items()
            if name not in state or state[name].shape != p.shape
        ]
        if wrong:
            raise ValueError(f"{path} does not have this model's architecture (checkpoint vs model): {wrong[:5]}")
        return {name: state[name].detach().cpu() for name in params}

    @torch.no_grad()
    def compute_ref_log_probs(self, seqs: list[list[int]], response_starts: list[int]) -> list[torch.Tensor]:
        """Like `compute_log_probs`, under the reference weights (`load_reference` first). With LoRA and no
        reference loaded, the reference is the frozen base model: the adapters are switched off, nothing is swapped."""
        if self.adapters and "reference" not in self._frozen:
            with lora.disabled(self.adapters):
                return self.compute_log_probs(seqs, response_starts)
        return self._frozen_log_probs("reference", seqs, response_starts)

    @torch.no_grad()
    def compute_teacher_log_probs(self, seqs: list[list[int]], response_starts: list[int]) -> list[torch.Tensor]:
        """Like `compute_log_probs`, under the teacher's weights (`load_teacher` first)."""
        return self._frozen_log_probs("teacher", seqs, response_starts)

    def _frozen_log_probs(self, role: str, seqs: list[list[int]], response_starts: list[int]) -> list[torch.Tensor]:
        """Swap the `role` weights in (LoRA adapters off), score the responses, and put the trained weights back
        (even on error)."""
        if role not in self._frozen:
            raise RuntimeError(f"no {role} weights: load them first (load_reference / load_teacher)")
        frozen = self._frozen[role]
        params = dict(self._base_parameters())
        actor = {name: p.detach().cpu().clone() for name, p in params.items()}
        try:
            for name, p in params.items():
                p.copy_(frozen[name])
            with lora.disabled(self.adapters):
                return self.compute_log_probs(seqs, response_starts)
        finally:
            for name, p in params.items():
                p.copy_(actor[name])

    def hf_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Full HF-named weights, gathered over the TP (ETP for experts) group, the expert-parallel ranks and the
        pipeline stages; every rank gets the whole list. With LoRA: the merged weights, W + alpha/r · B A."""
        tied_copy = not parallel_state.is_pipeline_first_stage() and self.hf_config.tie_word_embeddings
        merged = self._merged_deltas()
        stage = [
            (self._global_name(name), p + merged[name] if name in merged else p)
            for name, p in self._base_parameters()
            if not (tied_copy and name == "output_layer.weight")  # the first stage exports the shared embedding
        ]
        named = list(
            megatron_to_hf(
                stage,
                self.hf_config,
                parallel_state.get_tensor_model_parallel_group(),
                parallel_state.get_expert_tensor_parallel_group(),
            )
        )
        if parallel_state.get_expert_model_parallel_world_size() > 1:  # each EP rank converted its own experts
            mine = [(n, t) for n, t in named if is_expert(n)]
            named = [(n, t) for n, t in named if not is_expert(n)]
            named += gather_over_group(mine, parallel_state.get_expert_model_parallel_group())
        return gather_over_stages(named)

    def _merged_deltas(self) -> dict[str, torch.Tensor]:
        """LoRA: alpha/r · B A for each adapted base weight (local name), in its local layout."""
        modules = dict(self._module.named_modules())
        deltas = {}
        for name, adapter in modules.items():
            if isinstance(adapter, lora.SiteAdapters):
                weight = name.removesuffix(lora.ADAPTER_SUFFIX) + ".weight"
                deltas[weight] = adapter.delta_weight(modules[name.removesuffix(lora.ADAPTER_SUFFIX)].weight)
        return deltas

    def adapter_named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """LoRA: every adapter matrix, whole, by peft's on-disk name, on every rank (gathered over TP and stages)."""
        return gather_over_stages([item for adapter in self.adapters for item in adapter.whole()])

    @torch.no_grad()
    def load_adapters(self, tensors: dict[str, torch.Tensor]) -> None:
        """LoRA: set the adapters from whole matrices by peft name (a peft adapter folder's)."""
        for adapter in self.adapters:
            adapter.load_whole(tensors)
        self.optimizer.reload_model_params()

    # ----- forward passes -----

    def _micro_batches(self, seqs: list[list[int]], response_starts: list[int]) -> list[MicroBatch]:
        bad = [i for i, (s, r) in enumerate(zip(seqs, response_starts, strict=True)) if not 1 <= r <= len(s)]
        if bad:  # the first response token needs at least one token before it to be scored
            raise ValueError(f"samples {bad}: response_start must lie in [1, len(seq)]")
        # Context parallelism cuts every row into 2·CP chunks, and sequence parallelism splits each rank's share
        # evenly over the TP ranks.
        multiple = 2 * self.spec.context_parallel if self.spec.context_parallel > 1 else 1
        multiple *= self.spec.tensor_parallel if self.spec.sequence_parallel else 1
        lengths = [len(s) for s in seqs]
        if self.spec.use_dynamic_batch_size:
            # A CP group shares its budget: CP ranks jointly hold max_tokens_per_gpu x CP tokens (Miles' rule).
            groups = split_by_tokens(lengths, self.spec.max_tokens_per_gpu * self.spec.context_parallel)
        else:
            groups = split_fixed(len(seqs), self.spec.micro_batch_size)
        if self.spec.expert_parallel > 1:  # expert-parallel ranks exchange tokens in every MoE layer's forward
            groups = split_to_count(groups, lengths, self._most_over_data_parallel(len(groups)))
        layout = packed_micro_batch if self.spec.use_dynamic_batch_size else padded_micro_batch
        return [layout(seqs, response_starts, g, multiple) for g in groups]

    @staticmethod
    def _most_over_data_parallel(value: int) -> int:
        """The largest `value` any data-parallel rank has."""
        device = _device()
        most = torch.tensor([value], device=device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX, group=parallel_state.get_data_parallel_group())
        return int(most.item())

    def _response_stats(
        self, mb: MicroBatch, logits: torch.Tensor, with_entropy: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample log-probs (and entropies) of the response tokens: logits at position j score token j+1."""
        labels = local_labels(mb).to(logits.device)
        log_probs, entropy = token_stats(logits, labels, self.hf_config.vocab_size, self.spec.temperature, with_entropy)
        log_probs = gather_sequence(log_probs)  # [b, S]: whole rows on every context-parallel rank
        entropy = gather_sequence(entropy) if entropy is not None else None
        lps, ents = [], []
        for span in mb.spans:
            # Response tokens sit at offset+response_start .. offset+length-1; their predictors one earlier.
            sl = slice(span.offset + span.response_start - 1, span.offset + span.length - 1)
            lps.append(log_probs[span.row, sl])
            if entropy is not None:
                ents.append(entropy[span.row, sl])
        return lps, ents

    def _run(
        self,
        micro_batches: list[MicroBatch],
        on_output: Callable[[MicroBatch, torch.Tensor], tuple[torch.Tensor, dict]],
        forward_only: bool,
        routes: Sequence[np.ndarray] | None = None,
    ) -> list[dict]:
        """Run Megatron's schedule over the micro-batches; returns what `on_output` reported for each. With
        `routes` (per sample of the caller's batch, see routing_replay.py) the MoE routers replay them."""
        device = _device()
        batches = iter(micro_batches)
        replayer = self._replayer if routes is not None else None
        if routes is not None and self._replayer is None:
            raise RouteError("routes were given, but the trainer was built without routing replay")

        def forward_step(_data_iterator: object, model: torch.nn.Module) -> tuple[torch.Tensor, Callable]:
            mb = next(batches)
            inp = model_input(mb)  # this context-parallel rank's positions
            mask = inp.attention_mask.to(device) if inp.attention_mask is not None else None
            if replayer is not None:
                assert routes is not None
                layout = micro_batch_routes(
                    mb, routes, self.hf_config.num_hidden_layers, self.hf_config.num_experts_per_tok
                )
                replayer.load(
                    local_targets(layout, self._layer_offset, len(replayer.routers), self.spec.sequence_parallel)
                )
            logits = model(
                inp.tokens.to(device), inp.position_ids.to(device), mask, packed_seq_params=inp.packed_seq_params
            )  # [b, s, V/T]
            if replayer is not None:
                replayer.after_forward()
            return logits, lambda output: on_output(mb, output)

        try:
            return get_forward_backward_func()(
                forward_step_func=forward_step,
                data_iterator=None,
                model=[self.model],
                num_microbatches=len(micro_batches),
                seq_length=max(mb.tokens.shape[1] for mb in micro_batches) // self.spec.context_parallel,
                micro_batch_size=max(mb.tokens.shape[0] for mb in micro_batches),
                forward_only=forward_only,
            )
        finally:
            if replayer is not None:
                replayer.clear()

    @torch.no_grad()
    def compute_log_probs(
        self,
        seqs: list[list[int]],
        response_starts: list[int],
        with_entropy: bool = False,
        routes: Sequence[np.ndarray] | None = None,
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Log-probs of each sample's response tokens given everything before them: [len - start] per sample.

        With `with_entropy`, also the per-token entropies of the same positions, as (log_probs, entropies).
        With `routes`, the MoE routers replay the engine's experts (routing_replay.py).
        """
        log_probs, entropies = self._forward_only(seqs, response_starts, with_entropy, routes)
        return (log_probs, entropies) if with_entropy else log_probs

    @torch.no_grad()
    def _forward_only(
        self,
        seqs: list[list[int]],
        response_starts: list[int],
        with_entropy: bool,
        routes: Sequence[np.ndarray] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """`_response_stats` of every sample, in `seqs` order, on the host: ([R_i] ..., [R_i] ... or empty)."""

        def collect(mb: MicroBatch, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
            lps, ents = self._response_stats(mb, logits, with_entropy)
            return torch.zeros((), device=logits.device), {"indices": mb.indices, "log_probs": lps, "entropy": ents}

        self.model.eval()
        # Only the last pipeline stage sees logits; every stage returns its results.
        outputs = broadcast_from_last_stage(
            self._run(self._micro_batches(seqs, response_starts), collect, forward_only=True, routes=routes)
        )
        log_probs: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
        entropies: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
        for out in outputs:
            for k, i in enumerate(out["indices"]):
                log_probs[i] = out["log_probs"][k].cpu()
                if with_entropy:
                    entropies[i] = out["entropy"][k].cpu()
        return log_probs, entropies

    # ----- training -----

    def train_step(
        self,
        seqs: list[list[int]],
        response_starts: list[int],
        loss_fn: LossFn,
        lr: float | None = None,
        routes: Sequence[np.ndarray] | None = None,
    ) -> dict[str, float]:
        """One optimizer step over this data-parallel rank's share of the global batch.

        With `lr`, the step runs at that fixed learning rate and does not advance the LR schedule (the
        supervised warm-up uses this, so the RL schedule starts at its own step 0). With `routes`, the MoE routers
        replay the engine's experts in the forward and in any recompute (routing_replay.py).

        `loss_fn(sample_indices, log_probs, entropies)` returns one micro-batch's contribution to the global loss
        (already divided by the global denominator) and metrics; indices point into `seqs`. Returns the metrics
        summed over micro-batches (this rank only) plus grad_norm, the lr this step used and padding_waste (the
        fraction of this rank's input positions that were padding).
        """
        micro_batches = self._micro_batches(seqs, response_starts)
        # Megatron's schedule divides each micro-batch loss by num_microbatches, and DDP averages gradients over
        # the data-parallel ranks. Multiplying both back makes the gradient that of the sum of the loss_fn
        # contributions over all micro-batches and ranks, i.e. of the global loss. (Under context parallelism
        # DDP averages over DP x CP, and the schedule itself multiplies each loss by CP to compensate: each CP
        # rank holds a slice of the same loss's gradient, see context_parallel.py.)
        undo_averaging = len(micro_batches) * parallel_state.get_data_parallel_world_size()

        def loss_of(mb: MicroBatch, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
            lps, ents = self._response_stats(mb, logits, with_entropy=True)
            loss, metrics = loss_fn(mb.indices, lps, ents)
            return loss * undo_averaging, {k: v.detach() for k, v in metrics.items()} | {_LOSS: loss.detach()}

        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        outputs = broadcast_from_last_stage(self._run(micro_batches, loss_of, forward_only=False, routes=routes))
        scheduled = [group["lr"] for group in self.optimizer.param_groups]
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        used_lr = self.optimizer.param_groups[0]["lr"]
        losses = [out.pop(_LOSS) for out in outputs]
        finite = self._all_finite(losses)
        if finite:
            _, grad_norm, _ = self.optimizer.step()
        else:  # the weights, the optimizer state and the schedule stay as they were
            grad_norm = float("nan")
        if lr is None and finite:
            self.scheduler.step(increment=1)
        elif lr is not None:  # put the schedule's values back untouched
            for group, value in zip(self.optimizer.param_groups, scheduled, strict=True):
                group["lr"] = value
        # Fraction of this rank's model input that is padding (0 when packed): FLOPs spent on nothing.
        padding = sum(mb.pad_tokens for mb in micro_batches) / sum(mb.tokens.numel() for mb in micro_batches)
        return {
            **combine_micro_batches(outputs),
            "grad_norm": float(grad_norm),
            "lr": float(used_lr),
            "padding_waste": padding,
            "nonfinite_step": 0.0 if finite else 1.0,
        }

    def _all_finite(self, losses: list[torch.Tensor]) -> bool:
        """Whether every micro-batch loss and every gradient is finite on every trainer rank: a NaN or inf
        step is skipped rather than written into the weights (one flag all-reduced over the trainer's ranks,
        so all of them skip together)."""
        device = _device()
        checks = [loss.isfinite().all() for loss in losses]
        checks += [p.main_grad.isfinite().all() for p in self.model.parameters() if p.requires_grad]
        bad = torch.stack(checks).logical_not().any().to(device=device, dtype=torch.float32).reshape(1)
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return not bool(bad.item())

    # ----- colocation -----

    def offload(self) -> None:
        """Free device memory while the colocated engine generates: parameters and gradients to pinned host
        memory (megatron's RL buffer offload), optimizer state to the host. Nothing to free on CPU."""
        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize()
        for buffer in self.model.buffers + self.model.expert_parallel_buffers:
            buffer.offload_to_cpu(move_params=True, move_grads=True)
        self.optimizer.offload_to_cpu()
        torch.cuda.empty_cache()

    def onload(self) -> None:
        """Undo `offload` before the next training phase."""
        if not torch.cuda.is_available():
            return
        for buffer in self.model.buffers + self.model.expert_parallel_buffers:
            buffer.reload_from_cpu(move_params=True, move_grads=True)
        self.optimizer.restore_from_cpu()
        torch.cuda.synchronize()

    # ----- checkpoints -----

    @property
    def _train_state(self) -> checkpoint.TrainState:
        return checkpoint.TrainState(
            self._module, self.optimizer, self.scheduler, self.spec.use_distributed_optimizer,
            trainable=lora.is_adapter if self.adapters else None,
        )  # fmt: skip

    def save_checkpoint(
        self,
        directory: Path,
        iteration: int,
        extra_state: dict | None = None,
        parts: Mapping[str, MegatronTrainer] | None = None,
    ) -> None:
        """Write iter_{iteration:07d}/ and latest_checkpointed_iteration.txt under `directory` atomically, in
        Megatron's torch_dist format (model, optimizer, LR schedule, RNG; `rlpipe.train.checkpoint`).

        `extra_state` (JSON-able: the loop's data cursor, say) is saved inside the same folder, so it can
        never disagree with the weights it belongs to. Each of `parts` (other trained models of the run: the
        PPO critic) is written the same way into iter_{iteration:07d}/{name}/ before the folder is renamed into
        place, so the models of one checkpoint always come from the same rollout (`load_checkpoint(part=name)`).
        """
        parts_state = {name: part._train_state for name, part in (parts or {}).items()}
        checkpoint.save(Path(directory), iteration, self._train_state, extra_state or {}, parts_state)

    def load_checkpoint(self, directory: Path, part: str | None = None) -> tuple[int, dict] | None:
        """Restore model, optimizer, scheduler and RNG from the latest checkpoint (from its `part` sub-folder
        when given: a model saved as one of save_checkpoint's `parts`), at this trainer's layout.

        Returns (iteration, extra_state given to save_checkpoint), or None when `directory` holds no full
        checkpoint (none at all, a weights-only torch_dist one: see load_torch_dist, or none of this part)."""
        return checkpoint.load(Path(directory), self._train_state, part)
