"""`SGLangEngine`: the RolloutEngine over SGLang HTTP servers behind sglang-router.

Generation goes through the router (it balances prompts over the engines): one /generate request per prompt,
asking for n samples, at most `max_inflight` requests open at once (asyncio + aiohttp). Everything that changes
an engine's state (weight updates, memory release/resume, abort, pause/continue) goes to EVERY engine's own URL:
the router does not forward those. Each weight update is begin_weight_update -> update_weights_from_tensor (one
request per bucket of `bucket_bytes`) -> end_weight_update; SGLang 0.5.22+ refuses updates outside that bracket.

The methods are synchronous (the loop calls them like HFEngine's); each runs its own event loop, so they must
not be called from inside a running asyncio loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
import torch

from rlpipe.rollout.engine import GenerateOutput, OnOutput, SamplingParams
from rlpipe.rollout.sglang import protocol

_JSON = {"Content-Type": "application/json"}


class SGLangError(RuntimeError):
    """An SGLang server answered a control or generate request with an error."""


class SGLangEngine:
    """A `RolloutEngine` client for `len(engine_urls)` SGLang servers reached through `router_url`."""

    def __init__(
        self,
        router_url: str,
        engine_urls: Sequence[str],
        *,
        tp_size: int = 1,
        max_inflight: int = 256,
        bucket_bytes: int = 512 * 2**20,
        timeout_s: float = 3600.0,
        routes_shape: tuple[int, int] | None = None,
        version: str = "0.5.23",
    ) -> None:
        if not engine_urls:
            raise ValueError("SGLangEngine needs at least one engine URL")
        self.router_url = router_url.rstrip("/")
        self.engine_urls = [u.rstrip("/") for u in engine_urls]
        self.tp_size = tp_size
        self.max_inflight = max_inflight
        self.bucket_bytes = bucket_bytes
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._weight_version = 0
        self.routes_shape = routes_shape  # MoE (layers, top-k): the shape of each token's routed experts
        self.version = version  # the servers' SGLang release: some request bodies differ between releases
        self._adapters: set[str] = set()  # LoRA adapters this client loaded (unloaded before a reload)

    @property
    def weight_version(self) -> int:
        return self._weight_version

    # ---------------------------------------------------------------------------------------- generation
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, on_output: OnOutput | None = None
    ) -> list[list[GenerateOutput]]:
        """For each prompt (token ids), `params.n` responses; prompts are sent concurrently through the router, and
        `on_output` hears of each prompt's responses as its reply arrives."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate() needs at least one prompt, each with at least one token")
        return asyncio.run(self._generate(prompts, params, on_output))

    async def _generate(
        self, prompts: list[list[int]], params: SamplingParams, on_output: OnOutput | None
    ) -> list[list[GenerateOutput]]:
        limit = asyncio.Semaphore(self.max_inflight)
        connector = aiohttp.TCPConnector(limit=self.max_inflight)
        async with aiohttp.ClientSession(timeout=self.timeout, connector=connector) as session:

            async def one(i: int, prompt: list[int]) -> list[GenerateOutput]:
                async with limit:
                    reply = await _post(session, self.router_url, "/generate", protocol.generate_body(prompt, params))
                shape = self.routes_shape if params.return_routed_experts else None
                if params.return_routed_experts and shape is None:
                    raise ValueError("return_routed_experts needs the engine's routes_shape (MoE layers, top-k)")
                responses = protocol.parse_generate_reply(reply, params.n, len(prompt), shape)
                if on_output is not None:
                    on_output(i, responses)
                return responses

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    # ------------------------------------------------------------------------------------ weight updates
    def begin_weight_update(self) -> None:
        self._broadcast("/begin_weight_update", {})

    def update_weights_from_tensor(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Send HF-named tensors to every engine, `bucket_bytes` at a time; only legal inside begin/end."""
        for bucket in protocol.buckets(named_tensors, self.bucket_bytes):
            body = protocol.update_tensor_body(
                protocol.serialize_named_tensors(bucket), self.tp_size, self._weight_version + 1
            )
            self._broadcast("/update_weights_from_tensor", body)

    def end_weight_update(self) -> None:
        self._broadcast("/end_weight_update", {})
        self._weight_version += 1

    def flush_cache(self) -> None:
        self._broadcast("/flush_cache", {})

    def load_lora_adapter(self, name: str, named_tensors: list[tuple[str, torch.Tensor]], config: dict) -> None:
        """Serve LoRA adapter `name` on every engine (servers started with --enable-lora): an adapter loaded under
        that name before is unloaded first (SGLang refuses a name twice), then the new matrices are loaded from
        memory (/load_lora_adapter_from_tensors). Requests naming it generate with it. A new weight version."""
        if name in self._adapters:
            self._broadcast("/unload_lora_adapter", {"lora_name": name})
            self._adapters.discard(name)
        body = protocol.lora_tensors_body(name, config, named_tensors, self.tp_size, self.version)
        self._broadcast("/load_lora_adapter_from_tensors", body)
        self._adapters.add(name)
        self._weight_version += 1

    def init_weights_update_group(
        self,
        master_address: str,
        master_port: int,
        world_size: int,
        *,
        group_name: str = "weight_update_group",
        backend: str = "nccl",
    ) -> None:
        """Join every engine to the trainer's broadcast group (disaggregated sync). Rank 0 is the trainer;
        engine i's TP ranks are 1 + i*tp_size onwards. Blocks until the trainer joins too, so the trainer
        side must run concurrently (another thread or process)."""
        bodies = [
            {
                "master_address": master_address,
                "master_port": master_port,
                "rank_offset": 1 + i * self.tp_size,
                "world_size": world_size,
                "group_name": group_name,
                "backend": backend,
            }
            for i in range(len(self.engine_urls))
        ]
        asyncio.run(self._post_each("/init_weights_update_group", bodies))

    def update_weights_from_distributed(
        self,
        names: list[str],
        dtypes: list[torch.dtype],
        shapes: list[list[int]],
        *,
        group_name: str = "weight_update_group",
    ) -> None:
        """Tell every engine to receive these tensors from the trainer's broadcast (inside begin/end); blocks
        until the trainer has broadcast them, so the trainer side must run concurrently."""
        body = {
            "names": names,
            "dtypes": [str(d).removeprefix("torch.") for d in dtypes],
            "shapes": shapes,
            "group_name": group_name,
            "flush_cache": False,
            "weight_version": str(self._weight_version + 1),
        }
        self._broadcast("/update_weights_from_distributed", body)

    def destroy_weights_update_group(self, group_name: str = "weight_update_group") -> None:
        self._broadcast("/destroy_weights_update_group", {"group_name": group_name})

    # ------------------------------------------------------------------------------ memory and control
    def release_memory_occupation(self, tags: Sequence[str] = protocol.MEMORY_TAGS) -> None:
        """Free GPU memory on every engine (needs enable_memory_saver); tags: weights, kv_cache, cuda_graph."""
        self._broadcast("/release_memory_occupation", {"tags": _tags(tags)})

    def resume_memory_occupation(self, tags: Sequence[str] = protocol.MEMORY_TAGS) -> None:
        self._broadcast("/resume_memory_occupation", {"tags": _tags(tags)})

    def abort(self) -> None:
        """Abort every request in flight on every engine; their replies finish with reason "abort"."""
        self._broadcast("/abort_request", {"abort_all": True})

    def sampling_state(self) -> None:
        """SGLang samples in the server, whose RNG state is not exposed: a resumed run draws afresh there."""
        return None

    def load_sampling_state(self, state: bytes | None) -> None:
        """Nothing to restore (see `sampling_state`)."""

    def pause_generation(self, mode: str = "abort") -> None:
        """abort: end running requests; retract: requeue them (KV recomputed); in_place: freeze them as they are."""
        if mode not in protocol.PAUSE_MODES:
            raise ValueError(f"pause mode {mode!r}; expected one of {protocol.PAUSE_MODES}")
        self._broadcast("/pause_generation", {"mode": mode})

    def continue_generation(self) -> None:
        self._broadcast("/continue_generation", {})

    # ---------------------------------------------------------------------------------------- plumbing
    def _broadcast(self, path: str, body: dict[str, Any]) -> None:
        asyncio.run(self._post_each(path, [body] * len(self.engine_urls)))

    async def _post_each(self, path: str, bodies: list[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            await asyncio.gather(*(_post(session, u, path, b) for u, b in zip(self.engine_urls, bodies, strict=True)))


def _tags(tags: Sequence[str]) -> list[str]:
    unknown = set(tags) - set(protocol.MEMORY_TAGS)
    if unknown:
        raise ValueError(f"unknown memory tags {sorted(unknown)}; expected some of {protocol.MEMORY_TAGS}")
    return list(tags)


async def _post(session: aiohttp.ClientSession, base: str, path: str, body: dict[str, Any]) -> Any:
    """POST JSON; raise SGLangError on an HTTP error or a {"success": false} answer; return the parsed reply.

    orjson both ways: the standard library's json was a third of the rollout manager's time at 8,192 samples
    (bench/rollout_manager.py --profile)."""
    async with session.post(base + path, data=orjson.dumps(body), headers=_JSON) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise SGLangError(f"POST {base}{path}: HTTP {resp.status}: {raw[:500].decode(errors='replace')}")
        if resp.content_type != "application/json":
            return raw.decode()  # e.g. /flush_cache and /abort_request answer plain text or nothing
        reply = orjson.loads(raw)
    if isinstance(reply, dict) and reply.get("success") is False:
        raise SGLangError(f"POST {base}{path}: {reply.get('message', reply)}")
    return reply
