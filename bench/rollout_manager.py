"""Rollout-manager throughput: 8,192-sample rollouts through the SGLang client and sglang-router, against the strict
fake SGLang server answering at once, so that what is measured is everything rlpipe adds on the host.

    python bench/rollout_manager.py                       # 1,024 prompts x 8 samples, 64-token replies, 3 rollouts
    python bench/rollout_manager.py --latency 0.5         # each reply after 0.5 s (an engine's decode time)
    python bench/rollout_manager.py --prompts 16 --samples 2 --rollouts 1

Processes: the fake server (tests/fakes/fake_sglang.py, --canned-reply-tokens: no model, the protocol checked as
strictly as ever) and sglang-router (the real one) in front of it; this process is the rollout manager
(`RolloutRole`: prompt data, request building, bounded concurrency, reply parsing, Sample assembly, detokenising,
rewards, grouping, the wave/filter/buffer logic of `collect_groups`).

Baseline, in the same process against the same router and server: the HTTP floor, a bare aiohttp loop that posts
the request bodies rlpipe sends (one per prompt, n samples each) at the same concurrency and only parses the JSON
replies. Reported: samples/s of each, their
ratio; the CPU seconds this process spent per rollout, all threads (samples per CPU second: what the manager could
sustain if the server and router had cores of their own; here all three share the machine), and this process's
RSS after every rollout (flat = nothing accumulates across rollouts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake server lives in tests/fakes

from rlpipe.config import load  # noqa: E402
from rlpipe.data.tiny_model import TinyModelSpec, build_tiny_checkpoint  # noqa: E402
from rlpipe.rollout.engine import SamplingParams  # noqa: E402
from rlpipe.rollout.role import RolloutRole  # noqa: E402
from rlpipe.rollout.sglang import protocol  # noqa: E402
from rlpipe.rollout.sglang.client import SGLangEngine  # noqa: E402
from rlpipe.rollout.sglang.process import ManagedProcess, free_ports  # noqa: E402
from rlpipe.rollout.sglang.router import SGLangRouter  # noqa: E402


def rss_mib() -> float:
    """This process's current resident set (Linux /proc), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def http_floor(url: str, bodies: list[dict], inflight: int) -> float:
    """Seconds for a bare client to post every body and parse every reply, `inflight` at a time."""
    limit = asyncio.Semaphore(inflight)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as session:

        async def one(body: dict) -> None:
            async with limit, session.post(url + "/generate", json=body) as resp:
                resp.raise_for_status()
                await resp.json()

        await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1024, help="rollout.batch_size")
    parser.add_argument("--samples", type=int, default=8, help="rollout.n_samples")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per canned reply (max_response_len)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the server waits before each reply")
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=512, help="requests open at once (sglang.server_concurrency)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--profile", action="store_true", help="print where the rollout manager's time goes")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rlpipe-bench-rollout-")).resolve()
    ckpt = build_tiny_checkpoint(work / "ckpt", TinyModelSpec(seed=0))
    data = work / "prompts.jsonl"
    data.write_text("".join(f'{{"prompt": "{i} + {i} =", "label": "{2 * i}"}}\n' for i in range(args.prompts * 4)))
    (port,) = free_ports(1)
    server_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tests.fakes.fake_sglang", "--model-path", str(ckpt), "--port", str(port)]
    command += ["--canned-reply-tokens", str(args.tokens), "--reply-latency-s", str(args.latency)]
    server = ManagedProcess(command, server_url + "/health", work / "server.log", env={"PYTHONPATH": str(ROOT)})
    router = SGLangRouter(work / "router.log", policy="round_robin")
    try:
        server.start()
        server.wait_healthy(120)
        router.start()
        router.add_worker(server_url)
        cfg = load(
            [
                "experiment=none",
                f"ckpt.hf_checkpoint={ckpt}",
                f"rollout.prompt_data={data}",
                "rollout.rm_type=exact_match",
                f"rollout.batch_size={args.prompts}",
                f"rollout.n_samples={args.samples}",
                f"rollout.max_response_len={args.tokens}",
                f"rollout.num_rollout={args.rollouts}",
                "cluster.accelerator=cpu",
                "model.max_position_embeddings=256",
            ]
        ).cfg
        engine = SGLangEngine(router.url, [server_url], max_inflight=args.inflight)
        role = RolloutRole(cfg, engine)
        try:
            n = args.prompts * args.samples
            # the requests rlpipe sends: one per prompt for its n samples (SGLang's parallel sampling)
            params = SamplingParams(max_new_tokens=args.tokens, n=args.samples)
            bodies = [protocol.generate_body(s.prompt_tokens, params) for s in role.dataset.rows_as_samples()]
            bodies = bodies[: args.prompts]
            asyncio.run(http_floor(router.url, bodies[:64], args.inflight))  # connections and caches warm
            floor = asyncio.run(http_floor(router.url, bodies, args.inflight))
            print(f"{n} samples per rollout ({args.prompts} prompts x {args.samples}), {args.tokens}-token replies, "
                  f"reply latency {args.latency:g} s, {args.inflight} requests in flight\n")  # fmt: skip
            print(f"HTTP floor (bare aiohttp, same bodies): {floor:.2f} s, {n / floor:.0f} samples/s\n")
            print(
                "| rollout | seconds | samples/s | vs HTTP floor | manager CPU s | samples / CPU s | reward | RSS MiB |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            profiler = cProfile.Profile() if args.profile else None
            for rollout_id in range(args.rollouts):
                start, cpu = time.perf_counter(), time.process_time()
                with profiler or contextlib.nullcontext():
                    rollout = role.generate(rollout_id)
                took, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert len(rollout.samples) == n
                print(f"| {rollout_id} | {took:.2f} | {n / took:.0f} | {floor / took:.2f}x | {cpu:.2f} | "
                      f"{n / cpu:.0f} | {rollout.metrics['reward_mean']:.2f} | {rss_mib():.0f} |")  # fmt: skip
            if profiler is not None:
                stats = pstats.Stats(profiler).sort_stats("tottime")
                stats.print_stats(25)
        finally:
            role.close()
    finally:
        router.stop()
        server.stop()


if __name__ == "__main__":
    main()
