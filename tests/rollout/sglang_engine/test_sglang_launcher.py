"""The SGLang launch command lines (golden) for a colocated and a disaggregated config, the engine layout (one
free port per engine, asked of the OS), and the server process lifecycle (the fake SGLang server started with the
same flags on the port its slot was given; a dying server's log tail)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from rlpipe.config import load
from rlpipe.rollout.sglang.process import ServerStartError, free_ports
from rlpipe.rollout.sglang.server import EngineSlot, SGLangServer, engine_slots, server_command


@pytest.fixture
def base(recipe: list[str]) -> list[str]:
    return [o for o in recipe if not o.startswith("cluster.accelerator=")] + [
        "rollout.engine=sglang",
        "cluster.accelerator=cuda",
        "cluster.backend=ray",  # several trainer ranks
    ]


def plan(overrides: list[str]):
    """The resolved config as planned for a GPU machine (this one has neither a GPU nor sglang installed)."""
    return load(overrides, check_paths=False)


def test_colocated_command(base: list[str]) -> None:
    resolved = plan(
        [*base, "cluster.colocate=true", "cluster.actor_num_gpus_per_node=4", "sglang.rollout_num_gpus_per_engine=2"]
    )
    slots = engine_slots(resolved, ports=[30000, 30010])
    assert slots == [EngineSlot(0, 0, "127.0.0.1", 30000), EngineSlot(1, 2, "127.0.0.1", 30010)]
    hf = resolved.cfg.ckpt.hf_checkpoint
    assert server_command(resolved.cfg, slots[1], python="python") == [
        *("python", "-m", "sglang.launch_server", "--model-path", hf, "--host", "127.0.0.1", "--port", "30010"),
        *("--tp-size", "2", "--base-gpu-id", "2", "--mem-fraction-static", "0.8", "--log-level", "warning"),
        "--enable-memory-saver",
        *("--cuda-graph-backend-prefill", "disabled"),
    ]


def test_disaggregated_command_passes_extra_verbatim(base: list[str]) -> None:
    resolved = plan(
        [
            *base,
            "cluster.actor_num_gpus_per_node=4",
            "cluster.rollout_num_gpus=4",
            "sglang.context_length=8192",
            "sglang.log_level=info",
            "+sglang.extra.enable_dp_attention=true",
            "+sglang.extra.dp_size=2",
            "+sglang.extra.skip_server_warmup=false",
            "+sglang.extra.cuda_graph_bs_decode=[1,2,4]",
        ]
    )
    slots = engine_slots(resolved, ports=[31000, 31010, 31020, 31030])
    assert [(s.base_gpu_id, s.port) for s in slots] == [(4, 31000), (5, 31010), (6, 31020), (7, 31030)]
    hf = resolved.cfg.ckpt.hf_checkpoint
    assert server_command(resolved.cfg, slots[3], python="python") == [
        *("python", "-m", "sglang.launch_server", "--model-path", hf, "--host", "127.0.0.1", "--port", "31030"),
        *("--tp-size", "1", "--base-gpu-id", "7", "--context-length", "8192", "--log-level", "info"),
        "--enable-dp-attention",
        *("--dp-size", "2"),
        *("--cuda-graph-bs-decode", "1", "2", "4"),
    ]


def test_a_process_of_an_engine_spanning_nodes_gets_sglangs_multi_node_flags(base: list[str]) -> None:
    resolved = plan([*base, "cluster.rollout_num_gpus=16", "sglang.rollout_num_gpus_per_engine=16"])
    slot = EngineSlot(0, 0, "10.0.0.7", 30000, nnodes=2, node_rank=1, dist_init_addr="10.0.0.6:41000")
    argv = server_command(resolved.cfg, slot, python="python")
    assert argv[argv.index("--tp-size") :][:4] == ["--tp-size", "16", "--base-gpu-id", "0"]
    assert argv[argv.index("--nnodes") :][:6] == [
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--dist-init-addr",
        "10.0.0.6:41000",
    ]
    assert "--nnodes" not in server_command(resolved.cfg, EngineSlot(0, 0, "10.0.0.7", 30000), python="python")


def test_engine_slots_take_distinct_free_ports_by_default(base: list[str]) -> None:
    resolved = plan([*base, "cluster.actor_num_gpus_per_node=4", "cluster.rollout_num_gpus=4"])
    slots = engine_slots(resolved)
    assert [(s.index, s.base_gpu_id, s.host) for s in slots] == [(i, 4 + i, "127.0.0.1") for i in range(4)]
    ports = [s.port for s in slots]
    assert len(set(ports)) == 4
    for port in ports:  # each free: a server can listen on it (as SGLang's does, with SO_REUSEADDR)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
    with pytest.raises(ValueError, match="need 4 distinct ports"):
        engine_slots(resolved, ports=[31000, 31000, 31001, 31002])


def test_free_ports_are_distinct_and_never_one_in_use() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        ports = free_ports(64)
        assert len(set(ports)) == 64 and held.getsockname()[1] not in ports


def test_server_starts_answers_health_and_stops(base: list[str], tmp_path: Path, ckpts) -> None:
    resolved = plan([*base, "cluster.rollout_num_gpus=1"])
    (slot,) = engine_slots(resolved)  # on a free port the OS gave
    command = server_command(resolved.cfg, slot)
    command[1:3] = ["-m", "tests.fakes.fake_sglang"]  # same flags, the fake in place of sglang.launch_server
    command[command.index("--model-path") + 1] = str(ckpts[0])  # a real checkpoint for the fake to load
    server = SGLangServer(command, slot.url, tmp_path / "engine.log").start(timeout_s=120)
    try:
        assert server.process.is_healthy()
        assert "--log-level" in server.process.log_path.read_text()  # the fake logs the flags it ignored
    finally:
        server.stop()
    assert server.process.proc.poll() is not None and not server.process.is_healthy()


def test_a_dying_server_reports_its_log_tail(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('CUDA error: out of memory', flush=True); raise SystemExit(3)"]
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*CUDA error: out of memory"):
        SGLangServer(command, "http://127.0.0.1:9", tmp_path / "engine.log").start(timeout_s=60)


def test_quantized_rollout_and_routing_replay_flags(base: list[str], tmp_path: Path) -> None:
    from tests.config.hf_folders import TINY_CONFIG, write_hf_folder

    moe = {**TINY_CONFIG, "model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2}
    moe |= {"moe_intermediate_size": 32, "norm_topk_prob": True}
    hf = write_hf_folder(tmp_path / "moe", moe)
    resolved = plan(
        [
            *(o for o in base if not o.startswith("ckpt.hf_checkpoint=")),
            f"ckpt.hf_checkpoint={hf}",
            "model=auto",
            "cluster.rollout_num_gpus=1",
            "sglang.rollout_quantization=fp8",
            "algo.use_tis=true",
            "algo.use_rollout_routing_replay=true",
        ]
    )
    argv = server_command(resolved.cfg, engine_slots(resolved, ports=[30000])[0], python="python")
    assert argv[argv.index("--quantization") :][:2] == ["--quantization", "fp8"]
    assert "--enable-return-routed-experts" in argv
    dense = plan([*base, "cluster.rollout_num_gpus=1"])
    plain = server_command(dense.cfg, engine_slots(dense, ports=[30000])[0], python="python")
    assert "--quantization" not in plain and "--enable-return-routed-experts" not in plain
