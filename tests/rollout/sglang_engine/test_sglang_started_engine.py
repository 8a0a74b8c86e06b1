"""`started_engine` for rollout.engine=sglang, with the fake SGLang server in place of `sglang.launch_server` and the
real sglang-router: it starts and generates while the ports it used to take (router 29000, which is also the router's
Prometheus default, and engines from 30000) are held by someone else, as on a shared machine."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlpipe.rollout import engines
from rlpipe.rollout.engine import SamplingParams
from rlpipe.rollout.sglang import server
from rlpipe.rollout.sglang.server import EngineSlot

OLD_FIXED_PORTS = (29000, 30000)


def _sglang_run(hf_checkpoint: Path) -> SimpleNamespace:
    """The parts of a resolved config `started_engine` reads: one SGLang engine on the GPU after the trainer's."""
    cfg = SimpleNamespace(
        ckpt=SimpleNamespace(hf_checkpoint=str(hf_checkpoint)),
        rollout=SimpleNamespace(engine="sglang"),
        sglang=SimpleNamespace(rollout_num_gpus_per_engine=1, version="0.5.23", server_concurrency=512),
        cluster=SimpleNamespace(colocate=False),
        algo=SimpleNamespace(use_rollout_routing_replay=False),
    )
    return SimpleNamespace(cfg=cfg, topology=SimpleNamespace(num_engines=1, actor_gpus=1))


@contextlib.contextmanager
def _held(ports: tuple[int, ...]) -> Iterator[None]:
    """Listen on each port that is free (one already taken is held by someone else: just as good)."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                pass
        yield


def test_started_engine_runs_while_the_old_fixed_ports_are_taken(
    ckpts: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[list[str]] = []

    def fake_command(cfg: object, slot: EngineSlot, *, python: str = sys.executable) -> list[str]:
        argv = [python, "-m", "tests.fakes.fake_sglang", "--model-path", str(ckpts[0])]
        launched.append([*argv, "--host", slot.host, "--port", str(slot.port)])
        return launched[-1]

    monkeypatch.setattr(server, "server_command", fake_command)
    with _held(OLD_FIXED_PORTS), engines.started_engine(_sglang_run(ckpts[0]), tmp_path) as engine:  # type: ignore[arg-type]
        ((out,),) = engine.generate([[1, 5, 6]], SamplingParams(max_new_tokens=2, temperature=0.0))
        assert out.finish_reason in ("stop", "length") and out.output_ids
    (command,) = launched
    engine_port = int(command[command.index("--port") + 1])
    router_log = (tmp_path / "router.log").read_text()
    assert engine_port not in OLD_FIXED_PORTS and "panicked" not in router_log.lower()
