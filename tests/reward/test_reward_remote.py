"""The `remote` reward against a real aiohttp server on 127.0.0.1 (ephemeral port), and against a closed port."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web

from rlpipe.data.sample import Sample
from rlpipe.reward import RewardContext, RewardError, score_samples


class RewardServer:
    """A small reward service: /reward grades response == label; other routes misbehave on purpose."""

    def __init__(self, failures_before_success: int = 0) -> None:
        self.calls: Counter[str] = Counter()
        self.payloads: list[dict[str, Any]] = []
        self.failures_before_success = failures_before_success
        self.never = asyncio.Event()  # /hang waits on it forever
        app = web.Application()
        app.router.add_post("/reward", self.reward)
        app.router.add_post("/bare", self.bare)
        app.router.add_post("/flaky", self.flaky)
        app.router.add_post("/wrong-shape", self.wrong_shape)
        app.router.add_post("/hang", self.hang)
        self.runner = web.AppRunner(app)
        self.port = 0

    async def __aenter__(self) -> RewardServer:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.never.set()
        await self.runner.cleanup()

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}{route}"

    async def reward(self, request: web.Request) -> web.Response:
        self.calls["reward"] += 1
        payload = await request.json()
        self.payloads.append(payload)
        return web.json_response({"reward": 1.0 if payload["response"] == payload["label"] else 0.0})

    async def bare(self, request: web.Request) -> web.Response:
        self.calls["bare"] += 1
        return web.Response(text="0.75", content_type="application/json")

    async def flaky(self, request: web.Request) -> web.Response:
        self.calls["flaky"] += 1
        if self.calls["flaky"] <= self.failures_before_success:
            return web.Response(status=500, text="warming up")
        return web.json_response({"reward": 0.5})

    async def wrong_shape(self, request: web.Request) -> web.Response:
        self.calls["wrong-shape"] += 1
        return web.json_response({"score": 1.0})

    async def hang(self, request: web.Request) -> web.Response:
        self.calls["hang"] += 1
        await self.never.wait()
        return web.json_response({"reward": 1.0})


def remote_ctx(url: str, timeout_s: float = 5.0, max_retries: int = 3) -> RewardContext:
    return RewardContext(
        rm_type="remote",
        eos_token_id=1,
        special_token_ids=frozenset({1}),
        decode=lambda ids: "",
        rm_url=url,
        timeout_s=timeout_s,
        max_retries=max_retries,
        retry_backoff_s=0.01,
    )


def run_with_server(body: Callable[[RewardServer], Awaitable[Any]], failures_before_success: int = 0) -> Any:
    async def main() -> Any:
        async with RewardServer(failures_before_success) as server:
            return await body(server)

    return asyncio.run(main())


def test_scores_come_from_the_service_with_the_full_payload() -> None:
    batch = [
        Sample(prompt=[{"role": "user", "content": "2+2?"}], label="4", response_text="4", metadata={"src": "a"}),
        Sample(prompt="3+3?", label="6", response_text="5", metadata={"src": "b"}),
    ]

    async def body(server: RewardServer) -> tuple[list[float], list[dict[str, Any]]]:
        return await score_samples(batch, remote_ctx(server.url("/reward"))), server.payloads

    rewards, payloads = run_with_server(body)
    assert rewards == [1.0, 0.0]
    assert [s.reward for s in batch] == [1.0, 0.0]
    by_label = {p["label"]: p for p in payloads}
    assert by_label["4"] == {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "response": "4",
        "label": "4",
        "metadata": {"src": "a"},
    }
    assert by_label["6"]["response"] == "5"


def test_bare_number_reply() -> None:
    async def body(server: RewardServer) -> list[float]:
        return await score_samples([Sample(prompt="p")], remote_ctx(server.url("/bare")))

    assert run_with_server(body) == [0.75]


def test_transient_500_is_retried() -> None:
    async def body(server: RewardServer) -> tuple[list[float], int]:
        rewards = await score_samples([Sample(prompt="p")], remote_ctx(server.url("/flaky"), max_retries=3))
        return rewards, server.calls["flaky"]

    assert run_with_server(body, failures_before_success=2) == ([0.5], 3)


def test_persistent_500_exhausts_retries_with_the_last_failure() -> None:
    async def body(server: RewardServer) -> int:
        with pytest.raises(RewardError, match=r"failed 3 time\(s\).*last failure: HTTP 500: 'warming up'"):
            await score_samples([Sample(prompt="p")], remote_ctx(server.url("/flaky"), max_retries=2))
        return server.calls["flaky"]

    assert run_with_server(body, failures_before_success=100) == 3


def test_wrong_reply_shape_fails_without_retrying() -> None:
    async def body(server: RewardServer) -> int:
        with pytest.raises(RewardError, match=r'replied \{"score": 1.0\}; expected \{"reward"'):
            await score_samples([Sample(prompt="p")], remote_ctx(server.url("/wrong-shape")))
        return server.calls["wrong-shape"]

    assert run_with_server(body) == 1


def test_client_error_fails_without_retrying() -> None:
    async def body(server: RewardServer) -> None:
        with pytest.raises(RewardError, match="rejected the request: HTTP 404"):
            await score_samples([Sample(prompt="p")], remote_ctx(server.url("/no-such-route")))

    run_with_server(body)


def test_hanging_service_times_out_each_attempt() -> None:
    async def body(server: RewardServer) -> int:
        ctx = remote_ctx(server.url("/hang"), timeout_s=0.2, max_retries=1)
        with pytest.raises(
            RewardError,
            match=r"/hang failed 2 time\(s\) \(timeout 0.2 s each\); last failure: TimeoutError: no reply",
        ):
            await score_samples([Sample(prompt="p")], ctx)
        return server.calls["hang"]

    assert run_with_server(body) == 2


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses connections: bound but never listening, and held while in use, so no other process on
    a busy machine can take it in between (a port bound then closed could be listened on again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_service_down_gives_a_clear_error_without_waiting_out_the_timeout() -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/reward"
        # A timeout no loaded machine reaches: an attempt that ended by timeout would mean it waited, not refused.
        ctx = remote_ctx(url, timeout_s=30.0, max_retries=2)
        with pytest.raises(RewardError) as info:
            asyncio.run(score_samples([Sample(prompt="p")], ctx))
    message = str(info.value)
    assert url in message
    assert "failed 3 time(s)" in message
    # Refused connections fail fast: the attempts end refused (named as such), not by waiting out their timeout.
    assert "last failure: ClientConnectorError" in message
    assert "TimeoutError" not in message
