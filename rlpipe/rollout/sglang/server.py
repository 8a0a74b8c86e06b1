"""Launching SGLang servers from the resolved config: the engine layout, the command line, the process.

One engine per `topology.num_engines`, each `sglang.rollout_num_gpus_per_engine` GPUs wide (its tp_size). On a
single node the trainer holds GPUs [0, actor_gpus); colocated engines share those, disaggregated engines take
the GPUs after them. On Ray each server process is started on its own node (rlpipe.cluster.engine_hosts), seeing
only its GPUs; an engine larger than a node runs one process per node (`--nnodes/--node-rank/--dist-init-addr`).
Each engine's HTTP port is a free one the OS gives when its slots are laid out, never a fixed one another job on
the machine may hold.

Command line: `python -m sglang.launch_server` with the fields rlpipe owns, then every `sglang.extra` key
verbatim as `--key-with-dashes value` (True: a bare flag; False/None: left out, i.e. SGLang's default; a list:
several values; a dict: JSON). Under colocate / offload_rollout `--enable-memory-saver` is added, which SGLang
needs before release_memory_occupation / resume_memory_occupation work.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpipe.config.consistency import SGLANG_QUANTIZATION
from rlpipe.config.lora import projections
from rlpipe.config.resolve import Resolved
from rlpipe.config.schema import RunConfig
from rlpipe.rollout.sglang.process import ManagedProcess, free_ports


@dataclass(frozen=True)
class EngineSlot:
    """Where one engine's server process runs: its index, first GPU and HTTP address; for an engine spanning nodes,
    this process's node rank of `nnodes` and node rank 0's `dist_init_addr` (host:port)."""

    index: int
    base_gpu_id: int
    host: str
    port: int
    nnodes: int = 1
    node_rank: int = 0
    dist_init_addr: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def engine_slots(
    resolved: Resolved, *, host: str = "127.0.0.1", ports: Sequence[int] | None = None
) -> list[EngineSlot]:
    """One slot per engine of the resolved topology on this one node (module docstring), each on its own port:
    `ports` in engine order, or by default distinct free ones from the OS (`free_ports`)."""
    cfg, topo = resolved.cfg, resolved.topology
    per_engine = cfg.sglang.rollout_num_gpus_per_engine
    first_gpu = 0 if cfg.cluster.colocate else topo.actor_gpus
    ports = free_ports(topo.num_engines, host) if ports is None else list(ports)
    if len(ports) != topo.num_engines or len(set(ports)) != len(ports):
        raise ValueError(f"engine_slots: need {topo.num_engines} distinct ports, one per engine; got {ports}")
    return [EngineSlot(i, first_gpu + i * per_engine, host, port) for i, port in enumerate(ports)]


def server_command(cfg: RunConfig, slot: EngineSlot, *, python: str = sys.executable) -> list[str]:
    """The `sglang.launch_server` argv for one engine of the resolved config."""
    sg = cfg.sglang
    argv = [python, "-m", "sglang.launch_server", "--model-path", str(cfg.ckpt.hf_checkpoint)]
    argv += ["--host", slot.host, "--port", str(slot.port)]
    argv += ["--tp-size", str(sg.rollout_num_gpus_per_engine), "--base-gpu-id", str(slot.base_gpu_id)]
    if slot.nnodes > 1:
        argv += ["--nnodes", str(slot.nnodes), "--node-rank", str(slot.node_rank)]
        argv += ["--dist-init-addr", str(slot.dist_init_addr)]
    if sg.mem_fraction_static is not None:
        argv += ["--mem-fraction-static", str(sg.mem_fraction_static)]
    if sg.context_length is not None:
        argv += ["--context-length", str(sg.context_length)]
    argv += ["--log-level", sg.log_level]
    if cfg.cluster.colocate or cfg.cluster.offload_rollout:
        argv.append("--enable-memory-saver")
    if sg.rollout_quantization is not None:
        argv += ["--quantization", SGLANG_QUANTIZATION[sg.rollout_quantization]]
    if cfg.algo.use_rollout_routing_replay:  # each response's experts, per layer, for the trainer to replay
        argv.append("--enable-return-routed-experts")
    if cfg.lora_adapter_sync:  # the trainer's adapter is loaded after each step (as Miles)
        targets = projections(cfg.lora.target_modules, cfg.lora.exclude_modules)
        argv += ["--enable-lora", "--max-lora-rank", str(cfg.lora.rank), "--max-loras-per-batch", "1"]
        argv += ["--lora-target-modules", *targets]
    for key, value in sg.extra.items():
        argv += extra_flag(key, value)
    return argv


def extra_flag(key: str, value: Any) -> list[str]:
    """One `sglang.extra` entry as launch_server arguments."""
    flag = "--" + key.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, list | tuple):
        return [flag, *(str(v) for v in value)]
    if isinstance(value, dict):
        return [flag, json.dumps(value)]
    return [flag, str(value)]


class SGLangServer:
    """One SGLang server process: start, wait for /health (errors carry the log tail), stop."""

    def __init__(self, command: list[str], url: str, log_path: str | Path) -> None:
        self.url = url
        self.process = ManagedProcess(command, url + "/health", log_path)

    @classmethod
    def from_config(cls, resolved: Resolved, slot: EngineSlot, log_dir: str | Path) -> SGLangServer:
        return cls(server_command(resolved.cfg, slot), slot.url, Path(log_dir) / f"sglang_engine_{slot.index}.log")

    def start(self, timeout_s: float = 900.0) -> SGLangServer:
        """Launch and block until healthy (a large model's load and CUDA-graph capture take minutes)."""
        self.process.start_healthy(timeout_s)
        return self

    def stop(self) -> None:
        self.process.stop()
