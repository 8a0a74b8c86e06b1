"""The real sglang-router (0.3.2, a subprocess) in front of two fake SGLang workers: registration through
POST /workers, generation through the router reaching both workers, control calls bypassing it; routers on ports
the OS picks, their Prometheus port included (its fixed default, 29000, let a second router on the machine die)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import torch

from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.sglang.client import SGLangEngine
from rlpipe.rollout.sglang.router import SGLangRouter
from tests.fakes.fake_sglang import FakeSGLang


def test_router_spreads_generation_over_both_workers(ckpts: tuple[Path, Path], tmp_path: Path) -> None:
    fakes = [FakeSGLang(ckpts[0]).start() for _ in range(2)]
    router = SGLangRouter(tmp_path / "router.log", policy="round_robin")
    try:
        router.start()
        for f in fakes:
            router.add_worker(f.url)
        assert sorted(w["url"] for w in router.workers()) == sorted(f.url for f in fakes)

        engine = SGLangEngine(router.url, [f.url for f in fakes], max_inflight=4)
        out = engine.generate([[1, 5, 6, 7]] * 8, SamplingParams(max_new_tokens=3, temperature=0.0, n=2))
        assert len(out) == 8 and all(len(g) == 2 for g in out)
        assert len({tuple(o.output_ids) for g in out for o in g}) == 1  # same greedy answer from either worker
        served = [f.paths().count("/generate") for f in fakes]
        assert sum(served) == 8 and min(served) > 0

        engine.begin_weight_update()
        engine.update_weights_from_tensor([("model.norm.weight", torch.zeros(64))])
        engine.end_weight_update()
        for f in fakes:  # the router does not forward control calls: each worker got its own
            assert f.paths()[-3:] == ["/begin_weight_update", "/update_weights_from_tensor", "/end_weight_update"]
    finally:
        router.stop()
        for f in fakes:
            f.stop()
    assert router.process.proc.poll() is not None


def test_two_routers_run_side_by_side_each_on_its_own_free_ports(tmp_path: Path) -> None:
    routers: list[SGLangRouter] = []
    try:
        for i in range(2):  # the second picks its ports while the first holds its own
            routers.append(SGLangRouter(tmp_path / f"router{i}.log").start())
        assert len({port for r in routers for port in (r.port, r.prometheus_port)}) == 4
        for router in routers:
            assert router.process.is_healthy()
            assert "--prometheus-port" in router.process.command
            with urllib.request.urlopen(f"http://127.0.0.1:{router.prometheus_port}/metrics", timeout=30) as resp:
                assert resp.status == 200  # the metrics exporter listens where it was told
    finally:
        for router in routers:
            router.stop()
