"""SGLang's HTTP wire format (0.5.23), in one place: /generate bodies and replies, weight-update payloads.

Facts from the sglang==0.5.23 source (sglang/api/v1/api_types.py, srt/managers/io_struct.py,
srt/managers/tokenizer_manager.py, srt/utils/common.py):
- /generate takes `input_ids`, `sampling_params` and `return_logprob`; unknown top-level keys are ignored, unknown
  `sampling_params` keys are a 400 (`unknown field ...`). The seed is `sampling_params.sampling_seed`.
- One prompt with n == 1 answers one object, with n > 1 a list of n objects. Each has `text`, `output_ids` and
  `meta_info` with `finish_reason` ({"type": "stop"|"length"|"abort", ...}) and, with return_logprob,
  `output_token_logprobs`: one (logprob, token_id, text-or-null) triple per generated token, the stop token
  included. Miles reads response tokens from these triples; so does this module.
- With `return_routed_experts: true` (a top-level /generate key; the server needs --enable-return-routed-experts,
  srt/layers/moe/routed_experts_capturer.py) `meta_info["routed_experts"]` is a base64 string of int32 bytes, the
  experts of every token the engine ran ([prompt + output - 1, num_hidden_layers, num_experts_per_tok],
  row-major; dense layers hold zeros).
- `update_weights_from_tensor` takes `serialized_named_tensors`: one base64 string per TP rank, each a pickled
  list of (name, tensor). Rank r unpickles entry r only (`deserialize_own_rank`) with a restricted unpickler.
"""

from __future__ import annotations

import base64
import io
import pickle
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from rlpipe.rollout.engine import GenerateOutput, SamplingParams

FINISH_TYPES = ("stop", "length", "abort")
MEMORY_TAGS = ("weights", "kv_cache", "cuda_graph")  # sglang.srt.constants.GPU_MEMORY_ALL_TYPES
PAUSE_MODES = ("abort", "retract", "in_place")  # io_struct.PauseGenerationReqInput.mode


def generate_body(prompt: list[int], params: SamplingParams) -> dict[str, Any]:
    """The /generate JSON for one prompt and `params.n` samples, with per-token log-probs."""
    sampling: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,  # -1: whole vocabulary, as in SGLang
        "n": params.n,
    }
    if params.stop_token_ids:
        sampling["stop_token_ids"] = list(params.stop_token_ids)
    if params.seed is not None:
        sampling["sampling_seed"] = params.seed
    body: dict[str, Any] = {"input_ids": prompt, "sampling_params": sampling, "return_logprob": True}
    if params.return_routed_experts:
        body["return_routed_experts"] = True
    if params.lora_name is not None:
        body["lora_path"] = params.lora_name  # the name an adapter was loaded under (SGLang's GenerateReqInput)
    return body


def parse_generate_reply(
    reply: Any, n: int, prompt_len: int = 0, routes_shape: tuple[int, int] | None = None
) -> list[GenerateOutput]:
    """A /generate reply (one object, or a list of n) -> n GenerateOutputs. With `routes_shape` (layers, top-k)
    each reply must carry its routed experts for the `prompt_len` prompt tokens and its output."""
    items = reply if isinstance(reply, list) else [reply]
    if len(items) != n:
        raise ValueError(f"/generate answered {len(items)} samples, asked for {n}")
    return [_parse_one(item, prompt_len, routes_shape) for item in items]


def _parse_one(item: dict[str, Any], prompt_len: int, routes_shape: tuple[int, int] | None) -> GenerateOutput:
    meta = item["meta_info"]
    reason = meta["finish_reason"]["type"]
    if reason not in FINISH_TYPES:
        raise ValueError(f"unknown finish_reason {meta['finish_reason']!r}; expected one of {FINISH_TYPES}")
    triples = meta["output_token_logprobs"]  # [(logprob, token_id, text | None)] per generated token
    routes = None
    if routes_shape is not None:
        routes = decode_routed_experts(
            meta.get("routed_experts"), prompt_len + len(triples) - 1, routes_shape, meta.get("routed_experts_dtype")
        )
    log_probs, ids, _ = zip(*triples, strict=True) if triples else ((), (), ())  # the columns, at C speed
    return GenerateOutput(
        output_ids=list(ids),
        text=item["text"],
        output_log_probs=list(log_probs),
        finish_reason=reason,
        routed_experts=routes,
    )


def decode_routed_experts(
    payload: str | None, tokens: int, shape: tuple[int, int], wire_dtype: str | None = None
) -> np.ndarray:
    """`meta_info["routed_experts"]` -> [tokens, layers, top-k] int32, checked against the expected size. The
    bytes are int32 unless the reply names another dtype (`routed_experts_dtype`: newer SGLang may send uint8 /
    uint16 when every expert id fits)."""
    if payload is None:
        raise ValueError(
            "/generate answered no routed_experts: start the SGLang servers with --enable-return-routed-experts "
            "(rlpipe does when algo.use_rollout_routing_replay is set)"
        )
    flat = np.frombuffer(base64.b64decode(payload), dtype=np.dtype(wire_dtype or "int32"))
    if flat.size != tokens * shape[0] * shape[1]:
        raise ValueError(
            f"routed_experts holds {flat.size} ints, expected {tokens} tokens x {shape[0]} layers x {shape[1]} experts"
        )
    return flat.reshape(tokens, *shape).astype(np.int32)


def buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[list]:
    """Consecutive groups of named tensors of at most `bucket_bytes` each (a larger tensor travels alone)."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def alone(t: torch.Tensor) -> torch.Tensor:
    """`t` contiguous and alone in its storage, copied only where it is not so already: a view would pickle (or
    keep alive) its whole base storage, and safetensors refuses tensors that share one."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def serialize_named_tensors(named_tensors: Sequence[tuple[str, torch.Tensor]]) -> str:
    """Base64 of a pickled [(name, tensor)] list, the per-rank payload of /update_weights_from_tensor.

    CPU tensors are pickled with their bytes inline (torch's own reduction: `torch.storage._load_from_bytes`,
    which SGLang's restricted unpickler loads through its safe loader), so the payload works across machines.
    CUDA tensors go through torch's multiprocessing pickler, as SGLang's MultiprocessingSerializer does: the
    payload then carries CUDA IPC handles, valid only on the same node while the tensors stay alive (the
    colocated path; disaggregated engines use update_weights_from_distributed instead).
    """
    if any(t.is_cuda for _, t in named_tensors):
        from multiprocessing.reduction import ForkingPickler

        import torch.multiprocessing  # noqa: F401  registers torch's tensor reductions with ForkingPickler

        buf = io.BytesIO()
        ForkingPickler(buf).dump([(name, t.detach()) for name, t in named_tensors])
        data = buf.getvalue()
    else:
        data = pickle.dumps([(name, alone(t.detach())) for name, t in named_tensors])
    return base64.b64encode(data).decode("ascii")


def update_tensor_body(payload: str, tp_size: int, weight_version: int) -> dict[str, Any]:
    """The /update_weights_from_tensor JSON: the same full-tensor payload for every TP rank (each rank's
    `load_weights` takes its own shard); the cache is flushed once, after the whole update."""
    return {
        "serialized_named_tensors": [payload] * tp_size,
        "load_format": None,
        "flush_cache": False,
        "abort_all_requests": False,
        "weight_version": str(weight_version),
    }


# SGLang releases whose /load_lora_adapter_from_tensors takes one payload for all TP ranks (`serialized_tensors`);
# 0.5.17 and later take one per rank (`serialized_named_tensors`), as /update_weights_from_tensor does.
SINGLE_PAYLOAD_LORA = ("0.5.15.post1", "0.5.16")


def lora_tensors_body(
    name: str, config: dict[str, Any], named_tensors: Sequence[tuple[str, torch.Tensor]], tp_size: int, version: str
) -> dict[str, Any]:
    """The /load_lora_adapter_from_tensors JSON: peft's adapter config and the whole A/B matrices, named as in a
    checkpoint (`model.layers.{i}.self_attn.q_proj.lora_A.weight`); each TP rank slices its own share."""
    tensors = {n.removeprefix("base_model.model."): t.detach().cpu().clone() for n, t in named_tensors}
    payload = base64.b64encode(pickle.dumps(tensors)).decode("ascii")
    body: dict[str, Any] = {"lora_name": name, "config_dict": config}
    if version in SINGLE_PAYLOAD_LORA:
        return body | {"serialized_tensors": payload}
    return body | {"serialized_named_tensors": [payload] * tp_size}
