"""In-process rollout engine over a transformers causal LM: the CPU default and the engine tests run on.

All prompts x n samples decode as one left-padded batch with a KV cache, in a sampling loop written over the
model's forward (measured on 2 CPU cores, tiny model, 64 rows x 8 new tokens: ~18 ms vs ~22 ms for
`model.generate(output_logits=True)`, which also leaves the log-probs still to compute).

Log-probs: `output_log_probs[t]` is log_softmax(logits / temperature) at the chosen token over the whole
vocabulary, before top-k/top-p truncation (temperature 0 -> plain log_softmax(logits)). That is the
distribution the trainer recomputes, so rollout and trainer log-probs agree when weights agree.

Weight-update and memory calls mirror SGLang's engine: updates are legal only between `begin_weight_update`
and `end_weight_update` (SGLang answers success=False; here RuntimeError), each end bumps `weight_version`,
and generating while weights are mid-update or memory is released raises.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedTokenizerFast

from rlpipe.data.tokenizer import load_tokenizer
from rlpipe.rollout.engine import GenerateOutput, OnOutput, SamplingParams
from rlpipe.rollout.routes import RouteRecorder


class HFEngine:
    """A `RolloutEngine` running a HF checkpoint in this process."""

    def __init__(
        self,
        hf_checkpoint: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(hf_checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(str(hf_checkpoint), dtype=dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
        self._weight_version = 0
        self._updating = False
        self._released = False
        # abort() is called from other threads while generate() runs; an Event is a thread-safe flag.
        self._abort = threading.Event()
        # One generate or weight/memory operation at a time: weights never change under a running decode.
        self._lock = threading.Lock()
        self._lora_base: dict[str, torch.Tensor] = {}  # weights a LoRA adapter is merged into, as they were (host)

    @property
    def weight_version(self) -> int:
        return self._weight_version

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, on_output: OnOutput | None = None
    ) -> list[list[GenerateOutput]]:
        """For each prompt (token ids), `params.n` responses, all decoded in one batch (so `on_output` is called for
        every prompt at the end)."""
        _check_params(prompts, params)
        with self._lock:
            if self._released:
                raise RuntimeError("generate() while memory is released; call resume_memory_occupation() first")
            if self._updating:
                raise RuntimeError("generate() during a weight update; call end_weight_update() first")
            self._abort.clear()  # abort() stops generations in flight, not later ones
            rows = [p for p in prompts for _ in range(params.n)]  # prompt-major: row i*n + j is sample j of i
            generator = self._generator
            if params.seed is not None:
                generator = torch.Generator(device=self.device).manual_seed(params.seed)
            recorder = RouteRecorder(self.model) if params.return_routed_experts else None
            with recorder or contextlib.nullcontext():
                tokens, log_probs, reasons = self._decode(rows, params, generator)
        outputs = [
            GenerateOutput(
                output_ids=ids,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                output_log_probs=lps,
                finish_reason=reason,
                routed_experts=recorder.routes(i, len(rows), len(rows[i]), len(ids)) if recorder else None,
            )
            for i, (ids, lps, reason) in enumerate(zip(tokens, log_probs, reasons, strict=True))
        ]
        per_prompt = [outputs[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]
        if on_output is not None:
            for i, responses in enumerate(per_prompt):
                on_output(i, responses)
        return per_prompt

    @torch.inference_mode()
    def _decode(
        self, rows: list[list[int]], params: SamplingParams, generator: torch.Generator
    ) -> tuple[list[list[int]], list[list[float]], list[str]]:
        """Batched sampling loop with a KV cache; returns per-row (token ids, log-probs, finish reason)."""
        pad_id = self.tokenizer.pad_token_id
        input_ids, mask = _left_pad(rows, pad_id, self.device)  # [B, P], [B, P]
        # Positions count real tokens only, so a left-padded row sees the same positions as it would alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]
        stop_ids = torch.tensor(sorted(self._eos_ids | set(params.stop_token_ids)), device=self.device)
        batch = len(rows)
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)  # [B] stopped on EOS / a stop token
        lengths = torch.zeros(batch, dtype=torch.long, device=self.device)  # [B] tokens generated per row
        step_tokens: list[torch.Tensor] = []  # each [B]
        step_log_probs: list[torch.Tensor] = []  # each [B]
        aborted = False

        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1
        ).logits[:, -1]  # [B, V]
        for step in range(params.max_new_tokens):
            if self._abort.is_set():
                aborted = True
                break
            token, log_prob = _sample(logits.float(), params, generator)  # [B], [B]
            token = torch.where(done, pad_id, token)  # finished rows idle on padding
            step_tokens.append(token)
            step_log_probs.append(log_prob)
            lengths += (~done).long()
            done |= torch.isin(token, stop_ids)
            if bool(done.all()) or step == params.max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)  # [B, P + step + 1]
            positions = positions[:, -1:] + 1  # [B, 1]
            logits = self.model(
                input_ids=token[:, None], attention_mask=mask, position_ids=positions, cache=cache
            ).logits[:, -1]

        tokens = torch.stack(step_tokens, dim=1).tolist() if step_tokens else [[] for _ in rows]  # [B, T]
        log_probs = torch.stack(step_log_probs, dim=1).tolist() if step_log_probs else [[] for _ in rows]
        unfinished = "abort" if aborted else "length"
        reasons = ["stop" if d else unfinished for d in done.tolist()]
        n = lengths.tolist()
        return (
            [t[:k] for t, k in zip(tokens, n, strict=True)],
            [lp[:k] for lp, k in zip(log_probs, n, strict=True)],
            reasons,
        )

    def begin_weight_update(self) -> None:
        with self._lock:
            if self._updating:
                raise RuntimeError("begin_weight_update() called twice without end_weight_update()")
            self._updating = True

    @torch.no_grad()
    def update_weights_from_tensor(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the model (any subset; several calls may make up one update)."""
        with self._lock:
            if not self._updating:
                raise RuntimeError(
                    "update_weights_from_tensor() outside begin_weight_update()/end_weight_update() "
                    "(SGLang rejects it the same way, with success=False)"
                )
            self._lora_base.clear()  # new weights: a later adapter merges into them
            # state_dict keeps both names of a tied weight (embed_tokens / lm_head); keep_vars gives the live tensors.
            params = self.model.state_dict(keep_vars=True)
            for name, tensor in named_tensors:
                target = _destination(params, name)
                if target.shape != tensor.shape:
                    raise ValueError(
                        f"weight {name!r}: got shape {tuple(tensor.shape)}, model has {tuple(target.shape)}"
                    )
                target.copy_(tensor)

    def end_weight_update(self) -> None:
        with self._lock:
            if not self._updating:
                raise RuntimeError("end_weight_update() without begin_weight_update()")
            self._updating = False
            self._weight_version += 1

    @torch.no_grad()
    def load_lora_adapter(self, name: str, named_tensors: list[tuple[str, torch.Tensor]], config: dict) -> None:
        """Serve a LoRA adapter by merging it: W = W_base + lora_alpha/r · B A for every adapted weight, W_base kept
        on the host the first time, so the next adapter replaces this one. This engine serves one model, so every
        request uses the adapter, named or not."""
        scaling = config["lora_alpha"] / config["r"]
        matrices = dict(named_tensors)
        with self._lock:
            params = self.model.state_dict(keep_vars=True)
            for a_name, a in matrices.items():
                if ".lora_A." not in a_name:
                    continue
                b = matrices[a_name.replace(".lora_A.", ".lora_B.")]
                weight = a_name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
                target = _destination(params, weight)
                base = self._lora_base.setdefault(weight, target.detach().to("cpu", copy=True))
                merged = base.float() + scaling * (b.float() @ a.float())
                target.copy_(merged.to(device=target.device, dtype=target.dtype))
            self._weight_version += 1

    def flush_cache(self) -> None:
        """Nothing to flush: each generate() builds and drops its own KV cache (there is no prefix cache)."""

    def release_memory_occupation(self) -> None:
        """Give the accelerator memory back (weights move to host); on CPU only the state is tracked."""
        with self._lock:
            if self.device.type != "cpu":
                self.model.to("cpu")
                torch.cuda.empty_cache()
            self._released = True

    def resume_memory_occupation(self) -> None:
        with self._lock:
            if self.device.type != "cpu":
                self.model.to(self.device)
            self._released = False

    def abort(self) -> None:
        """Stop the generation in flight before its next token; its rows finish with reason "abort"."""
        self._abort.set()

    def sampling_state(self) -> bytes:
        """The sampling generator's state: a checkpoint holds it, so a resumed run draws the same tokens."""
        with self._lock:
            return bytes(self._generator.get_state().tolist())

    def load_sampling_state(self, state: bytes | None) -> None:
        if state is None:
            return
        with self._lock:
            self._generator.set_state(torch.tensor(list(state), dtype=torch.uint8))


# A checkpoint names each MoE expert's projections (what the trainer exports and SGLang loads); transformers 5
# holds them fused per layer: gate_up_proj [E, 2I, H] = cat(gate, up) per expert, down_proj [E, H, I].
_EXPERT = re.compile(r"(?P<experts>.+\.mlp\.experts)\.(?P<j>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight")


def _destination(params: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The model tensor (or the view of a fused one) that checkpoint weight `name` is copied into."""
    if name in params:
        return params[name]
    expert = _EXPERT.fullmatch(name)
    if expert and f"{expert['experts']}.down_proj" in params:
        j = int(expert["j"])
        if expert["proj"] == "down_proj":
            return params[f"{expert['experts']}.down_proj"][j]
        gate_up = params[f"{expert['experts']}.gate_up_proj"][j]  # [2I, H]
        half = gate_up.shape[0] // 2
        return gate_up[:half] if expert["proj"] == "gate_proj" else gate_up[half:]
    raise KeyError(f"unknown weight {name!r}; the model has e.g. {sorted(params)[:5]}")


def _sample(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row from logits [B, V]; returns (token [B], its log-prob [B], see module docstring)."""
    if params.temperature == 0:
        log_probs = torch.log_softmax(logits, dim=-1)  # [B, V]
        token = logits.argmax(dim=-1)
    else:
        scaled = logits / params.temperature
        log_probs = torch.log_softmax(scaled, dim=-1)  # [B, V] reported: before truncation
        kept = _truncate(scaled, params.top_k, params.top_p)
        token = torch.multinomial(torch.softmax(kept, dim=-1), 1, generator=generator).squeeze(1)
    return token, log_probs.gather(1, token[:, None]).squeeze(1)


def _truncate(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k, then outside the top-p nucleus, to -inf (the best token always stays)."""
    if 0 < top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # [B, 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids [B, P], attention_mask [B, P]) padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _eos_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> set[int]:
    """EOS ids from the generation config (an int or a list) and the tokenizer."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _check_params(prompts: list[list[int]], params: SamplingParams) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate() needs at least one prompt, each with at least one token")
    if params.max_new_tokens < 1 or params.n < 1:
        raise ValueError(f"max_new_tokens and n must be >= 1, got {params.max_new_tokens} and {params.n}")
    if params.temperature < 0 or not 0 < params.top_p <= 1 or params.top_k == 0 or params.top_k < -1:
        raise ValueError(
            f"need temperature >= 0, 0 < top_p <= 1, top_k = -1 or >= 1; got {params.temperature}, "
            f"{params.top_p}, {params.top_k}"
        )
