"""Starting the configured rollout engine(s) and stopping them: the in-process HF engine, or SGLang servers
behind sglang-router (one node: engines on the GPUs after the trainer's, or on the same ones under colocate; on Ray
the servers are started on their own nodes beforehand and only their URLs come here).
Every port (each engine's, the router's, the router's metrics) is a free one the OS gives at launch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rlpipe.config import Resolved
from rlpipe.config.schema import RunConfig
from rlpipe.loading import loading
from rlpipe.rollout.engine import RolloutEngine


def routes_shape(cfg: RunConfig) -> tuple[int, int] | None:
    """(layers, top-k) of the routed experts SGLang returns per token, when routing replay asks for them."""
    if not cfg.algo.use_rollout_routing_replay:
        return None
    assert cfg.model.num_layers is not None and cfg.model.moe_router_topk is not None  # resolved for an MoE model
    return cfg.model.num_layers, cfg.model.moe_router_topk


@contextlib.contextmanager
def started_engine(run: Resolved, log_dir: Path, engine_urls: list[str] | None = None) -> Iterator[RolloutEngine]:
    """The engine for `rollout.engine`, stopped (router first, then the servers it started) when the block exits.
    SGLang: the router over `engine_urls` (servers already running, see rlpipe.cluster.engine_hosts), or over
    servers started here on this node's GPUs (`engine_slots`)."""
    cfg = run.cfg
    assert cfg.ckpt.hf_checkpoint is not None  # resolved
    if cfg.rollout.engine == "hf":
        from rlpipe.rollout.hf_engine import HFEngine

        with loading("the rollout engine's weights (ckpt.hf_checkpoint)", cfg.ckpt.hf_checkpoint):
            engine = HFEngine(cfg.ckpt.hf_checkpoint, seed=cfg.rollout.seed, device=run.topology.device)
        yield engine
        return
    from rlpipe.rollout.sglang.client import SGLangEngine
    from rlpipe.rollout.sglang.process import free_ports
    from rlpipe.rollout.sglang.router import SGLangRouter
    from rlpipe.rollout.sglang.server import SGLangServer, engine_slots

    # One call for every port, so none is handed out twice: (router HTTP, router metrics, engine 0, engine 1, ...).
    router_port, metrics_port, *engine_ports = free_ports(2 + (0 if engine_urls else run.topology.num_engines))
    slots = [] if engine_urls else engine_slots(run, ports=engine_ports)
    servers = [SGLangServer.from_config(run, slot, log_dir) for slot in slots]
    urls = engine_urls or [server.url for server in servers]
    router = SGLangRouter(log_dir / "router.log", port=router_port, prometheus_port=metrics_port)
    try:
        router.start()
        for server in servers:
            server.start()  # waits on /health; a failure names the server log's last lines
        for url in urls:
            router.add_worker(url)
        yield SGLangEngine(
            router.url, urls, tp_size=cfg.sglang.rollout_num_gpus_per_engine, routes_shape=routes_shape(cfg),
            version=cfg.sglang.version, max_inflight=cfg.sglang.server_concurrency * len(urls),
        )  # fmt: skip
    finally:
        router.stop()
        for server in servers:
            server.stop()
