"""Starting the configured rollout engine(s) and stopping them: the in-process HF engine, or SGLang servers
behind sglang-router (one node: engines on the GPUs after the trainer's, or on the same ones under colocate).
Every port (each engine's, the router's, the router's metrics) is a free one the OS gives at launch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rlpipe.config import Resolved
from rlpipe.loading import loading
from rlpipe.rollout.engine import RolloutEngine


@contextlib.contextmanager
def started_engine(run: Resolved, log_dir: Path, first_gpu: int | None = None) -> Iterator[RolloutEngine]:
    """The engine for `rollout.engine`, stopped (router first, then the servers) when the block exits; SGLang engines
    take this node's GPUs from `first_gpu` on (`engine_slots`)."""
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
    router_port, metrics_port, *engine_ports = free_ports(2 + run.topology.num_engines)
    slots = engine_slots(run, ports=engine_ports, first_gpu=first_gpu)
    servers = [SGLangServer.from_config(run, slot, log_dir) for slot in slots]
    router = SGLangRouter(log_dir / "router.log", port=router_port, prometheus_port=metrics_port)
    try:
        router.start()
        for server in servers:
            server.start()  # waits on /health; a failure names the server log's last lines
        for slot in slots:
            router.add_worker(slot.url)
        yield SGLangEngine(router.url, [s.url for s in slots], tp_size=cfg.sglang.rollout_num_gpus_per_engine)
    finally:
        router.stop()
        for server in servers:
            server.stop()
