"""A fake SGLang HTTP server that speaks 0.5.23's protocol strictly and generates for real with an HFEngine.

Real HTTP (aiohttp.web on loopback), real outputs (an HFEngine over a tiny checkpoint), and the server's rules:
unknown `sampling_params` keys are a 400 with SGLang's message; weight updates outside begin/end answer
success=False; generating while weights or KV cache are released is an error; abort ends requests in flight with
finish_reason "abort"; pause holds new requests until continue. Control bodies with keys the real request struct
lacks are rejected too (stricter than SGLang, which ignores them) so a client typo fails a test instead of a job.
Every request is recorded (`requests`), every decoded weight bucket (`received_weights`) and every LoRA adapter
loaded (`received_adapters`), for assertions. With `max_lora_rank` (--enable-lora --max-lora-rank) adapters are
loaded from tensors and served to requests that name them (`lora_path`), each by its own engine over the current
weights with the adapter merged (HFEngine.load_lora_adapter).

In-process: `FakeSGLang(ckpt).start()` serves from a thread. As a subprocess it takes launch_server's flags:
`python -m tests.fakes.fake_sglang --model-path CKPT --port P [--host H] [other ServerArgs flags, recorded]`; given
CUDA_VISIBLE_DEVICES it also checks the GPUs it sees and joins its other node ranks (`_join_nodes`). The folder
tests/fakes/sglang_launcher puts it behind `python -m sglang.launch_server` for processes that launch SGLang themselves.
NCCL cannot run here: init_weights_update_group / update_weights_from_distributed are checked and recorded only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import pickle
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from aiohttp import web
from torch.distributed import TCPStore

from rlpipe.rollout.engine import GenerateOutput, SamplingParams
from rlpipe.rollout.hf_engine import HFEngine

# sglang/api/v1/api_types.py SamplingParams (unknown keys rejected)
SAMPLING_KEYS = frozenset(
    (
        *("max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p"),
        *("frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema"),
        *("regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens"),
        *("no_stop_trim", "stream_interval", "logit_bias", "sampling_seed", "custom_params", "beam_width"),
        *("watermark", "choice"),
    )
)
TOP_K_ALL = 1 << 30  # SGLang's "whole vocabulary" top_k
# sglang/srt/managers/io_struct.py request structs (BaseReq adds rid, http_worker_ipc)
_BASE = {"rid", "http_worker_ipc"}
CONTROL_KEYS: dict[str, set[str]] = {
    "/begin_weight_update": {"selector"},
    "/end_weight_update": set(),
    "/update_weights_from_tensor": {
        "serialized_named_tensors",
        "load_format",
        "flush_cache",
        "abort_all_requests",
        "weight_version",
        "selector",
        "torch_empty_cache",
    },
    "/init_weights_update_group": {
        "master_address",
        "master_port",
        "rank_offset",
        "world_size",
        "group_name",
        "backend",
    },
    "/update_weights_from_distributed": {
        "names",
        "dtypes",
        "shapes",
        "group_name",
        "flush_cache",
        "abort_all_requests",
        "weight_version",
        "load_format",
        "selector",
        "torch_empty_cache",
    },
    "/destroy_weights_update_group": {"group_name"},
    "/release_memory_occupation": {"tags"},
    "/resume_memory_occupation": {"tags"},
    "/abort_request": {"abort_all", "finished_reason", "abort_message", "weight_versions"},
    "/pause_generation": {"mode"},
    "/continue_generation": {"torch_empty_cache"},
    # LoadLoRAAdapterFromTensorsReqInput / UnLoadLoRAAdapterReqInput (0.5.17+)
    "/load_lora_adapter_from_tensors": {
        "lora_name",
        "config_dict",
        "serialized_named_tensors",
        "pinned",
        "added_tokens_config",
        "load_format",
        "expected_checksums",
    },
    "/unload_lora_adapter": {"lora_name"},
}
MEMORY_TAGS = ("kv_cache", "weights", "cuda_graph")
SESSION_ERROR = "{} must run between begin_weight_update() and end_weight_update()"


class _WeightsUnpickler(pickle.Unpickler):
    """Loads a pickled [(name, tensor)] list and nothing else (SGLang's SafeUnpickler is an allowlist too)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda b: torch.load(io.BytesIO(b), weights_only=True)
        if (module, name) in {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"blocked global {module}.{name}")


def decode_named_tensors(payload: str) -> list[tuple[str, torch.Tensor]]:
    return _WeightsUnpickler(io.BytesIO(base64.b64decode(payload, validate=True))).load()


class FakeSGLang:
    """One fake SGLang server over an HF checkpoint; `start()` serves it on 127.0.0.1 from a thread."""

    def __init__(
        self,
        hf_checkpoint: str | Path,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        return_routed_experts: bool = False,
        max_lora_rank: int | None = None,
        canned_tokens: int | None = None,
        reply_latency_s: float = 0.0,
    ) -> None:
        # canned: every request answered with `canned_tokens` tokens at once (after reply_latency_s), no model run;
        # what a throughput benchmark of the client side needs (bench/rollout_manager.py)
        self.canned_tokens, self.reply_latency_s = canned_tokens, reply_latency_s
        self.engine = HFEngine(hf_checkpoint, seed=seed) if canned_tokens is None else None
        self.seed = seed
        self.max_lora_rank = max_lora_rank  # None: started without --enable-lora
        self.adapters: dict[str, HFEngine] = {}  # lora_name -> the engine serving it
        self.received_adapters: list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]] = []
        self.return_routed_experts = return_routed_experts  # --enable-return-routed-experts
        self.model_path = str(hf_checkpoint)
        self.host, self.port = host, port
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.generate_arrived = threading.Event()  # set by the first /generate, before a pause can hold it
        self.received_weights: list[list[tuple[str, torch.Tensor]]] = []
        self.weight_version = "default"
        self.session_open = False
        self.released: set[str] = set()
        self.pause_mode: str | None = None
        self._resumed: asyncio.Event | None = None  # set while not paused; made on the server's loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> FakeSGLang:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("fake SGLang server did not start")
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the ephemeral port the OS gave

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self._loop = self._thread = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2**31)
        app.on_startup.append(self._on_startup)
        for path in ("/health", "/health_generate"):
            app.router.add_get(path, self._health)
        for path in ("/server_info", "/get_server_info", "/model_info", "/get_model_info"):
            app.router.add_get(path, self._info)
        app.router.add_post("/generate", self._generate)
        app.router.add_route("*", "/flush_cache", self._flush_cache)
        for path in CONTROL_KEYS:
            app.router.add_post(path, self._control)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._resumed = asyncio.Event()  # bound to the serving loop, so made there
        self._resumed.set()

    # ------------------------------------------------------------------------------------- handlers
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _info(self, request: web.Request) -> web.Response:
        info = {"model_path": self.model_path, "tokenizer_path": self.model_path, "is_generation": True}
        return web.json_response({**info, "weight_version": self.weight_version})

    async def _flush_cache(self, request: web.Request) -> web.Response:
        self.requests.append(("/flush_cache", {}))
        return web.Response(text="Cache flushed.\n")

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("/generate", body))
        self.generate_arrived.set()
        sampling = body.get("sampling_params") or {}
        unknown = sorted(set(sampling) - SAMPLING_KEYS)
        if unknown:
            return _error(f"unknown field `{unknown[0]}`, expected one of {', '.join(sorted(SAMPLING_KEYS))}")
        ids = body.get("input_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
            return _error("the fake serves one prompt as input_ids (a non-empty list of token ids)")
        if self.released & {"weights", "kv_cache"}:
            return _error(f"memory released ({sorted(self.released)}); call resume_memory_occupation first")
        await self._resumed.wait()  # paused: requests queue until continue_generation
        top_k = sampling.get("top_k", TOP_K_ALL)
        params = SamplingParams(
            max_new_tokens=sampling.get("max_new_tokens", 128),
            temperature=sampling.get("temperature", 1.0),
            top_p=sampling.get("top_p", 1.0),
            top_k=-1 if top_k >= TOP_K_ALL else top_k,
            n=sampling.get("n", 1),
            stop_token_ids=tuple(sampling.get("stop_token_ids") or ()),
            seed=sampling.get("sampling_seed"),
            # SGLang captures routes only when the server enables it, and returns them only when asked
            return_routed_experts=self.return_routed_experts and bool(body.get("return_routed_experts")),
        )
        lora = body.get("lora_path")
        if lora is not None and lora not in self.adapters:
            return _error(f"LoRA adapter {lora!r} is not loaded; loaded: {sorted(self.adapters)}")
        engine = self.adapters[lora] if lora is not None else self.engine
        if self.canned_tokens is not None:
            outputs = await self._canned(ids, params)
        else:
            try:  # HFEngine decodes synchronously: off the event loop, so abort/pause requests still get through
                (outputs,) = await asyncio.get_running_loop().run_in_executor(None, engine.generate, [ids], params)
            except (RuntimeError, ValueError) as exc:
                return _error(str(exc))
        items = [self._reply(o, len(ids), body.get("return_logprob", False)) for o in outputs]
        return web.json_response(items[0] if params.n == 1 else items)

    async def _canned(self, ids: list[int], params: SamplingParams) -> list[GenerateOutput]:
        """The canned answer: the prompt's tokens repeated up to the budget (or `canned_tokens`), "length" when the
        budget cut it, else "stop" on its last token."""
        if self.reply_latency_s:
            await asyncio.sleep(self.reply_latency_s)
        count = min(self.canned_tokens or 1, params.max_new_tokens)
        reason = "length" if count == params.max_new_tokens else "stop"
        out = [ids[k % len(ids)] for k in range(count)]
        return [GenerateOutput(out, "", [-1.0] * count, reason) for _ in range(params.n)]

    def _reply(self, out: GenerateOutput, prompt_len: int, logprobs: bool) -> dict[str, Any]:
        reason: dict[str, Any] = {"type": out.finish_reason}
        if out.finish_reason == "stop":
            reason["matched"] = out.output_ids[-1]
        elif out.finish_reason == "length":
            reason["length"] = len(out.output_ids)
        else:
            reason["message"] = "Abort before prefill" if not out.output_ids else "Abort in waiting queue"
        meta: dict[str, Any] = {
            "finish_reason": reason,
            "prompt_tokens": prompt_len,
            "completion_tokens": len(out.output_ids),
            "weight_version": self.weight_version,
        }
        if logprobs:
            meta["output_token_logprobs"] = [
                [lp, tok, None] for lp, tok in zip(out.output_log_probs, out.output_ids, strict=True)
            ]
        if out.routed_experts is not None:
            # SGLang's wire form: base64 of the int32 array's bytes ([prompt + output - 1, layers, k], row-major)
            meta["routed_experts"] = base64.b64encode(out.routed_experts.astype("<i4").tobytes()).decode("ascii")
        return {"text": out.text, "output_ids": out.output_ids, "meta_info": meta}

    async def _control(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.json() if request.can_read_body else {}
        self.requests.append((path, body))
        unknown = sorted(set(body) - CONTROL_KEYS[path] - _BASE)
        if unknown:
            return _error(f"{path}: unknown keys {unknown}")
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, self._apply, path, body)
        except (RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            return web.json_response({"success": False, "message": str(exc)}, status=400)
        if result is not None:
            return web.json_response({"success": False, "message": result}, status=400)
        if path in ("/pause_generation", "/continue_generation"):
            self._set_paused(body.get("mode", "abort") if path == "/pause_generation" else None)
            return web.json_response({"message": "ok", "status": "ok"})
        return web.json_response({"success": True, "message": "Success"})

    def _set_paused(self, mode: str | None) -> None:
        self.pause_mode = mode
        if mode is None:
            self._resumed.set()
        else:
            self._resumed.clear()

    def _apply(self, path: str, body: dict[str, Any]) -> str | None:
        """Apply one control request to the state; a string is a success=False message."""
        engine = self.engine
        if path == "/begin_weight_update":
            if self.session_open:
                return "a weight-update session is already open; call end_weight_update() first"
            engine.begin_weight_update()
            self.session_open = True
        elif path == "/end_weight_update":
            if not self.session_open:
                return "no weight-update session is open; call begin_weight_update() first"
            engine.end_weight_update()
            self.session_open = False
        elif path == "/update_weights_from_tensor":
            if not self.session_open:
                return SESSION_ERROR.format("update_weights_from_tensor")
            payloads = body["serialized_named_tensors"]
            named = decode_named_tensors(payloads[0])  # TP rank 0's entry, as rank 0 would read it
            self.received_weights.append(named)
            engine.update_weights_from_tensor(named)
            if body.get("weight_version") is not None:
                self.weight_version = body["weight_version"]
        elif path == "/update_weights_from_distributed":
            if not self.session_open:
                return SESSION_ERROR.format("update_weights_from_distributed")
            if not len(body["names"]) == len(body["dtypes"]) == len(body["shapes"]):
                return "names, dtypes and shapes differ in length"
        elif path in ("/release_memory_occupation", "/resume_memory_occupation"):
            tags = body.get("tags") or list(MEMORY_TAGS)
            if set(tags) - set(MEMORY_TAGS):
                raise ValueError(f"unknown memory tags {tags}")
            if path == "/release_memory_occupation":
                self.released |= set(tags)
                if "weights" in tags:
                    engine.release_memory_occupation()
            else:
                self.released -= set(tags)
                if "weights" in tags:
                    engine.resume_memory_occupation()
        elif path == "/abort_request":
            if body.get("abort_all"):
                engine.abort()
        elif path in ("/load_lora_adapter_from_tensors", "/unload_lora_adapter"):
            return self._lora(path, body)
        elif path == "/pause_generation":
            if body.get("mode", "abort") not in ("abort", "retract", "in_place"):
                raise ValueError(f"pause mode {body['mode']!r}")
            if body.get("mode", "abort") == "abort":
                engine.abort()
        return None

    def _lora(self, path: str, body: dict[str, Any]) -> str | None:
        """SGLang's LoRA rules: --enable-lora, a name loaded once, a rank within --max-lora-rank, A and B of each
        projection, names of a checkpoint (`model.layers.{i}...`, no peft `base_model.model.` prefix)."""
        if self.max_lora_rank is None:
            return "LoRA is not enabled; start the server with --enable-lora"
        name = body["lora_name"]
        if path == "/unload_lora_adapter":
            if self.adapters.pop(name, None) is None:
                return f"LoRA adapter {name!r} is not loaded"
            return None
        if name in self.adapters:
            return f"LoRA adapter {name!r} is already loaded; unload it first"
        config = body["config_dict"]
        missing = {"r", "lora_alpha", "target_modules"} - set(config)
        if missing:
            return f"config_dict lacks {sorted(missing)}"
        if config["r"] > self.max_lora_rank:
            return f"LoRA rank {config['r']} exceeds --max-lora-rank {self.max_lora_rank}"
        tensors = _WeightsUnpickler(io.BytesIO(base64.b64decode(body["serialized_named_tensors"][0]))).load()
        matrices = (".lora_A.weight", ".lora_B.weight")
        bad = [n for n in tensors if not n.startswith("model.layers.") or not n.endswith(matrices)]
        if bad:
            return f"unexpected adapter tensor names {bad[:3]}"
        served = HFEngine(self.model_path, seed=self.seed)
        served.model.load_state_dict(self.engine.model.state_dict())  # the base as it is now (after weight updates)
        served.load_lora_adapter(name, list(tensors.items()), config)
        self.adapters[name] = served
        self.received_adapters.append((name, tensors, config))
        return None


def _error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _join_nodes(args: argparse.Namespace) -> None:
    """SGLang's multi-node start as far as the launcher can tell: every node rank rendezvouses at `--dist-init-addr`
    (a TCP store node rank 0 hosts, as torch.distributed's tcp:// init does) before node rank 0 serves HTTP; the
    other node ranks never serve and run until stopped. Each node must see the GPUs its share of the tensor-parallel
    ranks takes from `--base-gpu-id` on (CUDA would fail on a missing device), and no more."""
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    per_node = args.tp_size // args.nnodes
    print(f"CUDA_VISIBLE_DEVICES={','.join(visible)} tp_size={args.tp_size} nnodes={args.nnodes} "
          f"node_rank={args.node_rank} dist_init_addr={args.dist_init_addr}", flush=True)  # fmt: skip
    if args.tp_size % args.nnodes or len(visible) != args.base_gpu_id + per_node:
        sys.exit(f"tp_size {args.tp_size} over {args.nnodes} node(s) from GPU {args.base_gpu_id} on: {visible}")
    if args.nnodes == 1:
        return
    host, port = args.dist_init_addr.rsplit(":", 1)
    store = TCPStore(host, int(port), args.nnodes, args.node_rank == 0, timedelta(seconds=600), wait_for_workers=True)
    store.set(f"node_rank_{args.node_rank}", str(os.getpid()))
    store.wait([f"node_rank_{r}" for r in range(args.nnodes)])
    print(f"all {args.nnodes} node ranks joined", flush=True)
    if args.node_rank != 0:
        signal.sigwait({signal.SIGTERM})


def main() -> None:
    """Serve like `python -m sglang.launch_server`: --model-path and --port used, the multi-node flags obeyed
    (`_join_nodes`), every other flag recorded."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)  # the launcher always passes a free one; no fixed default
    parser.add_argument("--tp-size", type=int, default=1)
    parser.add_argument("--base-gpu-id", type=int, default=0)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--dist-init-addr", default=None)
    parser.add_argument("--enable-return-routed-experts", action="store_true")
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--max-lora-rank", type=int, default=None)
    parser.add_argument("--canned-reply-tokens", type=int, default=None, help="answer at once, no model (benchmarks)")
    parser.add_argument("--reply-latency-s", type=float, default=0.0, help="with --canned-reply-tokens: delay each")
    args, rest = parser.parse_known_args()
    torch.set_num_threads(1)
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # launched for GPUs (on Ray): hold the launcher to them
        _join_nodes(args)
    fake = FakeSGLang(
        args.model_path, host=args.host, port=args.port, return_routed_experts=args.enable_return_routed_experts,
        max_lora_rank=args.max_lora_rank if args.enable_lora else None, canned_tokens=args.canned_reply_tokens,
        reply_latency_s=args.reply_latency_s,
    )  # fmt: skip
    print(f"fake sglang serving {args.model_path} on {fake.url}; other flags: {rest}", flush=True)
    web.run_app(fake.app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
